"""Worker pools: the workers of one policy backend, their health, and their load."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from backends.base import Backend
from backends.circuit import CircuitBreaker, CircuitBreakerConfig
from backends.discovery import Discovery
from backends.types import Health

log = logging.getLogger("switchyard.pool")


@dataclass(eq=False, slots=True)
class Worker:
    """One backend instance with what the gateway knows of it right now."""

    backend: Backend
    healthy: bool = False
    """False until the first health check passes, so readiness means something."""
    in_flight: int = 0
    """Requests this gateway process has open to the worker."""
    last_health: Health = field(default_factory=lambda: Health(ok=False, detail="not checked yet"))
    circuit: CircuitBreaker = field(default_factory=lambda: CircuitBreaker(CircuitBreakerConfig()))
    max_concurrent: int = 0
    """Upstream requests this process may have open to the worker at once; 0 = no cap."""
    on_release: Callable[[], None] | None = None
    """Called when a slot frees up (the pool wakes requests queued for one)."""

    @property
    def id(self) -> str:
        return self.backend.name

    @property
    def address(self) -> str:
        return self.backend.address

    @property
    def capacity_tokens(self) -> int:
        return self.last_health.capacity_tokens

    @property
    def load(self) -> int:
        # our own in-flight count reacts at once; the worker's queue covers other gateways
        return self.in_flight + self.last_health.queued

    @property
    def available(self) -> bool:
        """Healthy and its circuit lets requests through."""
        return self.healthy and self.circuit.available

    @property
    def has_slot(self) -> bool:
        return not self.max_concurrent or self.in_flight < self.max_concurrent

    def acquire(self) -> None:
        """One more request open to this worker (call ``release`` exactly once after)."""
        self.in_flight += 1
        self.circuit.on_attempt()

    def release(self) -> None:
        self.in_flight -= 1
        if self.on_release is not None:
            self.on_release()


class WorkerPool:
    """The workers of one ``backends.<name>`` entry, health-checked on an interval.

    Args:
        name: The policy's name for this backend.
        workers: One backend per worker URL (one for a provider API).
        health_interval_s: Seconds between checks of every worker.
        discovery: Where more workers come from (DNS, Kubernetes); with it the pool's members
            follow the source: a new worker joins once its first health check passes, a
            removed one leaves the selection at once and is closed when its requests finish.
        make_backend: Builds the backend of a discovered worker from its id and base URL.
        drain_timeout_s: How long a removed worker's open requests may run before it is closed.
    """

    def __init__(self, name: str, workers: Sequence[Backend], health_interval_s: float,
                 circuit: CircuitBreakerConfig | None = None, max_concurrent: int = 0,
                 queue_timeout_s: float = 1.0, discovery: Discovery | None = None,
                 make_backend: Callable[[str, str], Backend] | None = None,
                 drain_timeout_s: float = 600.0) -> None:
        self.name = name
        self.queue_timeout_s = queue_timeout_s
        """How long a request waits for a slot when every worker is at ``max_concurrent``."""
        self._circuit = circuit or CircuitBreakerConfig()
        self._max_concurrent = max_concurrent
        self.workers = [self._worker(backend) for backend in workers]
        self._static = frozenset(worker.address for worker in self.workers)
        self._interval = health_interval_s
        self._task: asyncio.Task[None] | None = None
        self._on_removed: list[Callable[[str], None]] = []
        self._freed = asyncio.Event()
        self._discovery = discovery
        self._make_backend = make_backend
        self._drain_timeout_s = drain_timeout_s
        self._discovery_task: asyncio.Task[None] | None = None
        self._draining: set[asyncio.Task[None]] = set()
        self.discovered = asyncio.Event()
        """Set once the discovery source gave its first set of workers (tests and readiness)."""

    def _worker(self, backend: Backend) -> Worker:
        return Worker(backend, circuit=CircuitBreaker(self._circuit), max_concurrent=self._max_concurrent,
                      on_release=self._slot_freed)

    def _slot_freed(self) -> None:
        self._freed.set()

    async def wait_for_slot(self, timeout_s: float) -> bool:
        """Wait until some worker releases a slot; False after ``timeout_s``."""
        self._freed.clear()
        try:
            await asyncio.wait_for(self._freed.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def on_worker_removed(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(worker_id)`` whenever a worker leaves the selection set."""
        self._on_removed.append(callback)

    def healthy_workers(self) -> list[Worker]:
        return [worker for worker in self.workers if worker.healthy]

    def available_workers(self) -> list[Worker]:
        """Healthy workers whose circuit is not open: the selection set."""
        return [worker for worker in self.workers if worker.available]

    async def check_health(self) -> None:
        """Probe every worker once, concurrently; log each change of state."""
        workers = list(self.workers)  # discovery may change the members while probes run
        results = await asyncio.gather(
            *(w.backend.health() for w in workers), return_exceptions=True
        )
        for worker, result in zip(workers, results, strict=True):
            health = result if isinstance(result, Health) else Health(ok=False, detail=repr(result))
            if health.ok != worker.healthy:
                level = logging.INFO if health.ok else logging.WARNING
                log.log(level, "worker %s is %s (%s)", worker.id,
                        "healthy" if health.ok else "unhealthy", health.detail)
            if worker.healthy and not health.ok:
                for callback in self._on_removed:
                    callback(worker.id)
            worker.healthy = health.ok
            worker.last_health = health

    def start(self) -> None:
        """Run health checks (and discovery) in the background until ``aclose``."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"health:{self.name}")
        if self._discovery is not None and self._discovery_task is None:
            self._discovery_task = asyncio.create_task(self._follow(self._discovery), name=f"discovery:{self.name}")

    async def _follow(self, discovery: Discovery) -> None:
        async for addresses in discovery.watch():
            try:
                await self.apply_members(addresses)
            except Exception:  # a bug in one update must not stop discovery for good
                log.exception("discovery update of pool %s failed", self.name)
            self.discovered.set()

    async def apply_members(self, addresses: frozenset[str]) -> None:
        """Make the discovered workers ``addresses`` (base URLs) the pool's, besides the listed ones.

        New workers are health-checked first and join the selection only if healthy (else the
        health loop admits them later); departed ones leave the selection now and are closed
        once their open requests (streams included) finish.
        """
        wanted = {address.rstrip("/") for address in addresses} | self._static
        current = {worker.address: worker for worker in self.workers}
        joining = [self._worker(self._new_backend(address)) for address in sorted(wanted - current.keys())]
        await asyncio.gather(*(self._check(worker) for worker in joining))
        leaving = [worker for address, worker in current.items() if address not in wanted]
        if joining or leaving:
            self.workers = [w for w in self.workers if w.address in wanted] + joining
            log.info("pool %s: workers joined %s, left %s", self.name,
                     [w.id for w in joining], [w.id for w in leaving])
        for worker in leaving:
            for callback in self._on_removed:
                callback(worker.id)
            task = asyncio.create_task(self._drain(worker), name=f"drain:{worker.id}")
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)

    def _new_backend(self, address: str) -> Backend:
        if self._make_backend is None:
            raise RuntimeError(f"pool {self.name} discovers workers but cannot build their backends")
        # the address names the worker, so every replica and every restart agree on its id
        return self._make_backend(f"{self.name}/{address.split('://', 1)[-1]}", address)

    async def _check(self, worker: Worker) -> None:
        try:
            health = await worker.backend.health()
        except Exception as exc:  # noqa: BLE001 - a probe that raised is a failed probe
            health = Health(ok=False, detail=repr(exc))
        worker.healthy, worker.last_health = health.ok, health

    async def _drain(self, worker: Worker) -> None:
        """Close a departed worker's backend once no request of this process uses it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._drain_timeout_s
        try:
            while worker.in_flight > 0 and loop.time() < deadline:
                await asyncio.sleep(0.1)
        finally:  # also when the pool closes first
            await worker.backend.aclose()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check_health()
            except Exception:  # a bug in one probe must not stop the loop for good
                log.exception("health check of pool %s failed", self.name)

    async def aclose(self) -> None:
        tasks = [task for task in (self._task, self._discovery_task, *self._draining) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = self._discovery_task = None
        for worker in self.workers:
            await worker.backend.aclose()

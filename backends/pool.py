"""Worker pools: the workers of one policy backend, their health, and their load."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from backends.base import Backend
from backends.circuit import CircuitBreaker, CircuitBreakerConfig
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
    """

    def __init__(self, name: str, workers: Sequence[Backend], health_interval_s: float,
                 circuit: CircuitBreakerConfig | None = None, max_concurrent: int = 0,
                 queue_timeout_s: float = 1.0) -> None:
        self.name = name
        self.queue_timeout_s = queue_timeout_s
        """How long a request waits for a slot when every worker is at ``max_concurrent``."""
        self.workers = [Worker(backend, circuit=CircuitBreaker(circuit or CircuitBreakerConfig()),
                               max_concurrent=max_concurrent, on_release=self._slot_freed)
                        for backend in workers]
        self._interval = health_interval_s
        self._task: asyncio.Task[None] | None = None
        self._on_removed: list[Callable[[str], None]] = []
        self._freed = asyncio.Event()

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
        results = await asyncio.gather(
            *(w.backend.health() for w in self.workers), return_exceptions=True
        )
        for worker, result in zip(self.workers, results, strict=True):
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
        """Run health checks in the background until ``aclose``."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"health:{self.name}")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check_health()
            except Exception:  # a bug in one probe must not stop the loop for good
                log.exception("health check of pool %s failed", self.name)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for worker in self.workers:
            await worker.backend.aclose()

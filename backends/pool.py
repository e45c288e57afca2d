"""Worker pools: the workers of one policy backend, their health, and their load."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from backends.base import Backend
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


class WorkerPool:
    """The workers of one ``backends.<name>`` entry, health-checked on an interval.

    Args:
        name: The policy's name for this backend.
        workers: One backend per worker URL (one for a provider API).
        health_interval_s: Seconds between checks of every worker.
    """

    def __init__(self, name: str, workers: Sequence[Backend], health_interval_s: float) -> None:
        self.name = name
        self.workers = [Worker(backend) for backend in workers]
        self._interval = health_interval_s
        self._task: asyncio.Task[None] | None = None
        self._on_removed: list[Callable[[str], None]] = []

    def on_worker_removed(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(worker_id)`` whenever a worker leaves the selection set."""
        self._on_removed.append(callback)

    def healthy_workers(self) -> list[Worker]:
        return [worker for worker in self.workers if worker.healthy]

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

"""Pick the deployment and worker that serve one request of a public model."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from backends.errors import OverloadedError, UpstreamUnavailableError
from backends.pool import Worker, WorkerPool
from router.base import RoutingRequest, Selection, SelectionPolicy


@dataclass(frozen=True, slots=True)
class Deployment:
    """A pool serving a public model under the name ``upstream_model``."""

    pool: WorkerPool
    upstream_model: str
    selector: SelectionPolicy


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """A public model: its deployments in order of preference."""

    name: str
    deployments: tuple[Deployment, ...]


@dataclass(frozen=True, slots=True)
class Choice:
    """Where one request goes, and why."""

    deployment: Deployment
    worker: Worker
    selection: Selection
    fallback: bool = False
    """Not the model's first deployment: the ones before it had no worker to offer."""


async def choose(route: ModelRoute, request: RoutingRequest, *, exclude: frozenset[str] = frozenset(),
                 queue_timeout_s: float = 0.0) -> Choice:
    """The first deployment with an available worker serves; its pool's policy picks it.

    ``exclude`` holds workers this request already failed on. Workers at their concurrency
    cap are skipped; if every available worker of every deployment is at its cap, wait up to
    ``queue_timeout_s`` for a slot, then raise ``OverloadedError`` (503 + Retry-After).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + queue_timeout_s
    while True:
        full: list[WorkerPool] = []
        for index, deployment in enumerate(route.deployments):
            candidates = [w for w in deployment.pool.available_workers() if w.id not in exclude]
            free = [w for w in candidates if w.has_slot]
            if free:
                selection = await deployment.selector.select(request, free)
                worker = selection.worker
                assert isinstance(worker, Worker)  # policies pick from the list they were given
                return Choice(deployment, worker, selection, fallback=index > 0)
            if candidates:
                full.append(deployment.pool)
        if not full:
            raise UpstreamUnavailableError(
                f"no healthy worker serves model {route.name!r} right now", headers={"retry-after": "1"})
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise OverloadedError(f"every worker serving {route.name!r} is at its concurrency limit",
                                  headers={"retry-after": "1"})
        # a short wait: a slot freed on another pool, or before we waited, is seen on the next pass
        await full[0].wait_for_slot(min(remaining, 0.05))

"""Pick the deployment and worker that serve one request of a public model."""

from __future__ import annotations

from dataclasses import dataclass

from backends.errors import UpstreamUnavailableError
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


async def choose(route: ModelRoute, request: RoutingRequest) -> Choice:
    """The first deployment with a healthy worker serves; its pool's policy picks the worker."""
    for deployment in route.deployments:
        healthy = deployment.pool.healthy_workers()
        if healthy:
            selection = await deployment.selector.select(request, healthy)
            worker = selection.worker
            assert isinstance(worker, Worker)  # policies pick from the list they were given
            return Choice(deployment, worker, selection)
    raise UpstreamUnavailableError(
        f"no healthy worker serves model {route.name!r} right now",
        headers={"retry-after": "1"},
    )

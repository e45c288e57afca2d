"""``/v1/models`` and the two probes: ``/healthz`` (alive) and ``/readyz`` (able to serve)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.state import Gateway

_STARTED = 1_700_000_000  # a fixed "created" stamp: models have no creation date here


@get("/v1/models")
async def list_models(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The public model names the calling key may use, in OpenAI's list shape."""
    gateway: Gateway = request.app.state.gateway
    runtime = gateway.runtime
    caller = runtime.keyring.authenticate(request.headers.get("authorization"))
    return {"object": "list", "data": [
        {"id": name, "object": "model", "created": _STARTED, "owned_by": "switchyard"}
        for name in [*runtime.models, *runtime.routes] if caller.may_use(name)
    ]}


@get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and its event loop answers."""
    return {"status": "ok"}


@get("/readyz")
async def readyz(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """Ready when a valid policy is loaded and every model has a healthy deployment."""
    gateway: Gateway = request.app.state.gateway
    if not gateway.has_runtime:
        return Response({"ready": False, "detail": gateway.load_error or "starting up"}, status_code=503)
    readiness = gateway.runtime.readiness()
    return Response({"ready": readiness.ready, "detail": readiness.detail},
                    status_code=200 if readiness.ready else 503)


@get("/metrics", sync_to_thread=False, media_type=CONTENT_TYPE_LATEST)
def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Prometheus metrics of this process."""
    gateway: Gateway = request.app.state.gateway
    return Response(generate_latest(gateway.telemetry.metrics.registry), media_type=CONTENT_TYPE_LATEST)

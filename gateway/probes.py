"""``/v1/models``, the two probes ``/healthz`` (alive) and ``/readyz`` (able to serve), and the
metrics: ``/metrics`` (operational) and ``/admin/metrics`` (per tenant, admin key)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.params import FromPath
from prometheus_client import CONTENT_TYPE_LATEST

from backends.errors import ModelNotFoundError
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


@get("/v1/models/{model_id:str}")
async def retrieve_model(request: Request[Any, Any, Any], model_id: FromPath[str]) -> dict[str, Any]:
    """One public model, in OpenAI's shape; OpenAI's 404 for a model the key may not use, so
    that a key learns nothing about models outside its grant."""
    gateway: Gateway = request.app.state.gateway
    runtime = gateway.runtime
    caller = runtime.keyring.authenticate(request.headers.get("authorization"))
    if (model_id not in runtime.models and model_id not in runtime.routes) or not caller.may_use(model_id):
        raise ModelNotFoundError(f"The model '{model_id}' does not exist or you do not have access to it.",
                                 param="model")
    return {"id": model_id, "object": "model", "created": _STARTED, "owned_by": "switchyard"}


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


@get("/metrics", media_type=CONTENT_TYPE_LATEST)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Operational Prometheus metrics of this process, without credentials (no tenant names,
    no spend: those are on ``/admin/metrics``). Rendered in a worker thread."""
    gateway: Gateway = request.app.state.gateway
    return Response(await gateway.telemetry.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@get("/admin/metrics", media_type=CONTENT_TYPE_LATEST)
async def admin_metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Per-tenant spend and usage in Prometheus format, for the admin key only (404 when the
    policy sets no admin key, like the rest of ``/admin``)."""
    gateway: Gateway = request.app.state.gateway
    runtime = gateway.runtime
    runtime.keyring.check_admin(request.headers.get("authorization"), runtime.policy.admin_key_sha256)
    return Response(await gateway.telemetry.metrics.render_tenants(), media_type=CONTENT_TYPE_LATEST)

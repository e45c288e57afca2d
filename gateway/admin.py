"""The admin API (admin key only; off when the policy sets none): usage, spend, the policy."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromQuery

from backends.errors import InvalidRequestError
from gateway.policy_manager import ActivePolicy, PolicyManager
from gateway.state import Gateway
from policies.scopes import key_scope, tenant_scope


@get("/admin/usage")
async def admin_usage(request: Request[Any, Any, Any], tenant: FromQuery[str], days: FromQuery[int] = 7,
                      key: FromQuery[str | None] = None) -> dict[str, Any]:
    """Usage and spend of a tenant (or one of its keys) by model and UTC day."""
    gateway: Gateway = request.app.state.gateway
    runtime = gateway.runtime
    runtime.keyring.check_admin(request.headers.get("authorization"), runtime.policy.admin_key_sha256)
    if tenant not in runtime.policy.tenants:
        raise InvalidRequestError(f"no tenant named {tenant!r}", param="tenant")
    if not 1 <= days <= 366:
        raise InvalidRequestError("days must be between 1 and 366", param="days")
    scope = key_scope(tenant, key) if key else tenant_scope(tenant)
    report = await runtime.accounting.ledger.report(scope, days)
    return {"scope": report.scope, "days": days, "total_tokens": report.total_tokens,
            "total_usd": round(report.total_usd, 6), "rows": [asdict(row) for row in report.rows]}


def _manager(request: Request[Any, Any, Any]) -> PolicyManager:
    gateway: Gateway = request.app.state.gateway
    runtime = gateway.runtime
    runtime.keyring.check_admin(request.headers.get("authorization"), runtime.policy.admin_key_sha256)
    manager: PolicyManager = request.app.state.policies
    return manager


def _describe(active: ActivePolicy | None) -> dict[str, Any]:
    if active is None:
        return {"version": None, "sha256": None}
    return {"version": active.version, "sha256": active.digest, "source": active.source,
            "applied_at": active.applied_at, "revision": active.revision}


@get("/admin/policy")
async def get_policy(request: Request[Any, Any, Any], format: FromQuery[str] = "json") -> Response[Any]:
    """The active policy's version, hash and source; ``?format=yaml`` returns its text."""
    manager = _manager(request)
    if format == "yaml":
        text = manager.active.text if manager.active else ""
        return Response(text, media_type="application/yaml")
    if format != "json":
        raise InvalidRequestError("format must be json or yaml", param="format")
    return Response(_describe(manager.active))


@post("/admin/policy", status_code=200)
async def put_policy(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Apply a new policy document (YAML or JSON body) on this replica and, with Redis, on
    every replica. An invalid policy is refused with the problems; the active one stays."""
    manager = _manager(request)
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError("the policy must be UTF-8 text (YAML or JSON)") from None
    changed = await manager.apply(text, "api")
    return {"applied": changed, **_describe(manager.active)}

"""The admin API (admin key only; off when the policy sets none): usage and spend."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from litestar import Request, get
from litestar.params import FromQuery

from backends.errors import InvalidRequestError
from gateway.state import Gateway


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
    scope = f"key:{tenant}:{key}" if key else f"tenant:{tenant}"
    report = await runtime.accounting.ledger.report(scope, days)
    return {"scope": report.scope, "days": days, "total_tokens": report.total_tokens,
            "total_usd": round(report.total_usd, 6), "rows": [asdict(row) for row in report.rows]}

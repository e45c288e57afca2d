"""The JSON the console's pages read, and the changes they make.

Read-only views are admin endpoints too (``/admin/workers``, ``/admin/routes``,
``/admin/usage/summary``, ``POST /admin/policy/check`` and ``/admin/policy/replay``: the admin
key), served again under ``/console/api/`` for a console session. Changes under
``/console/api/`` (canary commands, applying a policy) call what ``/admin/canaries/*`` and
``POST /admin/policy`` call, and need the session's CSRF token besides the cookie.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery

from backends.errors import InvalidRequestError, NotFoundError
from gateway.canary_admin import _reason
from gateway.console.preview import check, recorded_traffic, replay_estimate
from gateway.console.session import authorize
from gateway.console.views import routes_view, usage_view, workers_view
from gateway.policy_manager import PolicyManager
from gateway.state import Gateway
from policies.canary import CanaryController
from policies.loader import PolicyError

_ACTIONS = ("promote", "rollback", "pause", "resume")


def _gateway(request: Request[Any, Any, Any]) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def _manager(request: Request[Any, Any, Any]) -> PolicyManager:
    manager: PolicyManager = request.app.state.policies
    return manager


async def _text(request: Request[Any, Any, Any]) -> str:
    try:
        return (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError("the policy must be UTF-8 text (YAML or JSON)") from None


@get(["/admin/workers", "/console/api/workers"])
async def workers(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Every pool's workers: health, circuit state, in-flight and queued requests, the
    prefix-cache hit rate and cached tokens each answered, and failed attempts by code."""
    await authorize(request, change=False)
    gateway = _gateway(request)
    return workers_view(gateway.runtime, gateway.telemetry.metrics)


@get(["/admin/routes", "/console/api/routes"])
async def routes(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Every difficulty route: decisions by tier, score histogram, threshold, target share and
    the estimated cost saved against sending the cheap tier's requests to the strong model."""
    await authorize(request, change=False)
    gateway = _gateway(request)
    return routes_view(gateway.runtime, gateway.telemetry.metrics)


@get(["/admin/usage/summary", "/console/api/usage"])
async def usage_summary(request: Request[Any, Any, Any], days: FromQuery[int] = 14) -> dict[str, Any]:
    """Every tenant's spend and tokens by model and UTC day, and the top tenants today."""
    await authorize(request, change=False)
    if not 1 <= days <= 366:
        raise InvalidRequestError("days must be between 1 and 366", param="days")
    return await usage_view(_gateway(request).runtime, days)


@get("/console/api/policy")
async def console_policy(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The active policy (version, hash, source, text) and whether traffic is recorded."""
    await authorize(request, change=False)
    gateway, active = _gateway(request), _manager(request).active
    traffic = recorded_traffic(gateway.settings, gateway.runtime.policy)
    if active is None:
        return {"version": None, "sha256": None, "text": "", "replay": traffic is not None}
    return {"version": active.version, "sha256": active.digest, "source": active.source,
            "applied_at": active.applied_at, "text": active.text, "replay": traffic is not None}


@post(["/admin/policy/check", "/console/api/policy/check"], status_code=200)
async def policy_check(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Validate a policy (the body, YAML or JSON) without applying it: its problems by path,
    or its changes against the active policy."""
    await authorize(request, change=False)
    return check(await _text(request), _gateway(request).runtime.policy)


@post(["/admin/policy/replay", "/console/api/policy/replay"], status_code=200)
async def policy_replay(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """``switchyard replay`` of the active policy against the body's, on the recorded traffic."""
    await authorize(request, change=True)  # starts simulators and a gateway: not for a forged form
    gateway, manager = _gateway(request), _manager(request)
    text = await _text(request)
    result = check(text, gateway.runtime.policy)
    if not result["valid"]:
        return {"ran": False, "error": "the edited policy is not valid", "problems": result["problems"]}
    traffic = recorded_traffic(gateway.settings, gateway.runtime.policy)
    if traffic is None or manager.active is None:
        return {"ran": False, "error": "no recorded traffic: write the access log to a file "
                                       "(SWITCHYARD_ACCESS_LOG) with observability.capture_content on"}
    return await replay_estimate(manager.active.text, text, traffic)


@post("/console/api/policy", status_code=200)
async def console_apply(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """Apply the body as the new policy (``POST /admin/policy`` for a console session)."""
    await authorize(request, change=True)
    manager = _manager(request)
    try:
        changed = await manager.apply(await _text(request), "console")
    except PolicyError as exc:
        problems = [{"path": path, "message": message} for path, message in exc.problems]
        return Response({"applied": False, "problems": problems}, status_code=400)
    active = manager.active
    return Response({"applied": changed, "version": active.version if active else None,
                     "sha256": active.digest if active else None})


@get("/console/api/canaries")
async def console_canaries(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """``GET /admin/canaries`` for a console session."""
    await authorize(request, change=False)
    controller: CanaryController = request.app.state.canaries
    return controller.status()


@post("/console/api/canaries/{model:str}/{action:str}", status_code=200)
async def console_canary_command(request: Request[Any, Any, Any], model: FromPath[str],
                                 action: FromPath[str]) -> dict[str, Any]:
    """Promote, roll back, pause or resume a canary (``POST /admin/canaries/{model}/{action}``)."""
    await authorize(request, change=True)
    if action not in _ACTIONS:
        raise NotFoundError("Unknown route.")
    controller: CanaryController = request.app.state.canaries
    reason = await _reason(request) or "from the console"
    command = {"promote": controller.promote, "rollback": controller.rollback,
               "pause": controller.pause, "resume": controller.resume}[action]
    return await command(model, reason)


API_HANDLERS = (workers, routes, usage_summary, console_policy, policy_check, policy_replay, console_apply,
                console_canaries, console_canary_command)
"""The console's JSON handlers, to register in ``create_app``."""

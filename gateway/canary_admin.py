"""The canary admin API (admin key only): every rollout's state, and the operator's commands.

``GET /admin/canaries`` lists the active policy's canaries; ``POST /admin/canaries/{model}/
promote|rollback|pause|resume`` changes one on every replica (through the shared state when
the gateway has Redis), with an optional JSON body ``{"reason": "..."}`` kept in the
rollout's history. The process's ``CanaryController`` lives at ``app.state.canaries``.
"""

from __future__ import annotations

import json
from typing import Any

from litestar import Request, get, post
from litestar.params import FromPath

from backends.errors import InvalidRequestError
from gateway.state import Gateway
from policies.canary import CanaryController


def _controller(request: Request[Any, Any, Any]) -> CanaryController:
    gateway: Gateway = request.app.state.gateway
    runtime = gateway.runtime
    runtime.keyring.check_admin(request.headers.get("authorization"), runtime.policy.admin_key_sha256)
    controller: CanaryController = request.app.state.canaries
    return controller


async def _reason(request: Request[Any, Any, Any]) -> str:
    """The optional ``{"reason": "..."}`` of a command."""
    raw = await request.body()
    if not raw.strip():
        return ""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequestError("the body must be JSON: {\"reason\": \"...\"}") from None
    reason = body.get("reason", "") if isinstance(body, dict) else None
    if not isinstance(reason, str) or len(reason) > 500:
        raise InvalidRequestError("reason must be a string of at most 500 characters", param="reason")
    return reason


@get("/admin/canaries")
async def list_canaries(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Every canary of the active policy: phase, weight, step, window statistics, the guards'
    verdict, recent transitions, and what to do next."""
    return _controller(request).status()


@post("/admin/canaries/{model:str}/promote", status_code=200)
async def promote_canary(request: Request[Any, Any, Any], model: FromPath[str]) -> dict[str, Any]:
    """Send every request of ``model`` to its canary now; then update the policy document."""
    controller = _controller(request)
    return await controller.promote(model, await _reason(request))


@post("/admin/canaries/{model:str}/rollback", status_code=200)
async def rollback_canary(request: Request[Any, Any, Any], model: FromPath[str]) -> dict[str, Any]:
    """Send every request of ``model`` to its stable version now."""
    controller = _controller(request)
    return await controller.rollback(model, await _reason(request))


@post("/admin/canaries/{model:str}/pause", status_code=200)
async def pause_canary(request: Request[Any, Any, Any], model: FromPath[str]) -> dict[str, Any]:
    """Hold the canary's weight (the guards still roll back on a breach)."""
    controller = _controller(request)
    return await controller.pause(model, await _reason(request))


@post("/admin/canaries/{model:str}/resume", status_code=200)
async def resume_canary(request: Request[Any, Any, Any], model: FromPath[str]) -> dict[str, Any]:
    """Continue a paused rollout, or restart a rolled back one from its first step."""
    controller = _controller(request)
    return await controller.resume(model, await _reason(request))


CANARY_ADMIN_HANDLERS = (list_canaries, promote_canary, rollback_canary, pause_canary, resume_canary)
"""Every handler of this module, to register in ``create_app``."""

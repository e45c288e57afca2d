"""The Messages API routes: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

``/v1/messages`` is served by the shared request path (``gateway.completions.handle``) with
the Anthropic door. ``count_tokens`` authenticates and checks the model like a request, then
counts with the model's token counter (the counting admission uses) and charges nothing.
"""

from __future__ import annotations

import os
from typing import Any

from litestar import Request, Response, post

from gateway.completions import handle
from gateway.doors.anthropic import api_key, messages_door
from gateway.doors.anthropic_render import error_body
from gateway.doors.anthropic_wire import parse_count_tokens
from gateway.errors import DOOR_STATE, REQUEST_ID_STATE
from gateway.runtime import Runtime
from gateway.state import Gateway
from gateway.target import authorize

__all__ = ["MESSAGES_HANDLERS", "count_tokens", "messages"]


@post("/v1/messages", status_code=200)
async def messages(request: Request[Any, Any, Any]) -> Response[Any]:
    """Anthropic's Messages API, streamed or not."""
    return await handle(request, messages_door(request.headers))


@post("/v1/messages/count_tokens", status_code=200)
async def count_tokens(request: Request[Any, Any, Any]) -> Response[Any]:
    """``{"input_tokens": N}`` for a Messages body, as admission would count it; not charged."""
    request.state[DOOR_STATE] = error_body
    request.state[REQUEST_ID_STATE] = request_id = os.urandom(16).hex()
    gateway: Gateway = request.app.state.gateway
    runtime = gateway.runtime
    caller = runtime.keyring.authenticate(api_key(request.headers))
    call = parse_count_tokens(await request.body())
    model = runtime.policy.model_named(call.params.model)
    authorize(runtime, caller, model)
    tools = call.params.tools if isinstance(call.params.tools, list) else None
    counts = [await runtime.accounting.counter.count_chat_async(
        call.params.messages, tools, runtime.policy.models[name].tokens) for name in _counted_models(runtime, model)]
    return Response({"input_tokens": max(counts)}, headers={"x-request-id": request_id})


def _counted_models(runtime: Runtime, model: str) -> list[str]:
    """The model itself, or both tiers of a difficulty route (the larger count is given)."""
    route = runtime.policy.routes.get(model)
    return [route.cheap, route.strong] if route is not None else [model]


MESSAGES_HANDLERS = [messages, count_tokens]
"""Route handlers to register on the app."""
MESSAGES_PATHS = ("/v1/messages", "/v1/messages/count_tokens")
"""Their paths: errors there leave in Anthropic's shape even before a handler runs."""

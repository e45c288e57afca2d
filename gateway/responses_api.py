"""``POST /v1/responses`` and ``GET /v1/responses/{id}``: OpenAI's Responses API.

The request itself goes through the chat path (``gateway.completions.handle``) behind the
Responses door (``gateway.doors.responses``). This module adds only what is stateful: before
the path runs it reads the stored response ``previous_response_id`` names (for the caller's
tenant), and after it it stores the answer when the client asked ``store: true`` (before the
client can read the end of it, so the next turn always finds it).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Stream

from backends.errors import NotFoundError, SwitchyardError
from gateway.completions import handle
from gateway.doors.openai import bearer
from gateway.doors.responses import STORE_OFF, Prior, ResponsesTurn, responses_door, store_unavailable
from gateway.doors.responses_store import ResponseStore
from gateway.errors import error_response
from gateway.state import Gateway
from policies.keys import Caller
from policies.redis_client import store_errors
from policies.responses_config import ResponsesConfig

__all__ = ["RESPONSES_HANDLERS", "create_response", "retrieve_response"]

log = logging.getLogger("switchyard.gateway")
RESPONSE_STORE_STATE = "response_store"
"""Where ``create_app`` leaves the app's ``ResponseStore`` on ``app.state``."""


class _State(msgspec.Struct):
    """The two fields read before the request path runs (the door validates the rest)."""

    store: Any = None
    previous_response_id: Any = None


def _store(request: Request[Any, Any, Any]) -> ResponseStore:
    store: ResponseStore = getattr(request.app.state, RESPONSE_STORE_STATE)
    return store


def _caller(request: Request[Any, Any, Any]) -> tuple[Caller, ResponsesConfig] | None:
    """The caller and the policy's ``responses`` section; None when the request path will
    refuse the request anyway (no policy, bad key: it answers with its own error)."""
    gateway: Gateway = request.app.state.gateway
    try:
        runtime = gateway.runtime
        return runtime.keyring.authenticate(bearer(request.headers)), runtime.policy.responses
    except SwitchyardError:
        return None


async def _prior(request: Request[Any, Any, Any], state: _State) -> tuple[Prior, str | None]:
    """The stored conversation a request continues, and the tenant to store its answer for."""
    wants = state.store is True or isinstance(state.previous_response_id, str)
    known = _caller(request) if wants else None
    if known is None:
        return Prior(), None
    caller, config = known
    if not config.store:
        return Prior(store_enabled=False), None
    if not isinstance(state.previous_response_id, str):
        return Prior(), caller.tenant
    try:
        stored = await _store(request).get(caller.tenant, state.previous_response_id, config)
    except store_errors() as exc:
        log.warning("response store read failed: %s", exc)
        return Prior(failure=store_unavailable(exc)), caller.tenant
    return Prior(stored=stored), caller.tenant


@post("/v1/responses", status_code=200)
async def create_response(request: Request[Any, Any, Any]) -> Response[Any]:
    """OpenAI's Responses API, streamed or not, translated to chat for every backend."""
    try:
        state = msgspec.json.decode(await request.body(), type=_State)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        state = _State()  # the door's parse answers the proper 400
    prior, tenant = await _prior(request, state)
    turn = ResponsesTurn(prior)
    response = await handle(request, responses_door(turn))
    if tenant is None or not turn.wants_store:
        return response
    store, config = _store(request), request.app.state.gateway.runtime.policy.responses
    if isinstance(response, Stream) and isinstance(response.iterator, AsyncIterable):
        response.iterator = _stored_before_end(response.iterator, turn, store, tenant, config)
    else:
        await _keep(turn, store, tenant, config)
    return response


async def _keep(turn: ResponsesTurn, store: ResponseStore, tenant: str, config: ResponsesConfig) -> None:
    stored = turn.stored()
    if stored is None:
        return
    try:
        await store.put(tenant, stored, config)
    except store_errors() as exc:  # the answer stands; only its continuation is lost
        log.warning("response %s not stored: %s", stored.response.get("id"), exc)


async def _stored_before_end(body: AsyncIterable[str | bytes], turn: ResponsesTurn, store: ResponseStore,
                             tenant: str, config: ResponsesConfig) -> AsyncIterator[str | bytes]:
    """The stream's bytes; the response is stored as soon as its last event is encoded and
    before it is sent, so a client that read ``response.completed`` can continue from it."""
    kept = False
    async for data in body:
        if not kept and turn.final is not None:
            kept = True
            await _keep(turn, store, tenant, config)
        yield data


@get("/v1/responses/{response_id:str}")
async def retrieve_response(request: Request[Any, Any, Any], response_id: FromPath[str]) -> Response[Any]:
    """A stored response of the caller's tenant (404 for any other)."""
    gateway: Gateway = request.app.state.gateway
    runtime = gateway.runtime
    caller = runtime.keyring.authenticate(bearer(request.headers))
    config = runtime.policy.responses
    if not config.store:
        return error_response(NotFoundError(f"Response with id '{response_id}' not found: {STORE_OFF}."))
    try:
        stored = await _store(request).get(caller.tenant, response_id, config)
    except store_errors() as exc:
        raise store_unavailable(exc) from None
    if stored is None:
        raise NotFoundError(f"Response with id '{response_id}' not found.", param="response_id")
    return Response(msgspec.json.encode(stored.response), media_type="application/json")


RESPONSES_HANDLERS = [create_response, retrieve_response]

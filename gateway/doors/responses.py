"""OpenAI's Responses API as a door: ``POST /v1/responses`` over the canonical chat request.

One ``ResponsesTurn`` per request holds what the Responses shape needs beyond the canonical
request: the conversation so far (a stored response's, for ``previous_response_id``), the
request's own fields that every response object repeats, and the final response object
(kept when the client asked ``store: true``). ``responses_door(turn)`` is that request's
``Door``: its ``parse`` translates into a chat request, its ``answer`` and ``stream`` build
the response object and events from canonical responses and chunks. Everything between
(routing, admission, moderation, retries, telemetry) is the chat path's, untouched.

The door translates to chat for every backend kind (SGLang, OpenAI-compatible, Anthropic);
it does not pass through to an upstream's own ``/v1/responses`` (docs/api.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from backends.errors import (
    InvalidRequestError,
    NotFoundError,
    ServiceUnavailableError,
    SwitchyardError,
)
from backends.types import ChatChunk, ChatRequest, ChatResponse, Usage
from gateway.doors.base import Door
from gateway.doors.openai import bearer
from gateway.doors.responses_input import ResponsesBody, decode_body, to_chat
from gateway.doors.responses_output import Echo, output_items, status_of
from gateway.doors.responses_store import StoredResponse
from gateway.doors.responses_stream import ResponsesStream
from gateway.errors import error_body
from gateway.operations import CHAT

__all__ = ["STORE_OFF", "Prior", "ResponsesTurn", "responses_door"]

STORE_OFF = ("storing responses is turned off on this gateway; its operator turns it on with "
             "`responses: {store: true}` in the policy (docs/api.md)")
_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Prior:
    """What the route found before the request path ran: whether the gateway stores
    responses, and the stored response ``previous_response_id`` names (or why it has none)."""

    store_enabled: bool = True
    stored: StoredResponse | None = None
    failure: SwitchyardError | None = None
    """Raised by ``parse`` (inside the request path, so the access line shows it)."""


class ResponsesTurn:
    """One Responses request: its body, its conversation, its final response object."""

    def __init__(self, prior: Prior) -> None:
        self._prior = prior
        self.body: ResponsesBody | None = None
        self.echo: Echo | None = None
        self.items: list[Any] = []
        """The conversation this request sends: earlier turns, then its own input items."""
        self.final: dict[str, Any] | None = None
        """The whole response object once answered (for ``store: true``)."""

    @property
    def wants_store(self) -> bool:
        """The client asked ``store: true`` and the request parsed."""
        return self.body is not None and self.body.store is True

    def parse(self, data: bytes) -> ChatRequest:
        """The body as the canonical chat request (errors in OpenAI's shape)."""
        body, raw = decode_body(data)
        prior = self._prior
        asks_state = body.store is True or body.previous_response_id is not None
        if asks_state and not prior.store_enabled:
            param = "previous_response_id" if body.previous_response_id is not None else "store"
            raise InvalidRequestError(f"{param}: {STORE_OFF}.", param=param)
        history: list[Any] = []
        if body.previous_response_id is not None:
            if prior.failure is not None:
                raise prior.failure
            if prior.stored is None:
                raise NotFoundError(f"Previous response with id '{body.previous_response_id}' not found. It may "
                                    "have expired (responses.ttl_s), never have been stored (send store: true), "
                                    "or belong to another tenant.", param="previous_response_id")
            history = prior.stored.conversation()
        own = [{"role": "user", "content": body.input}] if isinstance(body.input, str) else list(body.input or ())
        self.items = [*history, *own]
        call = to_chat(body, raw, self.items)
        self.body, self.echo = body, Echo(body)
        return call

    def answer(self, answer: ChatResponse, _: ChatRequest) -> bytes:
        """A whole chat completion as the response object."""
        assert self.echo is not None  # parsed before anything is answered
        self.echo.model = answer.model
        choice = answer.choices[0] if answer.choices else None
        status, reason = status_of(choice.finish_reason if choice else None)
        output = output_items(choice.message, "incomplete" if status == "incomplete" else "completed") \
            if choice is not None else []
        usage = answer.usage if isinstance(answer.usage, Usage) else Usage()
        self.final = self.echo.response(status, output, usage, reason)
        return _ENCODER.encode(self.final)

    def stream(self, _: ChatRequest) -> ResponsesStream:
        """The encoder of this request's event stream."""
        assert self.echo is not None

        def keep(final: dict[str, Any]) -> None:
            self.final = final

        return ResponsesStream(self.echo, keep)

    def stored(self) -> StoredResponse | None:
        """What to store for a later ``previous_response_id``, once answered."""
        return StoredResponse(self.items, self.final) if self.final is not None else None


def responses_door(turn: ResponsesTurn) -> Door[ChatRequest, ChatResponse, ChatChunk]:
    """The door of one Responses request (errors in OpenAI's shape, Bearer keys)."""
    return Door("responses", CHAT, turn.parse, turn.answer, turn.stream, error_body, bearer)


def store_unavailable(exc: Exception) -> ServiceUnavailableError:
    """The response store could not be read: a 503 the client may retry."""
    return ServiceUnavailableError(f"The response store is unavailable ({type(exc).__name__}); retry shortly.",
                                   headers={"retry-after": "1"})

"""The Anthropic Messages API as a backend: OpenAI chat in, OpenAI chat out.

The wire translation lives in ``backends/anthropic_translate.py`` (pure functions); this module
owns the HTTP exchange, the stream loop and the one table that maps Anthropic's failures onto
our error hierarchy. aiohttp exceptions never leave it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import httpx
import msgspec

from backends import open_wire
from backends.anthropic_translate import (
    AnthropicMessage,
    ErrorEnvelope,
    StreamEvent,
    StreamTranslator,
    to_anthropic_body,
    to_chat_response,
)
from backends.errors import (
    SwitchyardError,
    UnsupportedError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from backends.http import (
    Timeouts,
    iter_chunks,
    read_body,
    read_error_body,
    status_error,
    transport_error,
)
from backends.sse import SSEDecoder, SSEEvent
from backends.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Health,
    JSONObject,
    TextRequest,
    TextResponse,
    Usage,
)

ANTHROPIC_VERSION = "2023-06-01"
MESSAGES_PROTOCOL = "anthropic.messages"
"""``NativeBody.protocol`` of a Messages API body: sent as it is (``native_body``)."""
NATIVE_MESSAGE = "anthropic_message"
"""Key in a ``ChatResponse``'s ``__dict__`` (never encoded) holding the Messages API answer as
Anthropic sent it, and ``answer_fingerprint`` of the translation made from it."""
NATIVE_EVENTS = open_wire.NATIVE_EVENTS
"""Key in a ``ChatChunk``'s ``__dict__`` (never encoded) holding the stream events, as
Anthropic sent them, that led to the chunk (events that make no chunk ride on the next one)."""
_OBJECT = msgspec.json.Decoder(dict[str, Any])

# The error table: Anthropic error type -> our class. Authentication and permission errors are
# the gateway's own credentials failing, so they are not the client's to fix (UpstreamError).
_ERRORS: dict[str, type[SwitchyardError]] = {
    "invalid_request_error": UpstreamRejectedError,
    "authentication_error": UpstreamError,
    "permission_error": UpstreamError,
    "billing_error": UpstreamError,
    "not_found_error": UpstreamRejectedError,
    "request_too_large": UpstreamRejectedError,
    "rate_limit_error": UpstreamRateLimitedError,
    "api_error": UpstreamError,
    "timeout_error": UpstreamTimeoutError,
    "overloaded_error": UpstreamUnavailableError,
}
# When the body has no parsable error type (a proxy's HTML page, an empty 413), the status says.
_TYPE_OF_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_STATUS_OF_TYPE = {v: k for k, v in _TYPE_OF_STATUS.items()}


def map_error(
    status: int | None, body: bytes, target: str, headers: Mapping[str, str], secret: str | None
) -> SwitchyardError:
    """Translate an Anthropic error (HTTP response, or ``error`` event when ``status`` is None).

    Only the error's ``message`` field is kept, scrubbed of the API key by
    ``backends.http.status_error``; the raw body never reaches the client.
    """
    try:
        error = msgspec.json.decode(body, type=ErrorEnvelope).error
        error_type, message = error.type, error.message
    except msgspec.DecodeError:
        error_type, message = "", ""
    if not error_type or error_type not in _ERRORS:
        error_type = _TYPE_OF_STATUS.get(status or 500, "")
    if status is None:
        target = f"{target} (mid-stream)"
    shared = status_error(
        status or _STATUS_OF_TYPE.get(error_type, 500), message, target, headers, secret
    )
    cls = _ERRORS.get(error_type) or (
        UpstreamRejectedError if status and status < 500 else UpstreamError
    )
    if type(shared) is cls:
        return shared
    retry = headers.get("retry-after", "")
    if cls is UpstreamRateLimitedError or cls is UpstreamUnavailableError:
        return cls(shared.message, headers={"retry-after": retry} if retry.isdigit() else None)
    return cls(shared.message)


def native_body(request: ChatRequest, *, stream: bool) -> JSONObject | None:
    """The client's own Messages API body for ``request``, or None when it must be translated.

    Sent as the client wrote it (``cache_control``, fields the gateway does not model), with
    what the gateway decided applied: the upstream model, ``max_tokens`` (clamped to the
    window or the budget), ``stream``, and sampling fields the parameter table dropped. None
    when the request has no Messages body or a stage rewrote its prompt (``NativeBody``).
    """
    native = request.native
    if native is None or native.protocol != MESSAGES_PROTOCOL or not native.applies_to(request.params):
        return None
    p = request.params
    body = dict(native.body)
    body["model"] = request.upstream_model or p.model
    limit = p.max_completion_tokens if isinstance(p.max_completion_tokens, int) else p.max_tokens
    if isinstance(limit, int):
        body["max_tokens"] = limit
    if stream:
        body["stream"] = True
    else:
        body.pop("stream", None)
    for name, field in (("temperature", "temperature"), ("top_p", "top_p"), ("stop", "stop_sequences")):
        if getattr(p, name) is msgspec.UNSET:
            body.pop(field, None)  # dropped by the parameter table (drop_unsupported_params)
    if "top_k" not in request.extra:
        body.pop("top_k", None)
    return body


def answer_fingerprint(answer: ChatResponse) -> tuple[object, ...]:
    """What the client reads of a translated answer: when a stage (moderation, cache
    isolation) changed any of it, the native answer no longer says the same and is not sent."""
    choice = answer.choices[0] if answer.choices else None
    message = choice.message if choice is not None else None
    calls = message.tool_calls if message is not None and isinstance(message.tool_calls, list) else []
    usage = answer.usage.cached_tokens if isinstance(answer.usage, Usage) else None
    return (message.content if message else None, message.reasoning_content if message else None,
            tuple(c.arguments for c in calls), choice.finish_reason if choice else None, usage)


class AnthropicBackend:
    """One Anthropic Messages API deployment, spoken to in OpenAI chat terms.

    Args:
        name: Stable identifier, e.g. ``claude/0``.
        base_url: API root without ``/v1`` (``https://api.anthropic.com``).
        session: The shared data-plane aiohttp session; not closed here.
        control: The shared control-plane httpx client; unused for now (see ``health``).
        timeouts: Connect, first-byte and idle limits.
        api_key: Sent as ``x-api-key``; never appears in an error message.
        prompt_caching: Mark a long system prompt and tool list as a cacheable prefix
            (``anthropic_translate.mark_cacheable_prefix``).
    """

    kind = "anthropic"

    def __init__(
        self,
        name: str,
        base_url: str,
        session: aiohttp.ClientSession,
        control: httpx.AsyncClient,
        timeouts: Timeouts,
        api_key: str | None,
        *,
        prompt_caching: bool = False,
    ) -> None:
        self.name = name
        self.address = base_url.rstrip("/")
        self._url = self.address + "/v1/messages"
        self._session = session
        self._control = control
        self._timeouts = timeouts
        self._api_key = api_key
        self._prompt_caching = prompt_caching
        self._headers = {"anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}
        if api_key:
            self._headers["x-api-key"] = api_key

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Send a non-streamed request and translate the whole answer.

        Anthropic sends the headers of a non-streamed answer once it is generated, so
        ``timeouts.first_byte`` bounds the whole generation here; ``idle`` bounds the gaps of
        the body, ``bounds.upstream_deadline_s`` the whole call and
        ``bounds.upstream_body_bytes`` its size (``backends.http.read_body``).
        """
        native = native_body(request, stream=False)
        body = native or to_anthropic_body(request, prompt_caching=self._prompt_caching)
        started = asyncio.get_running_loop().time()
        response = await self._send(body, self._request_headers(request))
        raw = await read_body(response, self._timeouts, self.name, started)  # closes on failure
        response.release()
        try:
            data = _OBJECT.decode(raw)
            message = msgspec.convert(data, type=AnthropicMessage)
        except msgspec.DecodeError as exc:
            raise UpstreamError(f"{self.name} answered an unreadable message") from exc
        answer = to_chat_response(message, int(time.time()))
        if native is not None:  # the door re-emits it while nothing it says has changed
            answer.__dict__[NATIVE_MESSAGE] = (data, answer_fingerprint(answer))
        return answer

    @staticmethod
    def _request_headers(request: ChatRequest) -> dict[str, str] | None:
        """Trace context, and the protocol headers of a native body (``anthropic-beta``)."""
        native = request.native.headers if request.native is not None else None
        if not native:
            return request.trace_headers
        return {**native, **(request.trace_headers or {})}

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Stream OpenAI chunks; the request goes out on the first ``__anext__``.

        Ends with one usage-only chunk. An ``error`` event mid-stream raises the mapped error;
        a stream that ends before ``message_stop`` raises ``UpstreamError``.
        """
        return self._stream(request)

    async def _stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        native = native_body(request, stream=True)
        body = native or to_anthropic_body(request, stream=True, prompt_caching=self._prompt_caching)
        response = await self._send(body, self._request_headers(request))
        translator = StreamTranslator(int(time.time()), body["model"])
        decoder = SSEDecoder(self._timeouts.max_event_bytes, self.name)
        originals: list[JSONObject] | None = [] if native is not None else None
        completed = False
        try:
            async for raw in iter_chunks(response, self._timeouts, self.name):
                for event in decoder.feed(raw):
                    for chunk in self._translate(translator, event, originals):
                        yield chunk
            for event in decoder.close():
                for chunk in self._translate(translator, event, originals):
                    yield chunk
            if not translator.finished:
                raise UpstreamError(f"{self.name} ended its stream before message_stop")
            completed = True  # the body is fully read: the connection may go back to the pool
            last = translator.usage_chunk()
            if originals is not None:
                last.__dict__[NATIVE_EVENTS] = originals
            yield last
        finally:
            # a finished body goes back to the pool; anything else (cancel, aclose, error)
            # closes the socket so the upstream sees the disconnect and stops generating
            if completed:
                response.release()
            else:
                response.close()

    def _translate(self, translator: StreamTranslator, event: SSEEvent,
                   originals: list[JSONObject] | None) -> list[ChatChunk]:
        """The chunks of one event; on a native stream each carries the events that led to
        it (``NATIVE_EVENTS``), ``originals`` collecting those that made no chunk yet."""
        if event.event == "error":
            raise map_error(None, event.data.encode(), self.name, {}, self._api_key)
        try:
            data = _OBJECT.decode(event.data)
            chunks = translator.feed(msgspec.convert(data, type=StreamEvent))
        except msgspec.DecodeError as exc:
            raise UpstreamError(f"{self.name} sent an unreadable stream event") from exc
        if originals is not None:
            originals.append(data)
            if chunks:
                chunks[0].__dict__[NATIVE_EVENTS] = list(originals)
                originals.clear()
        return chunks

    async def _send(self, body: dict[str, object],
                    trace_headers: dict[str, str] | None) -> aiohttp.ClientResponse:
        """POST the body; return a 2xx response with its headers read, or raise mapped."""
        headers = {**self._headers, **trace_headers} if trace_headers else self._headers
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeouts.connect)
        try:
            async with asyncio.timeout(self._timeouts.first_byte):
                response = await self._session.post(
                    self._url,
                    data=msgspec.json.encode(body),
                    headers=headers,
                    timeout=timeout,
                )
                if response.status < 400:
                    return response
                raw = await read_error_body(response, self._timeouts)
                response.release()
        except TimeoutError as exc:
            raise UpstreamTimeoutError(
                f"{self.name} did not answer within {self._timeouts.first_byte:g}s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise transport_error(exc, self.name) from exc
        raise map_error(response.status, raw, self.name, response.headers, self._api_key)

    async def complete_text(self, request: TextRequest) -> TextResponse:
        """Legacy completions are not part of the Messages API."""
        raise UnsupportedError("anthropic deployments do not serve /v1/completions")

    def stream_text(self, request: TextRequest) -> AsyncIterator[TextResponse]:
        """Legacy completions are not part of the Messages API; raises on first ``__anext__``."""
        return self._no_text_stream()

    async def _no_text_stream(self) -> AsyncIterator[TextResponse]:
        raise UnsupportedError("anthropic deployments do not serve /v1/completions")
        yield  # pragma: no cover - makes this an async generator

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Anthropic has no embeddings API."""
        raise UnsupportedError("anthropic deployments do not serve /v1/embeddings")

    async def health(self) -> Health:
        """Report healthy without probing.

        Anthropic has no health route, and the cheapest real probe is a paid completion, so we
        do not send one; the circuit breaker learns about failures from real traffic instead.
        """
        return Health(ok=True, detail="not probed")

    async def aclose(self) -> None:
        """Nothing to release: the session and control client belong to the app, not to us."""

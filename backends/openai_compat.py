"""A backend for any OpenAI-compatible API: OpenAI itself, vLLM, hosted providers, SGLang."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import aiohttp
import httpx
import msgspec

from backends import open_wire
from backends.control_http import control_get
from backends.errors import SwitchyardError, UpstreamError
from backends.http import (
    Timeouts,
    end_stream,
    iter_chunks,
    read_body,
    read_error_body,
    status_error,
    transport_error,
)
from backends.sse import SSEDecoder
from backends.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Health,
    StreamOptions,
    TextRequest,
    TextResponse,
)

T = TypeVar("T", ChatResponse, ChatChunk, TextResponse, EmbeddingResponse)

_ENCODER = msgspec.json.Encoder()
_ERROR_BODY = msgspec.json.Decoder(dict[str, Any])


def encode_body(request: ChatRequest | TextRequest, *, stream: bool) -> bytes:
    """The upstream JSON body: known fields, the upstream model name, extras passed through.

    A stream always asks for usage so the gateway can account for it; the gateway drops the
    usage chunk again when the client did not ask for it.
    """
    params = open_wire.replace(
        request.params,
        model=request.upstream_model or request.params.model,
        stream=stream,
        stream_options=StreamOptions(include_usage=True) if stream else msgspec.UNSET,
    )
    body = open_wire.encode(params)
    if request.extra:
        # splice the extras into the encoded object rather than round-tripping through a dict
        body = body[:-1] + b"," + _ENCODER.encode(request.extra)[1:]
    return body


def upstream_message(raw: bytes) -> str:
    """The human-readable message of an upstream error body, whatever its shape."""
    try:
        body = _ERROR_BODY.decode(raw)
    except msgspec.DecodeError:
        return raw[:200].decode("utf-8", errors="replace")
    error = body.get("error", body)
    if isinstance(error, dict):
        return str(error.get("message", ""))
    return str(body.get("message", error))


class OpenAICompatBackend:
    """Speaks ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings`` to one base URL.

    Args:
        name: Stable id of this remote (``pool/index``), for headers and traces.
        base_url: Root that ``/v1/...`` hangs off, e.g. ``http://10.0.0.5:30000``.
        session: The shared aiohttp pool of this backend's policy entry (data plane).
        control: The shared httpx client for health checks and scrapes (control plane).
        timeouts: Connect, first-byte and idle limits.
        api_key: Sent as ``Authorization: Bearer``; never the client's own key.
    """

    kind = "openai"

    def __init__(
        self,
        name: str,
        base_url: str,
        session: aiohttp.ClientSession,
        control: httpx.AsyncClient,
        timeouts: Timeouts,
        api_key: str | None = None,
    ) -> None:
        self.name = name
        self.base_url = self.address = base_url.rstrip("/")
        self._session = session
        self._control = control
        self._timeouts = timeouts
        self._api_key = api_key
        self._headers = {"content-type": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._client_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeouts.connect, sock_read=None
        )

    def _api_url(self, path: str) -> str:
        # an OpenAI base_url already ends in /v1; a bare host (SGLang, vLLM) does not
        return f"{self.base_url}{path}" if self.base_url.endswith("/v1") else f"{self.base_url}/v1{path}"

    async def complete(self, request: ChatRequest) -> ChatResponse:
        body = encode_body(request, stream=False)
        return await self._post_json("/chat/completions", body, ChatResponse, request.trace_headers)

    async def complete_text(self, request: TextRequest) -> TextResponse:
        body = encode_body(request, stream=False)
        return await self._post_json("/completions", body, TextResponse, request.trace_headers)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """``POST /v1/embeddings``, the body passed through with the upstream model name."""
        body = open_wire.encode(open_wire.replace(request.params, model=request.upstream_model or request.params.model))
        if request.extra:
            body = body[:-1] + b"," + _ENCODER.encode(request.extra)[1:]
        return await self._post_json("/embeddings", body, EmbeddingResponse, request.trace_headers)

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        return self._stream("/chat/completions", encode_body(request, stream=True), ChatChunk,
                            request.trace_headers)

    def stream_text(self, request: TextRequest) -> AsyncIterator[TextResponse]:
        return self._stream("/completions", encode_body(request, stream=True), TextResponse,
                            request.trace_headers)

    async def health(self) -> Health:
        """A provider API has no cheap health route: listing models proves reachability and key."""
        try:
            response = await control_get(self._control, self._api_url("/models"), headers=self._headers,
                                         deadline=self._timeouts.connect, max_bytes=self._timeouts.max_body_bytes)
        except httpx.HTTPError as exc:
            return Health(ok=False, detail=f"unreachable ({type(exc).__name__})")
        return Health(ok=response.status_code < 500, detail=f"HTTP {response.status_code}")

    async def aclose(self) -> None:
        """Nothing of its own: the sessions belong to the runtime that built this backend."""

    async def _post_json(self, path: str, body: bytes, cls: type[T],
                         trace_headers: dict[str, str] | None) -> T:
        started = asyncio.get_running_loop().time()
        try:
            # a non-streamed answer arrives whole: first_byte_s bounds the generation itself,
            # bounds.upstream_deadline_s the whole call and bounds.upstream_body_bytes its size
            async with asyncio.timeout(self._timeouts.first_byte):
                response = await self._post(path, body, trace_headers)
            async with response:
                if response.status >= 400:
                    raise self._status_error(response, await read_error_body(response, self._timeouts))
                raw = await read_body(response, self._timeouts, self.name, started)
        except SwitchyardError:
            raise
        except Exception as exc:  # aiohttp raises many kinds; none may leave backends/
            raise transport_error(exc, self.name) from exc
        try:
            return open_wire.decode(raw, cls)
        except msgspec.DecodeError as exc:
            raise UpstreamError(f"{self.name} answered invalid JSON: {exc}") from exc

    async def _stream(self, path: str, body: bytes, cls: type[T],
                      trace_headers: dict[str, str] | None) -> AsyncIterator[T]:
        try:
            async with asyncio.timeout(self._timeouts.first_byte):
                response = await self._post(path, body, trace_headers)
        except Exception as exc:
            raise transport_error(exc, self.name) from exc
        complete = False
        try:
            if response.status >= 400:
                raw = await read_error_body(response, self._timeouts)
                raise self._status_error(response, raw)
            sse = SSEDecoder(self._timeouts.max_event_bytes, self.name)
            async for chunk in iter_chunks(response, self._timeouts, self.name):
                for event in sse.feed(chunk):
                    if event.data == "[DONE]":
                        complete = True
                        return
                    yield self._decode_event(cls, event.data)
            for event in sse.close():
                if event.data != "[DONE]":
                    yield self._decode_event(cls, event.data)
            complete = True
        except SwitchyardError:
            raise
        except Exception as exc:
            raise transport_error(exc, self.name) from exc
        finally:
            end_stream(response, complete=complete)

    async def _post(self, path: str, body: bytes,
                    trace_headers: dict[str, str] | None) -> aiohttp.ClientResponse:
        headers = {**self._headers, **trace_headers} if trace_headers else self._headers
        return await self._session.post(
            self._api_url(path), data=body, headers=headers, timeout=self._client_timeout
        )

    def _decode_event(self, cls: type[T], data: str) -> T:
        try:
            return open_wire.decode(data, cls)
        except msgspec.DecodeError as exc:
            message = upstream_message(data.encode())
            if '"error"' in data:
                raise UpstreamError(f"{self.name} failed mid-stream: {message}") from exc
            raise UpstreamError(f"{self.name} sent a malformed stream event") from exc

    def _status_error(self, response: aiohttp.ClientResponse, raw: bytes) -> SwitchyardError:
        return status_error(
            response.status, upstream_message(raw), self.name, response.headers, self._api_key
        )

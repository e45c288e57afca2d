"""OpenAI's ``POST /v1/embeddings``: the embeddings door and its operation.

The canonical request is OpenAI's own body (``EmbeddingRequest``), passed through to SGLang
embedding workers and OpenAI-compatible APIs; Anthropic has no embeddings API. An embedding
is computed, not generated: the operation says so (``generates=False``), so the request path
skips what only applies to generated text (streaming, output moderation, the response cache,
finish reasons) and keeps everything else (admission, routing, retries, telemetry).

The answer is re-encoded by the door: ``usage`` as OpenAI's ``{prompt_tokens, total_tokens}``
(an SGLang worker also sends completion and reasoning counts), and vectors as base64 of
little-endian float32 when the client asked for ``base64`` and the upstream sent floats.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Request, Response, post

from backends import open_wire
from backends.base import Backend
from backends.errors import SwitchyardError, UnsupportedError
from backends.types import Embedding, EmbeddingRequest, EmbeddingResponse, Usage
from gateway.completions import handle
from gateway.doors.base import Door
from gateway.doors.openai import bearer
from gateway.errors import error_body
from gateway.operations import Operation
from gateway.wire import parse_embeddings
from router.prompt_text import render_text

__all__ = ["EMBED", "EMBEDDINGS", "base64_floats", "embeddings"]

_ENCODER = msgspec.json.Encoder()


def base64_floats(vector: list[float]) -> str:
    """A vector as OpenAI's ``base64`` encoding sends it: little-endian float32, base64."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def _render(call: EmbeddingRequest) -> tuple[str, int]:
    return render_text(call.params.input)


async def _embed(backend: Backend, call: EmbeddingRequest) -> EmbeddingResponse:
    return await backend.embed(call)


def _no_stream(backend: Backend, call: EmbeddingRequest) -> AsyncIterator[EmbeddingResponse]:
    raise UnsupportedError("embeddings are not streamed")


def _no_text(answer: EmbeddingResponse) -> str:
    return ""  # nothing generated: no output tokens, nothing for output moderation


EMBED: Operation[EmbeddingRequest, EmbeddingResponse, EmbeddingResponse] = Operation(
    "embeddings", parse_embeddings, _render, _embed, _no_stream, _no_text,
    model_kind="embedding", generates=False)
"""Vectors for the inputs (OpenTelemetry's ``gen_ai.operation.name`` is ``embeddings``)."""


def _vectors(answer: EmbeddingResponse, call: EmbeddingRequest) -> list[Embedding]:
    if call.params.encoding_format != "base64":
        return answer.data
    # an upstream that only does floats: encode as OpenAI would
    return [open_wire.replace(item, embedding=base64_floats(item.embedding))
            if isinstance(item.embedding, list) else item for item in answer.data]


def _answer(answer: EmbeddingResponse, call: EmbeddingRequest) -> bytes:
    usage = answer.usage if isinstance(answer.usage, Usage) else Usage()
    prompt = usage.prompt_tokens
    public = {"prompt_tokens": prompt, "total_tokens": max(usage.total_tokens, prompt)}
    body = open_wire.encode(open_wire.replace(answer, data=_vectors(answer, call), usage=msgspec.UNSET))
    return body[:-1] + b',"usage":' + _ENCODER.encode(public) + b"}"


class _NoStream:
    """Never used: an embeddings request does not stream (``EmbeddingRequest.is_stream``)."""

    def chunk(self, chunk: Any) -> bytes:
        raise UnsupportedError("embeddings are not streamed")

    def done(self) -> bytes:
        raise UnsupportedError("embeddings are not streamed")

    def error(self, error: SwitchyardError) -> bytes:
        return error_body(error)


def _stream(_: EmbeddingRequest) -> _NoStream:
    return _NoStream()


EMBEDDINGS: Door[EmbeddingRequest, EmbeddingResponse, EmbeddingResponse] = Door(
    "embeddings", EMBED, EMBED.parse, _answer, _stream, error_body, bearer)
"""OpenAI's embeddings door: ``Authorization: Bearer``, OpenAI's error shape."""


@post("/v1/embeddings", status_code=200)
async def embeddings(request: Request[Any, Any, Any]) -> Response[Any]:
    """OpenAI's embeddings: a string, strings, a token array or token arrays in; vectors out."""
    return await handle(request, EMBEDDINGS)

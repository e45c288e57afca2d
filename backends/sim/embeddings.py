"""``POST /v1/embeddings`` of the simulated SGLang worker and OpenAI-compatible provider.

Vectors are deterministic: each input's token ids seed a unit vector of ``embedding_dim``
floats (a string and its token ids embed alike), truncated to ``dimensions`` and normalized
again when asked. Each upstream answers in its own shape:

- SGLang 0.5.23 (``protocol.py`` ``EmbeddingResponse`` dumped by pydantic): ``usage`` is its
  ``UsageInfo`` with ``completion_tokens: 0``, ``reasoning_tokens: 0`` and null details; a
  worker not started with ``--is-embedding`` refuses with the tokenizer manager's message;
  ``dimensions`` is checked as for a Matryoshka model; input checks as
  ``serving_embedding._validate_request``; errors flat (``create_error_response``).
- OpenAI (the spec's ``CreateEmbeddingResponse``): ``usage`` is ``{prompt_tokens,
  total_tokens}``; errors ``{"error": {...}}``.

With ``embedding_float_only`` the sim answers floats whatever ``encoding_format`` asks, as a
server that only does floats would (the gateway then encodes base64 itself).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import random
import struct
from typing import Any

import msgspec

from backends.sim.config import SimConfig
from backends.sim.engine import SimEngine, SimFailure, SimHooks

NOT_EMBEDDING = ("This model does not appear to be an embedding model by default. "
                 "Please add `--is-embedding` when launching the server or try another model.")
"""SGLang 0.5.23's ``tokenizer_manager`` refusal for a generation model (a 400)."""


class EmbeddingBody(msgspec.Struct):
    """The fields of ``POST /v1/embeddings`` the sim reads."""

    input: str | list[Any]
    model: str = "default"
    encoding_format: str = "float"
    dimensions: int | None = None
    user: str | None = None


def unit_vector(token_ids: list[int], dim: int) -> list[float]:
    """A deterministic unit vector for ``token_ids`` (a hash of them seeds the draw)."""
    seed = hashlib.sha256(b",".join(str(t).encode() for t in token_ids)).digest()
    rng = random.Random(seed)
    values = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    return _normalized(values)


def _normalized(values: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _inputs(value: str | list[Any], native: bool) -> list[str | list[int]]:
    """The inputs of a request, one per vector; raises ``SimFailure`` (400) for bad ones."""
    if isinstance(value, str):
        items: list[Any] = [value]
    elif value and all(type(t) is int for t in value):
        items = [value]  # one token array
    else:
        items = value
    if not items:
        raise SimFailure(400, "Input cannot be empty", param="input")
    for index, item in enumerate(items):
        if isinstance(item, str):
            empty = not item.strip() if native else not item  # SGLang also refuses whitespace
            if empty:
                raise SimFailure(400, f"Input at index {index} cannot be empty or whitespace only", param="input")
        elif isinstance(item, list) and item and all(type(t) is int and t >= 0 for t in item):
            continue
        else:
            raise SimFailure(400, "input must be a string, strings, a token array or token arrays", param="input")
    return items


def _dimensions(requested: int | None, config: SimConfig) -> int:
    full = config.embedding_dim
    if requested is None:
        return full
    if requested < 1:
        raise SimFailure(400, "Requested dimensions must be greater than 0", param="dimensions")
    if requested > full:
        raise SimFailure(400, f"Provided dimensions are greater than max embedding dimension: {full}",
                         param="dimensions")
    return requested


def _encoded(vector: list[float], encoding_format: str, float_only: bool) -> list[float] | str:
    if encoding_format != "base64" or float_only:
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


async def embeddings_body(config: SimConfig, engine: SimEngine, raw: bytes, *, native: bool) -> dict[str, Any]:
    """The answer to one embeddings request, in the SGLang (``native``) or OpenAI shape.

    Raises:
        SimFailure: bad input, a worker that is not an embedding model, or a ``sim_fail`` hook.
    """
    try:
        body = msgspec.json.decode(raw, type=EmbeddingBody)
    except msgspec.DecodeError as exc:
        raise SimFailure(400, str(exc), param="input", error_type="Bad Request" if native else None) from None
    hooks = SimHooks.from_json(raw)
    if hooks.fail_status is not None:
        raise SimFailure(hooks.fail_status, f"simulated HTTP {hooks.fail_status} (sim_fail)",
                         retry_after=1 if hooks.fail_status == 429 else None)
    if native and not config.is_embedding:
        raise SimFailure(400, NOT_EMBEDDING)
    if body.encoding_format not in ("float", "base64"):
        raise SimFailure(400, "encoding_format must be either 'float' or 'base64', "
                         f"got {body.encoding_format!r}", param="encoding_format")
    dim = _dimensions(body.dimensions, config)
    ids = [engine.encode(item) if isinstance(item, str) else item for item in _inputs(body.input, native)]
    tokens = sum(map(len, ids))
    engine.stats.prompt_tokens += tokens
    delay_s = hooks.delay_ms / 1000 + (0 if config.zero_latency else tokens * config.prefill_us_per_token / 1e6)
    if delay_s:
        await asyncio.sleep(delay_s)
    engine.stats.completed += 1
    data = [{"embedding": _encoded(_normalized(unit_vector(t, config.embedding_dim)[:dim]), body.encoding_format,
                                   config.embedding_float_only),
             "index": index, "object": "embedding"} for index, t in enumerate(ids)]
    if native:
        usage: dict[str, Any] = {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0,
                                 "prompt_tokens_details": None, "reasoning_tokens": 0,
                                 "completion_tokens_details": None}
        return {"data": data, "model": config.model, "object": "list", "usage": usage}
    return {"object": "list", "data": data, "model": body.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

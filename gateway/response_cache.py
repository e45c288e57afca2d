"""Exact response cache for deterministic chat requests (temperature 0, or a seed).

The key hashes the tenant, the public model, the model's version (its deployments), and the
request normalised (``stream`` and ``stream_options`` left out), so a streamed and a plain
request share an entry: a hit is replayed in whichever form was asked. Tenants never share
entries. A store failure (Redis down) is a miss, logged, never a failed request.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from backends import open_wire
from backends.types import (
    ChatChoice,
    ChatChunk,
    ChatRequest,
    ChatResponse,
    ChunkChoice,
    Delta,
    FunctionCall,
    ResponseMessage,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from gateway.stores import CacheStore

log = logging.getLogger("switchyard.cache")
_ENCODER = msgspec.json.Encoder(order="sorted")


def is_deterministic(request: ChatRequest) -> bool:
    """Only these may be answered from a cache: the same input gives the same output."""
    params = request.params
    return params.temperature == 0 or isinstance(params.seed, int)


@dataclass
class ResponseCache:
    """The cache of one public model.

    Args:
        store: Memory (one process) or Redis (every replica).
        ttl_s: How long an entry is served.
        max_entry_bytes: Larger responses are not stored.
        version: Identifies the model's deployments; changing them starts a fresh cache.
    """

    store: CacheStore
    ttl_s: float
    max_entry_bytes: int
    version: str
    errors: int = field(default=0)
    """Store failures seen (answered as misses)."""

    def key(self, tenant: str, request: ChatRequest) -> str:
        # every field counts, those the gateway does not model too (sorted: order is no difference)
        params = open_wire.to_builtins(open_wire.replace(request.params, stream=msgspec.UNSET,
                                                         stream_options=msgspec.UNSET))
        digest = hashlib.sha256()
        for part in (tenant.encode(), self.version.encode(), _ENCODER.encode(params),
                     _ENCODER.encode(request.extra)):
            digest.update(len(part).to_bytes(8, "big"))  # length-prefixed: no ambiguous joins
            digest.update(part)
        return digest.hexdigest()

    async def get(self, key: str) -> ChatResponse | None:
        try:
            raw = await self.store.get(key)
            return open_wire.decode(raw, ChatResponse) if raw is not None else None
        except Exception:  # a cache must never fail the request it could have sped up
            self.errors += 1
            log.warning("response cache read failed; serving as a miss", exc_info=True)
            return None

    async def put(self, key: str, response: ChatResponse) -> None:
        raw = open_wire.encode(response)
        if len(raw) > self.max_entry_bytes:
            return
        try:
            await self.store.put(key, raw, self.ttl_s)
        except Exception:
            self.errors += 1
            log.warning("response cache write failed; entry dropped", exc_info=True)


def replay(response: ChatResponse, include_usage: bool) -> list[ChatChunk]:
    """A cached response as the chunks a stream would have sent."""
    def chunk(choices: list[ChunkChoice], usage: Usage | None | msgspec.UnsetType = msgspec.UNSET) -> ChatChunk:
        return ChatChunk(id=response.id, created=response.created, model=response.model,
                         choices=choices, usage=usage)

    chunks = [chunk([ChunkChoice(index=c.index, delta=Delta(role="assistant", content=""))
                     for c in response.choices])]
    for choice in response.choices:
        message = choice.message
        if message.content:
            chunks.append(chunk([ChunkChoice(index=choice.index, delta=Delta(content=message.content))]))
        if isinstance(message.tool_calls, list) and message.tool_calls:
            deltas = [ToolCallDelta(index=i, id=call.id, type=call.type,
                                    function={"name": call.name, "arguments": call.arguments})
                      for i, call in enumerate(message.tool_calls)]
            chunks.append(chunk([ChunkChoice(index=choice.index, delta=Delta(tool_calls=deltas))]))
        chunks.append(chunk([ChunkChoice(index=choice.index, delta=Delta(),
                                         finish_reason=choice.finish_reason)]))
    if include_usage and isinstance(response.usage, Usage):
        chunks.append(chunk([], usage=response.usage))
    return chunks


@dataclass
class _ChoiceParts:
    content: list[str] = field(default_factory=list)
    calls: dict[int, list[str]] = field(default_factory=dict)
    """tool call index -> [id, name, argument pieces...]."""
    finish_reason: str | None = None


def assemble(chunks: list[ChatChunk]) -> ChatResponse | None:
    """A complete stream as one response; None if it did not finish (nothing to cache)."""
    if not chunks:
        return None
    parts: dict[int, _ChoiceParts] = {}
    usage: Usage | None = None
    for chunk in chunks:
        if isinstance(chunk.usage, Usage):
            usage = chunk.usage
        for choice in chunk.choices:
            _add_delta(parts.setdefault(choice.index, _ChoiceParts()), choice)
    if not parts or any(p.finish_reason is None for p in parts.values()):
        return None
    first = chunks[0]
    choices = [ChatChoice(index=index, finish_reason=p.finish_reason, message=ResponseMessage(
        content="".join(p.content) or (None if p.calls else ""),
        tool_calls=[ToolCall(id=c[0], function=FunctionCall(name=c[1], arguments="".join(c[2:])))
                    for _, c in sorted(p.calls.items())] or msgspec.UNSET))
        for index, p in sorted(parts.items())]
    return ChatResponse(id=first.id, created=first.created, model=first.model, choices=choices, usage=usage)


def _add_delta(parts: _ChoiceParts, choice: ChunkChoice) -> None:
    delta = choice.delta
    if isinstance(delta.content, str):
        parts.content.append(delta.content)
    if isinstance(delta.tool_calls, list):
        for call in delta.tool_calls:
            entry = parts.calls.setdefault(call.index, ["", ""])
            function = call.function if isinstance(call.function, dict) else {}
            if isinstance(call.id, str):
                entry[0] = call.id
            if function.get("name"):
                entry[1] = function["name"]
            entry.append(function.get("arguments") or "")
    if choice.finish_reason:
        parts.finish_reason = choice.finish_reason


@dataclass
class CacheLookup:
    """One request's use of the cache: its key, and what the cache did (for the header)."""

    cache: ResponseCache | None
    key: str | None
    state: str | None
    """``hit``, ``miss``, ``bypass``; None when the model has no cache."""

    @classmethod
    def start(cls, cache: ResponseCache | None, tenant: str, call: object,
              headers: Mapping[str, str]) -> CacheLookup:
        if cache is None or not isinstance(call, ChatRequest):
            return cls(None, None, None)
        if "no-cache" in headers.get("cache-control", "").lower() or not is_deterministic(call):
            return cls(cache, None, "bypass")
        return cls(cache, cache.key(tenant, call), "miss")

    @property
    def max_entry_bytes(self) -> int:
        """Largest answer the cache stores (0 without a cache): a stream keeps its chunks
        only up to this."""
        return self.cache.max_entry_bytes if self.cache is not None else 0

    async def get(self) -> ChatResponse | None:
        if self.cache is None or self.key is None:
            return None
        hit = await self.cache.get(self.key)
        if hit is not None:
            self.state = "hit"
        return hit

    async def put(self, answer: object) -> None:
        if self.cache is not None and self.key is not None and isinstance(answer, ChatResponse):
            await self.cache.put(self.key, answer)

    async def put_stream(self, chunks: Sequence[object]) -> None:
        if self.cache is None or self.key is None:
            return
        response = assemble([c for c in chunks if isinstance(c, ChatChunk)])
        if response is not None:
            await self.cache.put(self.key, response)

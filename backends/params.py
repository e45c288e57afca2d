"""What each backend kind does with each OpenAI request parameter: one declarative table.

Every property of OpenAI's ``CreateChatCompletionRequest`` and ``CreateCompletionRequest`` has
an entry for every backend kind (``sglang``, ``openai``, ``anthropic``):

* ``passed``: sent upstream as the client wrote it;
* ``translated``: rewritten into the upstream's own field (the note says into what);
* ``dropped``: left out, always, because the upstream has no use for it and leaving it out
  changes nothing the client can observe (a storage flag, a cache hint);
* ``refused``: a 400 naming the parameter and the backend kind, because the upstream cannot do
  what it asks and silently ignoring it would hand the client something else. The policy's
  ``drop_unsupported_params`` (per model or deployment) turns a refusal into a drop.

Some rules depend on the value (``n`` is refused only above 1, ``temperature`` on Anthropic only
above 1): ``Rule.refuses`` says when. ``fit_params`` applies the table in one place, right before
a request goes to a backend (``gateway/completions.py``); the Anthropic translation
(``backends/anthropic_translate.py``) does the translating. ``render_markdown`` writes the table
into ``docs/api.md``; ``python -m backends.params docs/api.md`` refreshes it.
"""

from __future__ import annotations

import enum
import functools
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from msgspec import UNSET

from backends.errors import UnsupportedError
from backends.types import ChatRequest, EmbeddingRequest, TextRequest

KINDS = ("sglang", "openai", "anthropic")
"""Every backend kind, in the order the docs show them."""
R = TypeVar("R", ChatRequest, TextRequest, EmbeddingRequest)


class Action(enum.Enum):
    """What a backend kind does with one parameter."""

    PASSED = "passed"
    TRANSLATED = "translated"
    DROPPED = "dropped"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Rule:
    """One cell of the table.

    Args:
        action: What happens to the parameter.
        note: Into what it is translated, or why it is dropped or refused.
        refuses_if: For a ``translated`` or ``passed`` rule, the values that are refused
            anyway (``n`` above 1); ``None`` for an unconditional rule.
    """

    action: Action
    note: str = ""
    refuses_if: Callable[[Any], bool] | None = None

    def refuses(self, value: Any) -> bool:
        """Whether this value (never ``None``) makes the request one to refuse. A ``refused``
        rule with ``refuses_if`` drops the values it lets through (a penalty of 0)."""
        if self.refuses_if is not None:
            return self.refuses_if(value)
        return self.action is Action.REFUSED


def _passed(note: str = "") -> Rule:
    return Rule(Action.PASSED, note)


def _translated(note: str, refuses_if: Callable[[Any], bool] | None = None) -> Rule:
    return Rule(Action.TRANSLATED, note, refuses_if)


def _dropped(note: str) -> Rule:
    return Rule(Action.DROPPED, note)


def _refused(note: str, refuses_if: Callable[[Any], bool] | None = None) -> Rule:
    return Rule(Action.REFUSED, note, refuses_if)


def _number_above(limit: float) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > limit


def _nonzero(value: Any) -> bool:
    return bool(value != 0)


def _non_empty(value: Any) -> bool:
    return bool(value)


def _not_text_only(modalities: Any) -> bool:
    return isinstance(modalities, list) and any(m != "text" for m in modalities)


def _json_object(response_format: Any) -> bool:
    return isinstance(response_format, dict) and response_format.get("type") == "json_object"


def _no_standard_tier(tier: Any) -> bool:
    return tier not in ("auto", "default")


_MODEL = _translated("the deployment's upstream model name")
_STREAM_OPTIONS = _translated("`include_usage` is always asked for (the gateway meters every "
                              "stream) and the usage chunk removed again unless the client asked")
_SGLANG_IGNORES = "SGLang 0.5.23 has no such field and would ignore it"

# The Anthropic column, also the reference for what anthropic_translate.py implements.
_ANTHROPIC: dict[str, Rule] = {
    "audio": _refused("Claude does not speak"),
    "frequency_penalty": _refused("Claude has no repetition penalties (0 is left out)", _nonzero),
    "function_call": _refused("legacy function calling: use `tools` and `tool_choice`"),
    "functions": _refused("legacy function calling: use `tools`"),
    "logit_bias": _refused("Claude takes no token biases (`{}` is left out)", _non_empty),
    "logprobs": _translated("`false` is left out; `true` is refused: Claude returns no logprobs",
                            lambda v: v is True),
    "max_completion_tokens": _translated("`max_tokens` (which Anthropic requires; 4096 when "
                                         "neither limit is set)"),
    "max_tokens": _translated("`max_tokens`"),
    "messages": _translated("`system` + alternating `messages`; tool calls and results, images, "
                            "signed thinking blocks (`thinking_blocks`) placed first in their turn"),
    "metadata": _dropped("OpenAI's stored-completion tags; Anthropic's `metadata` holds only "
                         "`user_id`, which comes from `safety_identifier` or `user`"),
    "modalities": _refused("Claude answers in text only (`[\"text\"]` is left out)", _not_text_only),
    "moderation": _refused("OpenAI's own moderation run; use the gateway's moderation policy"),
    "n": _translated("1 is left out; more than 1 is refused: one message per request",
                     _number_above(1)),
    "parallel_tool_calls": _translated("`false` sets `tool_choice.disable_parallel_tool_use`"),
    "prediction": _dropped("a latency hint (predicted output); the answer is the same without it"),
    "presence_penalty": _refused("Claude has no repetition penalties (0 is left out)", _nonzero),
    "prompt_cache_key": _dropped("an OpenAI cache-routing hint; Anthropic caches by "
                                 "`cache_control` marks (the backend's `prompt_caching`)"),
    "prompt_cache_options": _dropped("OpenAI prompt-cache settings; see `prompt_cache_key`"),
    "prompt_cache_retention": _dropped("OpenAI prompt-cache settings; see `prompt_cache_key`"),
    "reasoning_effort": _translated("`thinking`: `none` -> `disabled`; `minimal` 1024, `low` 2048, "
                                    "`medium` 8192, `high` 16384, `xhigh` 32768, `max` 65536 "
                                    "`budget_tokens` (see below)"),
    "response_format": _translated("`json_schema` -> `output_config.format` (`{type: json_schema, "
                                   "schema}`); `text` is left out; `json_object` is refused: "
                                   "Claude has no schema-less JSON mode", _json_object),
    "safety_identifier": _translated("`metadata.user_id` (wins over `user`)"),
    "seed": _dropped("Claude takes no seed; OpenAI documents it as best effort only"),
    "service_tier": _translated("`auto` -> `auto`, `default` -> `standard_only`; `flex`, "
                                "`scale`, `priority` are refused", _no_standard_tier),
    "stop": _translated("`stop_sequences`"),
    "store": _dropped("OpenAI-side storage of the completion; Anthropic stores nothing"),
    "stream": _translated("Anthropic's event stream, translated back to chunks"),
    "stream_options": _STREAM_OPTIONS,
    "temperature": _translated("passed when at most 1 (Anthropic's range is 0-1); above 1 "
                               "refused", _number_above(1)),
    "tool_choice": _translated("`auto`/`required`/`none`/named -> `auto`/`any`/`none`/`tool`"),
    "tools": _translated("function tools -> `{name, description, input_schema}`; other tool "
                         "types are refused"),
    "top_logprobs": _refused("Claude returns no logprobs (0 is left out)", _nonzero),
    "top_p": _translated("passed alone; dropped when `temperature` is set too (current Claude "
                         "models refuse the pair; `temperature` wins)"),
    "user": _translated("`metadata.user_id`"),
    "verbosity": _dropped("a length hint Claude has no field for"),
    "web_search_options": _refused("Anthropic's web search is a server tool with its own shape; "
                                   "send it in `tools` through the Anthropic door"),
}

_SGLANG: dict[str, Rule] = {
    "audio": _refused("no audio output (" + _SGLANG_IGNORES + ")"),
    "function_call": _refused("legacy function calling: use `tools` (" + _SGLANG_IGNORES + ")"),
    "functions": _refused("legacy function calling: use `tools` (" + _SGLANG_IGNORES + ")"),
    "metadata": _dropped(_SGLANG_IGNORES),
    "modalities": _refused("text output only (`[\"text\"]` is left out)", _not_text_only),
    "moderation": _refused("OpenAI's own moderation run; use the gateway's moderation policy"),
    "prediction": _dropped(_SGLANG_IGNORES + " (a latency hint only)"),
    "prompt_cache_key": _dropped(_SGLANG_IGNORES + "; the gateway's cache-aware routing "
                                 "places prompts by prefix"),
    "prompt_cache_options": _dropped(_SGLANG_IGNORES),
    "prompt_cache_retention": _dropped(_SGLANG_IGNORES),
    "reasoning_effort": _passed("SGLang maps it to the chat template's thinking switch"),
    "response_format": _passed("SGLang constrains decoding to the JSON schema"),
    "safety_identifier": _dropped(_SGLANG_IGNORES),
    "service_tier": _dropped(_SGLANG_IGNORES),
    "store": _dropped(_SGLANG_IGNORES),
    "verbosity": _dropped(_SGLANG_IGNORES),
    "web_search_options": _refused("no web search (" + _SGLANG_IGNORES + ")"),
}

CHAT_PARAMS = (
    "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
    "max_completion_tokens", "max_tokens", "messages", "metadata", "modalities", "model",
    "moderation", "n", "parallel_tool_calls", "prediction", "presence_penalty",
    "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention", "reasoning_effort",
    "response_format", "safety_identifier", "seed", "service_tier", "stop", "store", "stream",
    "stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user",
    "verbosity", "web_search_options",
)
"""The properties of OpenAI's ``CreateChatCompletionRequest`` (spec 2.3.0)."""
TEXT_PARAMS = (
    "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "model", "n",
    "presence_penalty", "prompt", "seed", "stop", "stream", "stream_options", "suffix",
    "temperature", "top_p", "user",
)
"""The properties of OpenAI's ``CreateCompletionRequest`` (spec 2.3.0)."""
SPEC_PARAMS = frozenset(CHAT_PARAMS) | frozenset(TEXT_PARAMS)
"""Every OpenAI request parameter: an extra of one of these names is never forwarded raw."""


def _chat_rule(kind: str, name: str) -> Rule:
    if name == "model":
        return _MODEL
    if name == "stream_options":
        return _STREAM_OPTIONS
    if kind == "anthropic":
        return _ANTHROPIC[name]
    if kind == "sglang":
        return _SGLANG.get(name, _passed())
    return _passed()


def _text_rule(kind: str, name: str) -> Rule:
    if kind == "anthropic":
        return _refused("the Messages API has no text completions: the whole endpoint is refused")
    if name == "model":
        return _MODEL
    return _STREAM_OPTIONS if name == "stream_options" else _passed()


CHAT_TABLE: Mapping[str, Mapping[str, Rule]] = {
    name: {kind: _chat_rule(kind, name) for kind in KINDS} for name in CHAT_PARAMS
}
"""``/v1/chat/completions``: parameter -> backend kind -> rule."""
TEXT_TABLE: Mapping[str, Mapping[str, Rule]] = {
    name: {kind: _text_rule(kind, name) for kind in KINDS} for name in TEXT_PARAMS
}
"""``/v1/completions``: parameter -> backend kind -> rule."""
EMBEDDING_TABLE: Mapping[str, Mapping[str, Rule]] = {
    "model": {"sglang": _MODEL, "openai": _MODEL},
    **{name: {"sglang": _passed(), "openai": _passed()} for name in ("input", "encoding_format", "dimensions", "user")},
}
"""``/v1/embeddings`` (Anthropic has no embeddings API: a policy cannot put an embedding model there)."""
EXTRAS: Mapping[str, str] = {
    "sglang": "passed (SGLang's own sampling and constraint fields: `top_k`, `min_p`, `regex`, "
              "`ebnf`, `json_schema`, `chat_template_kwargs`, ...)",
    "openai": "passed (a provider's own fields reach it unchanged)",
    "anthropic": "passed raw into the Messages API body (`top_k`, `thinking`, `output_config`, "
                 "`cache_control`, ...: Anthropic-only fields sent with the SDK's `extra_body`); "
                 "one the API does not know is its 400, relayed",
}
"""What each kind does with a top-level field that is not an OpenAI parameter."""


def _table(request: ChatRequest | TextRequest | EmbeddingRequest) -> Mapping[str, Mapping[str, Rule]]:
    if isinstance(request, EmbeddingRequest):
        return EMBEDDING_TABLE
    return CHAT_TABLE if isinstance(request, ChatRequest) else TEXT_TABLE


Row = tuple[str, Mapping[str, Rule], bool]
"""A table entry with whether the parameter is a declared field of the request's params."""


def _rows(request: ChatRequest | TextRequest | EmbeddingRequest) -> tuple[Row, ...]:
    return _rows_of(type(request), type(request.params))


@functools.cache
def _rows_of(request_type: type, params_type: type[msgspec.Struct]) -> tuple[Row, ...]:
    # once per request type: which of the ~40 names are struct fields (read with getattr) and
    # which would be extras; every request walks the table, so the membership tests were half
    # of fit_params (docs/performance.md)
    table = (EMBEDDING_TABLE if issubclass(request_type, EmbeddingRequest)
             else CHAT_TABLE if issubclass(request_type, ChatRequest) else TEXT_TABLE)
    fields = set(params_type.__struct_fields__)
    return tuple((name, rules, name in fields) for name, rules in table.items())


def param_value(request: ChatRequest | TextRequest | EmbeddingRequest, name: str) -> Any:
    """The value of parameter ``name``, declared or an extra; ``UNSET`` when not sent."""
    params = request.params
    if name in type(params).__struct_fields__:
        return getattr(params, name)
    return request.extra.get(name, UNSET)


def _refusal(name: str, kind: str, rule: Rule, value: Any) -> UnsupportedError:
    shown = msgspec.json.encode(value).decode() if not isinstance(value, (dict, list)) else ""
    detail = f" {shown}" if shown and len(shown) <= 40 else ""
    return UnsupportedError(
        f"'{name}'{detail} is not supported by {kind} deployments: {rule.note} "
        "(the policy's drop_unsupported_params would drop it instead)",
        param=name,
    )


def unsupported(request: ChatRequest | TextRequest | EmbeddingRequest, kind: str) -> list[tuple[str, Rule, Any]]:
    """The parameters ``request`` sets that ``kind`` refuses, with their rule and value."""
    out: list[tuple[str, Rule, Any]] = []
    params, extra = request.params, request.extra
    for name, rules, declared in _rows(request):
        value = getattr(params, name) if declared else extra.get(name, UNSET)
        if value is UNSET or value is None:
            continue
        rule = rules.get(kind)
        if rule is not None and rule.refuses(value):
            out.append((name, rule, value))
    return out


def check_supported(request: ChatRequest | TextRequest | EmbeddingRequest, kind: str) -> None:
    """Raise ``UnsupportedError`` (400, ``param`` set) for the first parameter ``kind`` refuses."""
    for name, rule, value in unsupported(request, kind):
        raise _refusal(name, kind, rule, value)


def fit_params(request: R, kind: str, *, drop_unsupported: bool = False,
               also_check: Iterable[tuple[str, bool]] = ()) -> R:
    """The request as a backend of ``kind`` may receive it: refused parameters raise, dropped
    ones are left out. Translation is the backend's (only Anthropic translates).

    Args:
        request: The request as the client sent it (upstream model already set).
        kind: The backend kind that will receive it.
        drop_unsupported: The policy's ``drop_unsupported_params`` for this deployment: what
            ``kind`` refuses is dropped instead.
        also_check: ``(kind, drop_unsupported)`` of other deployments that could have served
            the request (both tiers of a difficulty route): what any of them refuses is
            refused here too, so whether a request fails does not depend on the tier picked.

    Raises:
        UnsupportedError: A parameter is refused; the message names it and the kind.
    """
    for other, other_drops in also_check:
        if not other_drops:
            check_supported(request, other)
    dropped: list[str] = []
    params, extra = request.params, request.extra
    for name, rules, declared in _rows(request):
        value = getattr(params, name) if declared else extra.get(name, UNSET)
        if value is UNSET:
            continue
        rule = rules.get(kind)
        if rule is None:
            continue
        if value is not None and rule.refuses(value):
            if not drop_unsupported:
                raise _refusal(name, kind, rule, value)
            dropped.append(name)
        elif rule.action in (Action.DROPPED, Action.REFUSED):
            dropped.append(name)  # an explicit null of a field the upstream does not know
    return _without(request, dropped) if dropped else request


def _without(request: R, names: list[str]) -> R:
    fields = type(request.params).__struct_fields__
    declared = {n: UNSET for n in names if n in fields}
    params = msgspec.structs.replace(request.params, **declared) if declared else request.params
    extra = {k: v for k, v in request.extra.items() if k not in names}
    return msgspec.structs.replace(request, params=params, extra=extra)


# --- docs ---------------------------------------------------------------------------------

BEGIN_MARK = "<!-- BEGIN generated parameter table (python -m backends.params docs/api.md) -->"
END_MARK = "<!-- END generated parameter table -->"


def _cell(rule: Rule) -> str:
    note = rule.note.replace("|", "\\|")
    return f"{rule.action.value}: {note}" if note else rule.action.value


def _markdown_table(table: Mapping[str, Mapping[str, Rule]]) -> list[str]:
    lines = ["| parameter | " + " | ".join(KINDS) + " |", "|---" * (len(KINDS) + 1) + "|"]
    for name, rules in table.items():
        lines.append(f"| `{name}` | " + " | ".join(_cell(rules[k]) for k in KINDS) + " |")
    return lines


def render_markdown() -> str:
    """The generated section of ``docs/api.md``, markers included."""
    lines = [BEGIN_MARK, "", "#### `POST /v1/chat/completions`", "", *_markdown_table(CHAT_TABLE),
             "", "#### `POST /v1/completions`", "", *_markdown_table(TEXT_TABLE), "",
             "#### Top-level fields that are not OpenAI parameters", "",
             "| backend kind | what happens |", "|---|---|"]
    lines += [f"| {kind} | {EXTRAS[kind]} |" for kind in KINDS]
    return "\n".join([*lines, "", END_MARK])


def with_table(document: str) -> str:
    """``document`` with the text between the markers replaced by ``render_markdown()``."""
    start, end = document.find(BEGIN_MARK), document.find(END_MARK)
    if start < 0 or end < start:
        raise ValueError(f"the document has no {BEGIN_MARK!r} ... {END_MARK!r} section")
    return document[:start] + render_markdown() + document[end + len(END_MARK):]


def main(argv: list[str]) -> int:
    """``python -m backends.params PATH``: rewrite the table section of PATH in place."""
    if len(argv) != 1:
        print("usage: python -m backends.params docs/api.md", file=sys.stderr)
        return 2
    path = Path(argv[0])
    path.write_text(with_table(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

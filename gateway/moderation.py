"""Moderation in the request path: the request's messages, a JSON answer, a stream as it flows.

The checks themselves live in ``policies.moderation``; this module applies their verdicts to
the wire types: a blocked request becomes 400 ``content_policy_violation``, a blocked answer
ends with ``finish_reason: "content_filter"`` (OpenAI's convention), redactions replace the
text in place. Every finding goes to the request's telemetry, never the text.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from backends import open_wire
from backends.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    FunctionCall,
    Message,
    TextRequest,
    TextResponse,
    ToolCall,
    ToolCallDelta,
)
from gateway.guard_check import consult_guard
from gateway.telemetry import RequestRecord
from policies.moderation import Echo, ModerationConfig, Moderator, StreamModerator
from policies.moderation.config import StreamMode
from policies.moderation.rules import Scorer
from policies.moderation.scorers import ModerationModels
from policies.moderation.verdict import ContentPolicyViolation, Finding

CONTENT_FILTER = "content_filter"
Call = TypeVar("Call", ChatRequest, TextRequest, EmbeddingRequest)


class ModerationPolicies:
    """The moderators of one policy revision: per tenant, per model, and a default.

    The most specific wins: the tenant's section, else the model's, else ``default``. Each
    section's ``classifier`` picks its scorer from ``classifiers`` (the cascade is loaded then,
    once per process, by the first section that names it and checks a category).
    """

    def __init__(self, default: ModerationConfig | None, models: Mapping[str, ModerationConfig],
                 tenants: Mapping[str, ModerationConfig], classifiers: ModerationModels | None) -> None:
        built: dict[int, Moderator] = {}

        def moderator(config: ModerationConfig) -> Moderator:
            if id(config) not in built:
                built[id(config)] = Moderator(config, *_classifiers(config, classifiers))
            return built[id(config)]

        self._default = moderator(default) if default is not None else None
        self._models = {name: moderator(config) for name, config in models.items()}
        self._tenants = {name: moderator(config) for name, config in tenants.items()}

    def for_request(self, tenant: str, model: str) -> Moderator | None:
        return self._tenants.get(tenant) or self._models.get(model) or self._default


def _classifiers(config: ModerationConfig, classifiers: ModerationModels | None) -> tuple[Scorer | None, Scorer | None]:
    """The scorer ``config`` names and its running scorer; the cascade only if a side checks a
    category (else it would load the encoder for nothing)."""
    checks = any(side is not None and side.categories for side in (config.input, config.output))
    if classifiers is None or not checks:
        return classifiers, None
    return classifiers.get(config.classifier), classifiers.running(config.classifier)


def off_loop(moderator: Moderator) -> bool:
    """Whether the moderator's checks can cost milliseconds a window (the cascade's encoder):
    then every check runs in a worker thread, not only long inputs."""
    return moderator.config.classifier == "cascade"


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only the text parts are read
        return "\n".join(part.text for part in content if isinstance(getattr(part, "text", None), str))
    return ""


OFFLOAD_CHARS = 2_000
"""Input text above which moderation runs in a worker thread. Checking costs ~2.3 µs a
character on one core (classifier windows, terms, PII), so 2,000 characters is ~5 ms: past
that, the event loop would stall every other request while one prompt is read."""


@dataclass(frozen=True, slots=True)
class _InputOutcome:
    call: Any
    findings: tuple[Finding, ...]
    blocked: Finding | None = None
    param: str | None = None
    borderline: str = ""
    """The checked text the classifier found borderline (joined), for the guard model."""


async def check_request(moderator: Moderator, call: Call, record: RequestRecord) -> Call:
    """Check the request's text; raise ``ContentPolicyViolation`` if it is blocked, return it
    with any ``redact`` spans replaced otherwise. Long inputs are checked off the event loop."""
    roles = moderator.input_roles
    if not roles:
        return call
    started = time.perf_counter()
    with record.phase("switchyard.moderation.input"):
        if input_chars(call, roles) > OFFLOAD_CHARS or off_loop(moderator):
            outcome = await asyncio.to_thread(_moderate_input, moderator, call, roles)
        else:
            outcome = _moderate_input(moderator, call, roles)
        record.moderated("input", outcome.findings, time.perf_counter() - started)
    if outcome.blocked is None and outcome.borderline:
        # only borderline text goes to the guard model: it decides those, the local model the rest
        second = await consult_guard(moderator, outcome.borderline, "input", record)
        record.moderated("input", second, 0.0)
        blocked = next((f for f in second if f.action == "block"), None)
        if blocked is not None:
            raise ContentPolicyViolation.of(blocked)
    if outcome.blocked is not None:
        raise ContentPolicyViolation.of(outcome.blocked, param=outcome.param)
    result: Call = outcome.call
    return result


def answered_text(call: object) -> str:
    """The text an answer replies to: a chat's last user message, or a completion's prompt
    (what ``Echo`` reads the client's own words from)."""
    if isinstance(call, TextRequest):
        prompt = call.params.prompt
        return prompt if isinstance(prompt, str) else ""
    if isinstance(call, ChatRequest):
        for message in reversed(call.params.messages):
            if message.role == "user":
                return _text_of(message.content)
    return ""


def input_chars(call: ChatRequest | TextRequest | EmbeddingRequest, roles: tuple[str, ...]) -> int:
    """Characters of ``call``'s text that the input checks read."""
    if isinstance(call, EmbeddingRequest):
        value = call.params.input
        return len(value) if isinstance(value, str) else sum(len(v) for v in value if isinstance(v, str))
    if isinstance(call, TextRequest):
        prompt = call.params.prompt
        return len(prompt) if isinstance(prompt, str) else 8 * len(prompt)  # token ids, printed
    return sum(len(_text_of(m.content)) for m in call.params.messages if m.role in roles)


def _moderate_input(moderator: Moderator, call: ChatRequest | TextRequest | EmbeddingRequest,
                    roles: tuple[str, ...]) -> _InputOutcome:
    """The checks themselves: pure, so they can run in a worker thread."""
    if isinstance(call, EmbeddingRequest):
        return _moderate_embedding(moderator, call)
    if isinstance(call, TextRequest):
        prompt = call.params.prompt
        text = prompt if isinstance(prompt, str) else "\n".join(map(str, prompt))
        verdict = moderator.check_text(text, "input")
        if verdict.blocked is not None:
            return _InputOutcome(call, verdict.findings, verdict.blocked, "prompt")
        if verdict.redacted and isinstance(prompt, str):
            call = msgspec.structs.replace(call, params=open_wire.replace(call.params, prompt=verdict.text))
        return _InputOutcome(call, verdict.findings)
    messages: list[Message] = []
    changed = False
    findings: list[Finding] = []
    borderline: list[str] = []
    for message in call.params.messages:
        text = _text_of(message.content) if message.role in roles else ""
        if text:
            verdict = moderator.check_text(text, "input")
            findings += verdict.findings
            if verdict.borderline:
                borderline.append(verdict.text)
            if verdict.blocked is not None:
                return _InputOutcome(call, tuple(findings), verdict.blocked)
            # content parts are checked, not rewritten: a redaction applies to plain text only
            if verdict.redacted and isinstance(message.content, str):
                message = open_wire.replace(message, content=verdict.text)
                changed = True
        messages.append(message)
    if changed:
        call = msgspec.structs.replace(call, params=open_wire.replace(call.params, messages=messages))
    return _InputOutcome(call, tuple(findings), borderline="\n\n".join(borderline))


def _moderate_embedding(moderator: Moderator, call: EmbeddingRequest) -> _InputOutcome:
    """Every text input is checked (token arrays are not text); a redaction rewrites it."""
    value = call.params.input
    texts = [value] if isinstance(value, str) else value
    findings: list[Finding] = []
    changed: list[Any] = []
    for index, text in enumerate(texts):
        if isinstance(text, str):
            verdict = moderator.check_text(text, "input")
            findings += verdict.findings
            if verdict.blocked is not None:
                return _InputOutcome(call, tuple(findings), verdict.blocked,
                                     "input" if isinstance(value, str) else f"input[{index}]")
            text = verdict.text if verdict.redacted else text
        changed.append(text)
    if changed != texts:
        new_input = changed[0] if isinstance(value, str) else changed
        call = msgspec.structs.replace(call, params=open_wire.replace(call.params, input=new_input))
    return _InputOutcome(call, tuple(findings))


def check_answer(moderator: Moderator, answer: ChatResponse | TextResponse,
                 record: RequestRecord) -> list[tuple[Any, str]]:
    """Moderate a whole answer in place: redact, or cut a blocked choice to what precedes the
    blocking window with ``finish_reason: content_filter``; tool arguments likewise. Returns
    the choices whose text the classifier found borderline, with that text (``guard_answer``)."""
    if not moderator.checks_output:
        return []
    started = time.perf_counter()
    findings: list[Finding] = []
    borderline: list[tuple[Any, str]] = []
    choice: Any
    for choice in answer.choices:
        reasoning = getattr(getattr(choice, "message", None), "reasoning_content", None)
        if isinstance(reasoning, str) and reasoning:  # reasoning reaches the client too
            verdict = moderator.check_text(reasoning, "output")
            findings += verdict.findings
            choice.message.reasoning_content = verdict.text
            if verdict.blocked is not None:
                choice.message.content = None
                _cut(choice)
                continue
            if verdict.borderline:
                borderline.append((choice, verdict.text))
        text = choice.message.content if hasattr(choice, "message") else choice.text
        if isinstance(text, str) and text:
            verdict = moderator.check_text(text, "output")
            findings += verdict.findings
            _set_choice_text(choice, verdict.text)
            if verdict.blocked is not None:
                _cut(choice)
                continue
            if verdict.borderline:
                borderline.append((choice, verdict.text))
        for call in getattr(getattr(choice, "message", None), "tool_calls", None) or ():
            verdict = moderator.check_tool_arguments(call.arguments)
            findings += verdict.findings
            if verdict.blocked is not None:
                choice.message.tool_calls = msgspec.UNSET
                choice.finish_reason = CONTENT_FILTER
                break
            if verdict.text != call.arguments:
                _set_arguments(call, verdict.text)
    record.moderated("output", tuple(findings), time.perf_counter() - started)
    return borderline


async def guard_answer(moderator: Moderator, borderline: list[tuple[Any, str]], record: RequestRecord) -> None:
    """Ask the policy's guard model about each text (answer or reasoning) ``check_answer``
    found borderline; a choice it blocks is cut whole, reasoning and answer (the guard judged
    all of that text). Nothing without a guard."""
    for choice, text in borderline:
        if choice.finish_reason == CONTENT_FILTER:
            continue  # cut already (its reasoning was blocked)
        findings = await consult_guard(moderator, text, "output", record)
        record.moderated("output", findings, 0.0)
        if any(f.action == "block" for f in findings):
            _set_choice_text(choice, "")
            message = getattr(choice, "message", None)
            if message is not None and isinstance(message.reasoning_content, str):
                message.reasoning_content = ""
            _cut(choice)


def _cut(choice: Any) -> None:
    """End a whole answer's choice as blocked: ``content_filter``, no tool calls."""
    choice.finish_reason = CONTENT_FILTER
    if hasattr(choice, "message"):
        choice.message.tool_calls = msgspec.UNSET


def _set_arguments(call: ToolCall, text: str) -> None:
    if isinstance(call.function, FunctionCall):
        call.function.arguments = text
    elif isinstance(call.custom, dict):
        call.custom["input"] = text


def _set_choice_text(choice: Any, text: str) -> None:
    if hasattr(choice, "message"):
        choice.message.content = text
    else:
        choice.text = text


_SENTENCE_END = re.compile(r"[.!?…\n]")
_TAIL = 4
"""Characters a sentence end may precede the whitespace that cuts its window by (closing
quotes, brackets, markdown emphasis: ``stream._SENTENCE_END``)."""
_WINDOW_TEXT = 64
"""Characters after which a chunk goes to a thread whatever it holds. A window with no sentence
end is cut at ``window_chars`` (96 at least); the chunk that fills it may still come within 64
characters of the last thread hop and be scored inline: ~10 ms on the loop when the encoder
reads it, for a long sentence that the n-gram model is unsure of."""


class StreamGuard:
    """Moderates a stream chunk by chunk: one ``StreamModerator`` per choice index.

    ``apply(chunk)`` rewrites the chunk's text to what may be sent now and returns False once
    the stream is blocked: the relay then sends ``final_chunk`` and stops the upstream.
    Tool-call deltas are held back until their choice finishes, then checked whole.

    With a guard model in the policy, a window the classifier finds borderline is held, with
    what its chunk releases after it, until ``consult`` has the guard's answer (``asking``);
    in ``async`` mode the text is out already and the answer can only end the stream.
    """

    def __init__(self, moderator: Moderator, record: RequestRecord, echo: Echo | None = None) -> None:
        self._moderator = moderator
        self._record = record
        self._echo = echo  # the request's words, released past a borderline running score
        self._streams: dict[int, StreamModerator] = {}
        self._tool_chunks: dict[int, list[Any]] = {}
        self.blocked: Finding | None = None
        self._spent = 0.0
        self._held = 0
        self._offloads = off_loop(moderator)
        self._tail = ""  # the last characters seen, and how many since a chunk went to a thread
        self._unchecked = 0
        output = moderator.config.output
        self._mode = output.mode if output is not None else "buffered"
        self._guarded = moderator.config.guard is not None
        self._questions: list[str] = []  # borderline windows the guard has not answered yet
        # per stream key (a choice's answer, or its reasoning): where its text goes back, the text
        self._withheld: dict[int, tuple[Any, bool, str]] = {}

    def _stream(self, index: int) -> StreamModerator:
        stream = self._streams.get(index)
        if stream is None:
            # reasoning is released whole-window (buffered) unless the policy says async: a
            # native thinking block is re-emitted with its signature, which the door can keep
            # only if the block's text comes out in the pieces it tracks
            mode: StreamMode | None = "buffered" if index < 0 and self._mode == "incremental" else None
            created = self._moderator.stream(mode, self._echo)
            assert created is not None
            created.collect_borderline = self._guarded
            stream = self._streams[index] = created
        return stream

    def needs_thread(self, chunk: ChatChunk | TextResponse) -> bool:
        """Whether ``apply(chunk)`` may run the cascade's encoder (milliseconds), so the relay
        should run it in a worker thread; a thread hop costs ~0.1 ms of CPU, more than most
        chunks' checks. The encoder reads complete windows, which end at a sentence end (a
        ``.!?…`` or newline within the last few characters), when a window's worth of text
        (``_WINDOW_TEXT``) has arrived, or when a choice finishes (the rest, tool arguments)."""
        if not self._offloads:
            return False
        text = ""
        for choice in chunk.choices:
            if choice.finish_reason is not None:
                text = "\n"
                break
            delta = getattr(choice, "delta", None)
            parts = ((delta.content, getattr(delta, "reasoning_content", None)) if delta is not None
                     else (getattr(choice, "text", None),))
            text += "".join(p for p in parts if isinstance(p, str))
        self._tail = (self._tail + text)[-_TAIL:]
        self._unchecked += len(text)
        if self._unchecked < _WINDOW_TEXT and not _SENTENCE_END.search(self._tail):
            return False
        self._unchecked = 0
        return True

    def apply(self, chunk: ChatChunk | TextResponse) -> list[ChatChunk | TextResponse]:
        """The chunks to send for this upstream chunk (none, it, or held tool chunks with it)."""
        started = time.perf_counter()
        out: list[Any] = [chunk]
        for choice in chunk.choices:
            delta = getattr(choice, "delta", None)
            text = delta.content if delta is not None else getattr(choice, "text", None)
            if delta is not None and self._moderate_reasoning(choice.index, delta, bool(text)):
                return self._block(chunk, self.blocked)
            if isinstance(text, str) and text:
                release = self._stream(choice.index).feed(text)
                self._note(release.findings)
                _set_delta_text(choice, self._now(choice.index, release.text, choice))
                if release.blocked is not None:
                    return self._block(chunk, release.blocked)
            if delta is not None and isinstance(delta.tool_calls, list) and self._checks_tools:
                self._tool_chunks.setdefault(choice.index, []).append(chunk)
                out = []
            if choice.finish_reason is not None:
                if delta is not None and self._end_reasoning(choice.index, delta):
                    return self._block(chunk, self.blocked)
                release = self._stream(choice.index).finish()
                self._note(release.findings)
                previous = _delta_text(choice)
                _set_delta_text(choice, previous + self._now(choice.index, release.text, choice))
                if release.blocked is not None:
                    return self._block(chunk, release.blocked)
                held = self._tool_chunks.pop(choice.index, [])
                if held:
                    checked = self._check_tools(held)
                    if checked is None:
                        return self._block(chunk, self.blocked)
                    out = [*checked, chunk] if chunk not in checked else checked
        self._spent += time.perf_counter() - started
        withheld = sum(len(text) for _, _, text in self._withheld.values()) if self._withheld else 0
        self._held = max(self._held, sum(s.held for s in self._streams.values()) + withheld)
        self._seen(out)
        return out

    def _seen(self, out: list[ChatChunk | TextResponse]) -> None:
        if self._record.first_visible_at is None and any(map(_is_visible, out)):
            self._record.first_visible()

    def _now(self, key: int, text: str, target: Any, stream: StreamModerator | None = None) -> str:
        """What of the text stream ``key`` released goes now: all of it, unless a borderline
        window waits for the guard's answer (it and what follows it wait with it, and go back
        into this chunk's ``target``, a choice or, for reasoning, a delta, if the guard lets them)."""
        if not self._guarded:
            return text
        self._questions += (stream or self._streams[key]).take_borderline()
        if self._mode == "async" or not self._questions:  # questions wait only within this chunk
            return text
        before = self._withheld[key][2] if key in self._withheld else ""
        self._withheld[key] = (target, key < 0, before + text)
        return ""

    @property
    def asking(self) -> bool:
        """Whether borderline windows wait for the guard (the relay then awaits ``consult``)."""
        return bool(self._questions) and self.blocked is None

    async def consult(self, chunk: ChatChunk | TextResponse,
                      out: list[ChatChunk | TextResponse]) -> list[ChatChunk | TextResponse]:
        """Ask the guard about the borderline windows; ``out`` (what ``apply(chunk)`` returned)
        with the withheld text back in place, or the blocking final chunk."""
        question, self._questions = "\n\n".join(self._questions), []
        withheld, self._withheld = self._withheld, {}
        findings = await consult_guard(self._moderator, question, "output", self._record)
        self._note(findings)
        blocked = next((f for f in findings if f.action == "block"), None)
        if blocked is not None:
            return self._block(chunk, blocked)
        for target, reasoning, text in withheld.values():
            if reasoning:
                before = target.reasoning_content if isinstance(target.reasoning_content, str) else ""
                target.reasoning_content = before + text
            else:
                _set_delta_text(target, _delta_text(target) + text)
        self._seen(out)
        return out

    def _moderate_reasoning(self, index: int, delta: Any, answer_begins: bool) -> bool:
        """Moderate a delta's reasoning in its own window (keyed apart from the answer's);
        once the answer begins, release what the reasoning window still holds, before it.
        True when the reasoning is blocked."""
        reasoning = delta.reasoning_content
        if isinstance(reasoning, str) and reasoning:
            release = self._stream(_reasoning_key(index)).feed(reasoning)
            self._note(release.findings)
            delta.reasoning_content = self._now(_reasoning_key(index), release.text, delta)
            if release.blocked is not None:
                return self._reasoning_blocked(delta, release.blocked)
        return answer_begins and self._end_reasoning(index, delta)

    def _end_reasoning(self, index: int, delta: Any) -> bool:
        stream = self._streams.pop(_reasoning_key(index), None)
        if stream is None:
            return False
        release = stream.finish()
        self._note(release.findings)
        if release.blocked is not None:
            return self._reasoning_blocked(delta, release.blocked)
        text = self._now(_reasoning_key(index), release.text, delta, stream)
        if text:
            before = delta.reasoning_content if isinstance(delta.reasoning_content, str) else ""
            delta.reasoning_content = before + text
        return False

    def _reasoning_blocked(self, delta: Any, finding: Finding) -> bool:
        self.blocked = finding
        if isinstance(delta.content, str):
            delta.content = ""  # this chunk's answer text was not checked yet: none of it goes
        return True

    @property
    def _checks_tools(self) -> bool:
        output = self._moderator.config.output
        return output is not None and output.tool_arguments

    def _check_tools(self, held: list[ChatChunk]) -> list[ChatChunk] | None:
        arguments: dict[int, list[str]] = {}
        for call in _tool_deltas(held):
            fragment = call.function.get("arguments") if isinstance(call.function, dict) else None
            if isinstance(fragment, str):
                arguments.setdefault(call.index, []).append(fragment)
        redacted: dict[int, str] = {}
        for index, parts in arguments.items():
            verdict = self._moderator.check_tool_arguments("".join(parts))
            self._note(verdict.findings)
            if verdict.blocked is not None:
                self.blocked = verdict.blocked
                return None
            if verdict.text != "".join(parts):
                redacted[index] = verdict.text
        first_seen: set[int] = set()
        for call in _tool_deltas(held) if redacted else ():
            # send each redacted call's arguments whole, in its first fragment
            if call.index in redacted and isinstance(call.function, dict):
                call.function["arguments"] = redacted[call.index] if call.index not in first_seen else ""
                first_seen.add(call.index)
        return held

    def _block(self, chunk: ChatChunk | TextResponse, finding: Finding | None) -> list[ChatChunk | TextResponse]:
        self.blocked = finding
        for choice in chunk.choices:
            choice.finish_reason = CONTENT_FILTER
            delta = getattr(choice, "delta", None)
            if delta is not None:
                delta.tool_calls = msgspec.UNSET
        chunk.usage = msgspec.UNSET
        return [chunk]

    def _note(self, findings: tuple[Finding, ...]) -> None:
        if findings:
            self._record.moderated("output", findings, 0.0)

    def close(self) -> None:
        """Record the time spent moderating this stream and the most it held back at once."""
        self._record.moderation_s += self._spent
        self._record.held_chars = max(self._record.held_chars, self._held)


def _is_visible(chunk: ChatChunk | TextResponse) -> bool:
    """Whether a chunk carries anything the client shows: text, reasoning or a tool call."""
    for choice in chunk.choices:
        delta = getattr(choice, "delta", None)
        if delta is None:
            if getattr(choice, "text", None):
                return True
        elif delta.content or getattr(delta, "reasoning_content", None) or delta.tool_calls:
            return True
    return False


def _tool_deltas(chunks: list[ChatChunk]) -> Iterator[ToolCallDelta]:
    """Every tool-call fragment of the held chunks, in order."""
    for chunk in chunks:
        for choice in chunk.choices:
            yield from choice.delta.tool_calls or ()


def _reasoning_key(index: int) -> int:
    """The reasoning of choice ``index`` is moderated in a window of its own."""
    return -1 - index


def _delta_text(choice: Any) -> str:
    delta = getattr(choice, "delta", None)
    text = delta.content if delta is not None else choice.text
    return text if isinstance(text, str) else ""


def _set_delta_text(choice: Any, text: str) -> None:
    delta = getattr(choice, "delta", None)
    if delta is not None:
        if text or isinstance(delta.content, str):
            delta.content = text
    else:
        choice.text = text

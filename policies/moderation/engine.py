"""The moderation engine: one ``Moderator`` per policy (model or tenant), built at policy load.

    classifier = ModerationClassifier.load()               # once per process, at start-up
    moderator = Moderator(policy.moderation, classifier)   # once per policy version

    verdict = moderator.check_text(user_text, "input")     # .blocked -> 400 content_policy_violation
    stream = moderator.stream()                            # one per streamed response
    release = stream.feed(delta)                           # send release.text; stop if release.blocked
    release = stream.finish()
    verdict = moderator.check_tool_arguments(arguments_json)

A whole text is checked exactly as a stream of it would be (same windows, same verdicts), so a
non-streamed answer and a streamed one are treated alike. Nothing here logs or stores text.
"""

from __future__ import annotations

import json
from typing import Any

from policies.moderation.categories import Category, Direction
from policies.moderation.config import ModerationConfig, StreamMode
from policies.moderation.early import AsyncStreamModerator, IncrementalStreamModerator
from policies.moderation.echo import Echo
from policies.moderation.memo import VerdictMemo
from policies.moderation.rules import Rules, Scorer, Window
from policies.moderation.stream import StreamModerator, next_cut
from policies.moderation.verdict import Finding, Verdict

__all__ = ["INPUT_WINDOW_CHARS", "Moderator"]

INPUT_WINDOW_CHARS = 160
"""Window of the input checks: the output default, so both sides read text alike."""


class Moderator:
    """Checks text against one moderation policy.

    Args:
        config: the policy's ``moderation`` section.
        classifier: the process's ``ModerationClassifier`` (any ``Scorer``); may be None only if
            neither side checks a category.
        running: scores an incremental stream's running window (default: ``classifier``).

    Raises:
        ValueError: the policy checks categories and no classifier was given.
    """

    def __init__(self, config: ModerationConfig, classifier: Scorer | None = None, running: Scorer | None = None) -> None:
        self.config = config
        self._input = Rules(config.input, classifier) if config.input is not None else None
        output = config.output
        self._output = None if output is None else Rules(
            output, classifier, release_below=output.release_below, hold_limit=output.window_chars - 1,
            running=running)
        self._window = config.output.window_chars if config.output is not None else INPUT_WINDOW_CHARS
        # each turn of a chat re-sends its history: its messages were checked on the turns before
        self.input_memo = VerdictMemo() if self._input is not None else None

    @property
    def input_roles(self) -> tuple[str, ...]:
        """Roles of the request messages to check with ``check_text(text, "input")``; empty: none."""
        return self.config.input.roles if self.config.input is not None else ()

    @property
    def checks_output(self) -> bool:
        """Whether answers are moderated (else ``stream()`` passes everything through)."""
        return self._output is not None

    def thresholds(self, direction: Direction) -> dict[Category, float]:
        """The category thresholds in force on one side (policy value or the model's tuned one)."""
        rules = self._rules(direction)
        return dict(rules.thresholds) if rules is not None else {}

    def check_text(self, text: str, direction: Direction) -> Verdict:
        """Every check of ``direction`` on a whole text.

        ``Verdict.text`` is the text with redactions; when blocked, only what precedes the
        blocking window. A side the policy does not check returns the text unchanged.
        """
        rules = self._rules(direction)
        if rules is None or not text:
            return Verdict(text)
        memo = self.input_memo if direction == "input" else None
        if memo is not None and (known := memo.get(text)) is not None:
            return known
        verdict = _check_whole(rules, text, self._window if direction == "output" else INPUT_WINDOW_CHARS)
        if memo is not None:
            memo.put(text, verdict)
        return verdict

    def stream(self, mode: StreamMode | None = None, echo: Echo | None = None) -> StreamModerator | None:
        """A new moderator for one streamed answer, in ``mode`` (default: the policy's), or None
        when the policy does not check output. ``echo``: the words of the request it answers,
        which an ``incremental`` stream releases past a borderline running score (unless the
        policy's ``release_echo`` is off)."""
        if self._output is None or self.config.output is None:
            return None
        kind = _MODES[mode or self.config.output.mode]
        if kind is IncrementalStreamModerator and echo is not None and self.config.output.release_echo:
            return IncrementalStreamModerator(self._output, self._window, echo)
        return kind(self._output, self._window)

    def check_tool_arguments(self, arguments: str, direction: Direction = "output") -> Verdict:
        """Check a tool call's JSON arguments: every string value, read together.

        The classifier and terms read the string values joined by newlines; PII is redacted
        inside each string and the JSON re-encoded only if something was redacted, so unflagged
        arguments come back byte for byte. Arguments that are not JSON are checked as text.
        Findings carry no offsets (they would point into the joined strings).
        """
        if direction == "output":
            enabled = self.config.output is not None and self.config.output.tool_arguments
        else:
            enabled = self.config.input is not None
        if not enabled:
            return Verdict(arguments)
        try:
            parsed = json.loads(arguments)
        except ValueError:
            return self.check_text(arguments, direction)
        strings = list(_strings(parsed))
        verdict = self.check_text("\n".join(strings), direction)
        findings = tuple(Finding(f.kind, f.name, f.action, f.score) for f in verdict.findings)
        if verdict.blocked is not None:
            return Verdict("", findings)
        if not verdict.redacted:
            return Verdict(arguments, findings)
        redacted = _map_strings(parsed, lambda s: self.check_text(s, direction).text)
        return Verdict(json.dumps(redacted, ensure_ascii=False), findings)

    def _rules(self, direction: Direction) -> Rules | None:
        return self._input if direction == "input" else self._output


_MODES: dict[str, type[StreamModerator]] = {
    "incremental": IncrementalStreamModerator, "buffered": StreamModerator, "async": AsyncStreamModerator}


def _check_whole(rules: Rules, text: str, window: int) -> Verdict:
    """``text`` checked as a stream of it would be; one window (most messages) directly, as
    the stream would check it at ``finish()``, without building the stream."""
    if next_cut(text, window) is None:
        outcome = rules.check([Window(text, 0, len(text), 0, tuple(rules.pii(text)))])[0]
        return Verdict("" if outcome.blocked is not None else outcome.text, outcome.findings, outcome.borderline)
    stream = StreamModerator(rules, window)
    checked = stream.whole(text)
    return Verdict(checked.text, checked.findings, stream.borderline)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _map_strings(value: Any, fn: Any) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return value

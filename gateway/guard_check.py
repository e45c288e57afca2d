"""Asking the policy's guard model about text the local classifier found borderline.

The guard's unsafe categories become findings with the action the policy gives that category
on that side (a category the side does not check is flagged); labels with no category of ours
are flagged as ``guard:<label>``. A failed or late call is ``guard_unavailable``: flagged when
the guard fails open, blocking when it fails closed. Each call is a child span
(``switchyard.moderation.guard``: kind, outcome, labels, never text) and is counted in
``switchyard_moderation_guard_calls`` / ``_seconds``; it is never charged to the tenant.
"""

from __future__ import annotations

import os
import time
from typing import Literal

from backends.errors import UpstreamError
from backends.guard import ask_guard
from gateway.telemetry import RequestRecord
from policies.moderation import Moderator
from policies.moderation.categories import Direction
from policies.moderation.guard import categories_of
from policies.moderation.verdict import Finding

__all__ = ["consult_guard"]


async def consult_guard(moderator: Moderator, text: str, direction: Direction,
                        record: RequestRecord) -> tuple[Finding, ...]:
    """The guard's findings on ``text``; empty when the policy names no guard."""
    guard = moderator.config.guard
    if guard is None or not text:
        return ()
    checks = moderator.config.input if direction == "input" else moderator.config.output
    rules = checks.categories if checks is not None else {}
    role: Literal["user", "assistant"] = "user" if direction == "input" else "assistant"
    key = os.environ.get(guard.api_key_env) if guard.api_key_env else None
    started = time.perf_counter()
    with record.phase("switchyard.moderation.guard") as span:
        span.set_attribute("switchyard.guard.kind", guard.kind)
        try:
            answer = await ask_guard(guard.kind, guard.url, guard.model, text, role,
                                     timeout_s=guard.timeout_s, api_key=key)
        except UpstreamError as exc:
            span.set_attribute("switchyard.guard.outcome", "error")
            span.set_attribute("error.type", exc.code)
            record.guard_called(guard.kind, "error", time.perf_counter() - started)
            return (Finding("category", "guard_unavailable", "block" if guard.on_error == "closed" else "flag"),)
        outcome = "unsafe" if answer.unsafe else "safe"
        span.set_attribute("switchyard.guard.outcome", outcome)
        span.set_attribute("switchyard.guard.labels", list(answer.labels))
        record.guard_called(guard.kind, outcome, time.perf_counter() - started)
    ours, other = categories_of(guard.kind, answer.labels)
    findings = [Finding("category", c, rules[c].action if c in rules else "flag") for c in ours]
    findings += [Finding("category", f"guard:{label}", "flag") for label in other]
    return tuple(findings)

"""CPU of moderating one request's text, in one process: what the production policy adds.

Run: ``python -m bench.overhead.moderation_cost``. The policy's default input and output checks
with the shipped classifier, on the benchmark's short message and on long prompts
(``loadgen.long_text``); CPU time (``time.process_time``), best of 5 repetitions. The last row
is an incremental output stream's CPU per relayed chunk, as ``bench.moderation.cost`` measures
it (a benign answer in ~4-character chunks, moderated minus pass-through).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.moderation.cost import measure
from bench.overhead.loadgen import long_text
from policies.moderation.classifier import ModerationClassifier
from policies.moderation.config import InputChecks, ModerationConfig, OutputChecks
from policies.moderation.engine import Moderator

SHORT = "Say hello to the benchmark in a few words."
STREAM_TOKENS = 200
STREAMS = 50


def best_cpu_ms(func: Callable[[], object], calls: int) -> float:
    """The least CPU time of one call over 5 repetitions of ``calls`` calls, in milliseconds."""
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(calls):
            func()
        best = min(best, (time.process_time() - started) / calls)
    return best * 1000


def main() -> None:
    classifier = ModerationClassifier.load()
    moderator = Moderator(ModerationConfig(input=InputChecks(), output=OutputChecks()), classifier)
    moderator.input_memo = None  # the checks themselves: a remembered verdict costs ~1 µs
    rows = ["| what | CPU per call |", "|---|--:|"]
    rows.append(f"| classifier scores, {len(SHORT)}-char message | "
                f"{best_cpu_ms(lambda: classifier.scores([SHORT]), 2000) * 1000:.0f} µs |")
    for direction in ("input", "output"):
        cost = best_cpu_ms(lambda d=direction: moderator.check_text(SHORT, d), 2000)  # type: ignore[misc]
        rows.append(f"| check_text ({direction}), {len(SHORT)}-char message | {cost * 1000:.0f} µs |")
    for tokens in (1_000, 8_000):
        text = long_text(tokens)
        cost = best_cpu_ms(lambda t=text: moderator.check_text(t, "input"), 2)  # type: ignore[misc]
        rows.append(f"| check_text (input), {tokens:,}-token prompt ({len(text):,} chars) | {cost:.1f} ms |")
    remembering = Moderator(moderator.config, classifier)  # a later turn: its history was checked before
    text = long_text(8_000)
    remembering.check_text(text, "input")
    # a new request parses a new string: its hash is computed again (a copy each call, counted in)
    cost = best_cpu_ms(lambda: remembering.check_text(text[:-1] + text[-1], "input"), 2000)
    rows.append(f"| check_text (input), the same 8,000-token text again, a new string (remembered) "
                f"| {cost * 1000:.1f} µs |")
    stream = measure(classifier, tokens=STREAM_TOKENS, streams=STREAMS, core=None)
    per_chunk = stream["cpu_ms_per_1k_tokens"] * STREAM_TOKENS / stream["chunks"]  # µs: see measure
    rows.append(f"| output stream (incremental), per relayed chunk ({STREAM_TOKENS}-token answer, "
                f"{stream['chunks']} chunks) | {per_chunk:.1f} µs |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

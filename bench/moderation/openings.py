"""How long ``incremental`` holds real answers' openings, in process: ``python -m bench.moderation.openings``.

Every one of XSTest's safe model answers from the classifier's dev split (``streaming.safe_answers``),
its first ``--words`` words fed one at a time (each with its leading space, as a tokenizer sends
them) to an ``incremental`` stream at the default policy, once without and once with the words of
the prompt it answers (``Echo``, as the gateway gives a stream). Per run: the share of answers whose
first text goes out only after the 2nd token or later (held one token or more) and after the 3rd
or later, the share with a stall of 3 or 5 tokens anywhere (tokens in a row that release nothing),
and how many the stream blocks.

Then what that release costs on toxic text: the labelled sets' dev texts with a positive target
(``data.LABELLED``), up to 400 words each, no request words: how many a stream blocks and how many
characters went out before the block. Last, what reading a request's words costs once
(``Echo``'s vocabulary of a 45,000-character message). ``--model`` scores with another n-gram
file (e.g. an earlier one from git) to compare.
"""

from __future__ import annotations

import argparse
import random
import re
import time
from collections.abc import Callable
from pathlib import Path

from bench.moderation.streaming import safe_answers

_WORD = re.compile(r"\s*\S+")


def _feed(stream_of: Callable[[], object], words: list[str]) -> tuple[int | None, int, int, bool]:
    """(index of the word after which text first went out, longest stall in words, characters
    released, blocked)."""
    from policies.moderation import StreamModerator

    stream = stream_of()
    assert isinstance(stream, StreamModerator)
    first, last, stall, released = None, -1, 0, 0
    for k, word in enumerate(words):
        out = stream.feed(word)
        if out.blocked is not None:
            return first, stall, released, True
        if out.text:
            released += len(out.text)
            first = k if first is None else first
            stall, last = max(stall, k - last - 1), k
    return first, stall, released, stream.finish().blocked is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.moderation.openings", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2].parent / "shared" / "data")
    parser.add_argument("--model", type=Path, default=None, help="n-gram ONNX file (default: the shipped one)")
    parser.add_argument("--words", type=int, default=20)
    args = parser.parse_args(argv)

    from policies.moderation import Echo, ModerationClassifier, ModerationConfig, Moderator
    from policies.moderation import data as D

    classifier = ModerationClassifier.load(args.model) if args.model else ModerationClassifier.load()
    moderator = Moderator(ModerationConfig.model_validate({"input": None, "output": {}}), classifier)
    print(f"model {classifier.version}")
    answers = safe_answers(args.data)
    for echoed in (False, True):
        rows = []
        for prompt, text in answers:
            echo = Echo(lambda prompt=prompt: prompt) if echoed else None
            rows.append(_feed(lambda echo=echo: moderator.stream(echo=echo), _WORD.findall(text)[:args.words]))
        n = len(rows)
        late = [args.words if f is None else f for f, _, _, _ in rows]
        p99 = sorted(late)[min(n - 1, round(0.99 * (n - 1)))]
        print(f"{'with' if echoed else 'without'} the prompt's words, {n} answers, {args.words} words: "
              f"first text after token 1+ {sum(x >= 1 for x in late) / n:.1%}, 2+ {sum(x >= 2 for x in late) / n:.1%}, "
              f"p99 token {p99}; "
              f"stall of 3+ tokens {sum(s >= 3 for _, s, _, _ in rows) / n:.1%}, 5+ {sum(s >= 5 for _, s, _, _ in rows) / n:.1%}; "
              f"blocked {sum(b for _, _, _, b in rows)}")

    toxic = []
    for name in D.LABELLED:
        _, dev = D.split_set(D.load_set(args.data, name), name)
        toxic += [e.text for e in dev if any(t == 1.0 for t in e.targets)]
    random.Random(1).shuffle(toxic)
    fed = [_feed(moderator.stream, _WORD.findall(text)[:400]) for text in toxic]
    leaks = [released for _, _, released, blocked in fed if blocked]
    print(f"toxic dev texts {len(toxic)}: blocked {len(leaks)}, characters out before the block: mean "
          f"{sum(leaks) / max(1, len(leaks)):.1f}, any {sum(x > 0 for x in leaks)}")

    message = (Path(__file__).resolve().parents[2] / "docs" / "moderation-model.md").read_text(encoding="utf-8")[:45_000]
    echo = Echo(lambda: message)
    started = time.perf_counter()
    echo.extent("a", 0, 1)
    print(f"reading a 45,000-character request's words: {(time.perf_counter() - started) * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

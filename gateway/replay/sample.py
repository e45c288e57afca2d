"""Sample traffic for ``switchyard replay``: ``python -m gateway.replay.sample --out FILE``.

Writes access-log records with content (``{"ts", "tenant", "session", "request"}``) of
multi-turn chat conversations: each starts with one of a few shared system prompts, mixes
easy and hard user turns, carries its earlier answers forward as a chat client does, and
belongs to one of several tenants. Conversations overlap in time; turns of one
conversation are seconds apart. The defaults fit ``examples/policy.yaml`` (tenant ``demo``
on the ``auto`` route, ``team-b`` on the local model).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

START_TS = 1_732_262_400.0
"""A fixed first arrival time, so the same seed writes the same file."""

SYSTEM_PROMPTS = tuple(
    f"You are the {role} assistant of a company that runs GPU clusters for model training and "
    "inference. Answer briefly and precisely, cite the runbook section you used, never invent "
    "commands, and say so when you are unsure. " + " ".join(
        f"Rule {i}: {rule}." for i, rule in enumerate(rules, 1))
    for role, rules in (
        ("support", ["greet the user once", "ask for the node name when it is missing",
                     "prefer read-only diagnostics before any change", "escalate hardware faults",
                     "link the incident template for outages", "never share credentials"] * 3),
        ("billing", ["quote prices in US dollars", "name the invoice line you refer to",
                     "explain reserved and on-demand capacity", "never promise refunds",
                     "route disputes to the finance queue", "round to two decimals"] * 3),
        ("research", ["state assumptions before deriving", "show each step of a proof",
                      "give complexity bounds", "prefer citations to memory",
                      "check units", "separate intuition from rigour"] * 3),
    )
)

EASY = (
    "hi, how are you?",
    "What is the capital of France?",
    "Thanks, that helps.",
    "thank you so much",
    "Translate hello into Spanish.",
    "What does GPU stand for?",
    "Please say that again in one sentence.",
    "Where is the status page?",
)
HARD = (
    ("Let $f(x) = x^3 - 3x + 1$. Find the number of real roots of $f(f(x)) = 0$ and prove your "
     "answer rigorously."),
    ("Write a lock-free multi-producer multi-consumer queue in C++ with hazard pointers and explain "
     "the memory ordering of every atomic."),
    ("Derive the backpropagation equations for a transformer attention layer, including the softmax "
     "Jacobian, and analyse the numerical stability of each step."),
    ("Prove that the expected number of comparisons of randomized quicksort is O(n log n) and give "
     "the exact constant."),
    ("Design a sharded, replicated KV cache index for 10,000 inference workers with sub-millisecond "
     "lookups, and analyse its failure modes under network partitions."),
    ("Formalise the scheduling of prefill and decode batches as an optimisation problem and prove "
     "an approximation bound for a greedy policy."),
    "Implement a B-tree in Rust with deletion, and prove the height bound.",
)
_SENTENCES = (
    "Sure, happy to help with that.",
    "The status page lists every cluster and its current state.",
    "The node is drained first, so running jobs move to other nodes.",
    "You can find the invoice under the billing tab of the console.",
    "Let me know if anything else comes up.",
    "The runbook section on maintenance covers this step by step.",
    "Most requests are answered within a second once the cache is warm.",
    "Please share the node name so I can look at its logs.",
    "That change takes effect at the next deployment.",
    "Here is a short summary of what happened during the incident.",
)
"""Plain answer sentences: assistant turns are context for the next turn's difficulty score."""


@dataclass(frozen=True, slots=True)
class SampleOptions:
    """What ``write_sample`` generates."""

    conversations: int = 20
    turns: tuple[int, int] = (2, 5)
    """Fewest and most user turns per conversation."""
    tenants: tuple[tuple[str, str], ...] = (("demo", "auto"), ("team-b", "llama-3.1-8b"))
    """(tenant, model it asks for) pairs; conversations are spread over them."""
    hard_share: float = 0.4
    max_tokens: int = 24
    seed: int = 0


def generate(options: SampleOptions = SampleOptions()) -> list[dict[str, Any]]:
    """The records, sorted by arrival time."""
    rng = random.Random(options.seed)
    records = []
    for index in range(options.conversations):
        tenant, model = options.tenants[index % len(options.tenants)]
        messages: list[dict[str, str]] = [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}]
        ts = START_TS + rng.uniform(0, 2.0 * options.conversations)
        for _ in range(rng.randint(*options.turns)):
            question = rng.choice(HARD if rng.random() < options.hard_share else EASY)
            messages.append({"role": "user", "content": question})
            request = {"model": model, "messages": [dict(m) for m in messages],
                       "max_tokens": options.max_tokens}
            records.append({"ts": round(ts, 3), "tenant": tenant, "session": f"conv-{index:04d}",
                            "request": request})
            messages.append({"role": "assistant", "content": _answer(rng)})
            ts += rng.uniform(3.0, 12.0)
    return sorted(records, key=lambda r: float(r["ts"]))


def _answer(rng: random.Random) -> str:
    return " ".join(rng.choice(_SENTENCES) for _ in range(rng.randint(1, 3)))


def _tenants(text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in text.split(","):
        tenant, sep, model = item.partition(":")
        if not sep or not tenant or not model:
            raise argparse.ArgumentTypeError(f"expected TENANT:MODEL, got {item!r}")
        pairs.append((tenant.strip(), model.strip()))
    return tuple(pairs)


def main(argv: Sequence[str] | None = None) -> int:
    """Write sample traffic; see ``--help``."""
    defaults = SampleOptions()
    parser = argparse.ArgumentParser(prog="python -m gateway.replay.sample",
                                     description="Write sample traffic for switchyard replay.")
    parser.add_argument("--out", required=True, help="JSONL file to write ('-' for stdout)")
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--tenants", type=_tenants, default=defaults.tenants,
                        help="TENANT:MODEL,... (default: demo:auto,team-b:llama-3.1-8b)")
    parser.add_argument("--hard-share", type=float, default=defaults.hard_share,
                        help="share of hard user turns (default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    records = generate(SampleOptions(conversations=args.conversations, tenants=args.tenants,
                                     hard_share=args.hard_share, max_tokens=args.max_tokens,
                                     seed=args.seed))
    text = "".join(json.dumps(r) + "\n" for r in records)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        with open(args.out, "w", encoding="utf-8") as file:
            file.write(text)
        print(f"{args.out}: {len(records)} requests in {args.conversations} conversations")
    return 0


if __name__ == "__main__":
    sys.exit(main())

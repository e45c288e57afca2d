"""How evenly rendezvous homes spread this workload's requests, over many sets of worker URLs.

``cache_aware`` (rule 3) and ``consistent_hash`` place each conversation by a hash against
the workers' URLs, and the load rules never fire at this workload's load, so the requests a
worker gets are fixed by the hash: with 160 conversations on 4 workers the spread is luck.
The benchmark's sims listen on random ports, so each run draws a new set of URLs; this
repeats the draw offline to show the odds of meeting the ``max/min <= 1.5`` bar.
"""

from __future__ import annotations

import random
from typing import Any

from backends.types import Message
from bench.cache_routing.report import percentile
from bench.cache_routing.workload import Workload
from router.hashing import rendezvous_pick
from router.prompt_text import render_chat


class _Address:
    def __init__(self, address: str) -> None:
        self.address = address


def home_spread(workload: Workload, *, workers: int = 4, trials: int = 2_000, seed: int = 0,
                key: str = "head") -> dict[str, Any]:
    """Quantiles of max/min requests per worker when each conversation goes to its home.

    Args:
        key: ``head`` (cache_aware: system prompt + first user turn, rendered as the gateway
            does) or ``user`` (consistent_hash on the ``user`` field).
    """
    keys, weights = [], []
    for conv in workload.conversations:
        if key == "head":
            messages = [Message(role="system", content=workload.system_prompts[conv.system]),
                        Message(role="user", content=conv.user_turns[0])]
            prompt, head = render_chat(messages)
            keys.append(prompt[:head])
        else:
            keys.append(conv.user)
        weights.append(len(conv.user_turns))
    rng = random.Random(seed)
    ratios = []
    for _ in range(trials):
        ports = rng.sample(range(30_000, 61_000), workers)
        pool = [_Address(f"http://127.0.0.1:{port}") for port in ports]  # as the gateway spells it
        counts = dict.fromkeys(map(id, pool), 0)
        for k, weight in zip(keys, weights, strict=True):
            counts[id(rendezvous_pick(k, pool))] += weight
        ratios.append(max(counts.values()) / max(1, min(counts.values())))
    return {
        "key": key, "trials": trials,
        "p10": percentile(ratios, 0.10), "p50": percentile(ratios, 0.50),
        "p90": percentile(ratios, 0.90),
        "share_within_1_5": sum(r <= 1.5 for r in ratios) / len(ratios),
    }

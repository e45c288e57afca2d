"""How evenly rendezvous hashing of the ``user`` field spreads this workload, over many URL draws.

``consistent_hash`` places each conversation by a hash of its sticky key against the workers'
URLs, so the requests a worker gets are fixed by the hash: with 160 conversations on 4
workers the spread is luck. The benchmark's sims listen on random ports, so each run draws a
new set of URLs; this repeats the draw offline to show the odds of ``max/min <= 1.5``.
(``cache_aware`` no longer places by a hash alone: its balance across runs comes from
``bench.cache_routing.offline``.)
"""

from __future__ import annotations

import random
from typing import Any

from bench.cache_routing.report import percentile
from bench.cache_routing.workload import Workload
from router.hashing import rendezvous_pick


class _Address:
    def __init__(self, address: str) -> None:
        self.address = address


def home_spread(workload: Workload, *, workers: int = 4, trials: int = 2_000, seed: int = 0) -> dict[str, Any]:
    """Quantiles of max/min requests per worker when each conversation goes to its user's hash."""
    keys = [conv.user for conv in workload.conversations]
    weights = [len(conv.user_turns) for conv in workload.conversations]
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
        "key": "user", "trials": trials,
        "p10": percentile(ratios, 0.10), "p50": percentile(ratios, 0.50),
        "p90": percentile(ratios, 0.90),
        "share_within_1_5": sum(r <= 1.5 for r in ratios) / len(ratios),
    }

"""Garbage-collector settings for a serving process (``tune_for_serving``).

Measured with ``bench/overhead`` (c=32, one core, non-streamed): under CPython's defaults the
collector took ~11 % of the gateway's time and set its p99 (80 ms, against 26 ms without the
pauses). Generation 0 was collected every 700 net allocations (~8 requests), and every ~100th
time a full collection walked the ~115k objects start-up leaves behind (modules, the models,
the policy), ~50 ms with every in-flight request waiting. A request's objects die by reference
counting long before any collection; only cycles need the collector, and they are rare here.

So a serving process, once built, moves what start-up made out of the collector's sight
(``gc.freeze``) and collects generation 0 every 20,000 net allocations instead of 700: 1,320 ->
1,492 req/s and p99 80 -> 26 ms in the run that measured it (docs/performance.md).
"""

from __future__ import annotations

import gc
import os

GEN0_THRESHOLD = 20_000
ENV = "SWITCHYARD_GC_GEN0"
"""Overrides ``GEN0_THRESHOLD``; ``0`` leaves CPython's collector as it is (no freeze either)."""


def tune_for_serving(gen0: int | None = None) -> bool:
    """Freeze start-up's objects and raise the generation-0 threshold; False if turned off.

    Call once, after the app is built and before it serves.
    """
    threshold = int(os.environ.get(ENV, GEN0_THRESHOLD)) if gen0 is None else gen0
    if threshold <= 0:
        return False
    gc.collect()  # start-up's garbage goes now rather than being frozen with the rest
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(threshold, gen1, gen2)
    return True

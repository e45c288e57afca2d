"""One classifier run for the checks that requests reach in the same turn of the event loop.

In a serving process a classifier run on one short message costs 150-200 µs, where the same
run in a tight loop costs ~70: between two requests' checks the rest of the request path has
pushed numpy's, tiktoken's and onnxruntime's code and tables out of the CPU's caches, and a
text's features are some 55 numpy operations that each pay for it. Scored together, texts
share those operations: ~135 µs a text in a batch of two, ~85 in four, ~65 in eight (after a
cache flush, docs/performance.md).

``BatchingScorer`` wraps the process's classifier and is a ``Scorer`` itself. A request
``await``s ``prescore(texts)`` before its synchronous checks: every text asked for before the
loop comes back to the batch (``call_soon``) is scored in one run, and the checks then find
their scores ready in ``scores`` (each taken once; what a request that went away never took
is dropped once ``READY_LIMIT`` texts wait). A text that is not ready is scored on the spot, so a check
never depends on having been prescored, and a scored text gives the same scores either way
(a batch's rows are the texts' own sums). Alone, a request's batch is its own texts: nothing
waits for traffic that is not there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from policies.moderation.rules import Scorer

__all__ = ["READY_LIMIT", "BatchingScorer"]

READY_LIMIT = 1_024
"""Scored texts kept for checks still to come; past it the batch's texts replace them all."""


class BatchingScorer:
    """``scorer`` with its runs shared by the texts asked for in one turn of the loop.

    Attributes:
        batches: runs made for ``prescore``.
        texts: distinct texts those runs scored.
    """

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self._pending: list[str] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._ready: dict[str, npt.NDArray[np.float32]] = {}
        """Scores made for checks that have not run yet, by text."""
        self.batches = 0
        self.texts = 0

    @property
    def thresholds(self) -> Mapping[str, float]:
        """The wrapped scorer's thresholds."""
        return self.scorer.thresholds

    def scores(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """The texts' scores: those a batch made for them, the rest scored now (one run).

        Thread-safe: a worker thread's check takes what a batch made, or scores.
        """
        ready = self._ready
        rows = [ready.pop(text, None) for text in texts] if ready else []
        if not rows or all(row is None for row in rows):
            return self.scorer.scores(texts)
        missing = [text for text, row in zip(texts, rows, strict=True) if row is None]
        fresh = iter(self.scorer.scores(missing)) if missing else iter(())
        return np.stack([row if row is not None else next(fresh) for row in rows])

    async def prescore(self, texts: Sequence[str]) -> None:
        """Have ``texts`` scored with every text asked for in this turn of the loop.

        A failing run is left to the checks: they score on their own and meet the error
        where they handle it. A request cancelled while it waits leaves the batch to the others.
        """
        if not texts:
            return
        loop = asyncio.get_running_loop()
        if not self._waiters:
            loop.call_soon(self._run)
        self._pending += texts
        waiter = loop.create_future()  # its own: a request cancelled here cancels only it
        self._waiters.append(waiter)
        await waiter

    def _run(self) -> None:
        texts, self._pending = list(dict.fromkeys(self._pending)), []
        waiters, self._waiters = self._waiters, []
        try:
            scored = dict(zip(texts, self.scorer.scores(texts), strict=True))
        except Exception:  # noqa: BLE001 - the checks score on their own and report it (prescore)
            scored = {}
        if len(self._ready) + len(scored) > READY_LIMIT:
            self._ready = scored
        else:
            self._ready.update(scored)
        self.batches += bool(scored)
        self.texts += len(scored)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

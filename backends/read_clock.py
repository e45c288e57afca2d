"""A stream's read deadlines on one timer, in place of an ``asyncio.timeout`` per read.

A relayed stream reads its upstream once per chunk, and each read must end by a deadline
(the first byte's, then the idle gap's, never past the stream's duration). An
``asyncio.timeout`` block per read arms and cancels a timer and runs its Python state machine:
~8 µs a chunk on uvloop, half of what the bare gateway spends relaying one. Here a read
only notes its deadline; one timer per stream looks at the deadline when it fires and moves
itself on when the reads kept within it, so a stream whose bounds are never near costs a
few attribute writes a chunk and one timer at most once per bound.

Only time spent waiting for the upstream counts, as with a timeout per read: a consumer
that is slow between reads (a client reading slowly) never trips the deadline.
"""

from __future__ import annotations

import asyncio

import aiohttp

_EARLY_S = 0.001
"""uvloop's timers have millisecond resolution: a timer this close to its deadline has met it."""


class ReadClock:
    """Bounds the reads of one stream; ``stop`` it when the stream ends."""

    __slots__ = ("_armed_for", "_deadline", "_expired", "_loop", "_reading", "_task", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = 0.0
        self._deadline = 0.0
        self._reading = False
        self._expired = False
        self._task: asyncio.Task[object] | None = None

    async def read(self, reader: aiohttp.StreamReader, deadline: float) -> bytes:
        """``reader.readany()``, raising ``TimeoutError`` if nothing came by ``deadline`` (the
        event loop's time). A cancellation from anywhere else passes through unchanged."""
        task = self._task = asyncio.current_task(self._loop)  # with the loop: no running-loop lookup
        assert task is not None, "a read runs in a task"
        self._deadline = deadline
        if self._timer is None or deadline < self._armed_for:
            self._arm(deadline)
        cancelling = task.cancelling()
        self._reading = True
        try:
            return await reader.readany()
        except asyncio.CancelledError:
            if self._expired:
                self._expired = False
                if task.uncancel() <= cancelling:
                    raise TimeoutError from None
            raise
        finally:
            self._reading = False

    def stop(self) -> None:
        """No more reads: the timer goes."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._task = None

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_for = when
        self._timer = self._loop.call_at(when, self._check)

    def _check(self) -> None:
        self._timer = None
        if not self._reading or self._task is None:
            return  # between reads: the next read arms the timer again
        if self._loop.time() < self._deadline - _EARLY_S:
            self._arm(self._deadline)  # later reads moved the deadline on
            return
        self._expired = True
        self._task.cancel()

"""The Exchange's gate (input checks running beside the attempt, ``gateway/input_screen.py``):
whatever ends the wait, the attempt it started is cancelled or its answer dropped, never left
running with a worker slot and an open upstream request."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from backends.errors import SwitchyardError
from gateway.exchange import Exchange


class Blocked(SwitchyardError):
    status_code, error_type, code = 400, "invalid_request_error", "content_policy_violation"


def _exchange(gate: Any) -> Exchange[Any, Any, Any]:
    exchange: Exchange[Any, Any, Any] = object.__new__(Exchange)
    exchange._gate = gate
    return exchange


class Attempt:
    def __init__(self, seconds: float) -> None:
        self.seconds, self.cancelled, self.dropped, self.finished = seconds, False, [], False

    async def run(self) -> str:
        try:
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.finished = True
        return "answer"

    async def drop(self, answer: str) -> None:
        self.dropped.append(answer)


async def test_a_gate_that_blocks_first_cancels_the_attempt() -> None:
    attempt = Attempt(5.0)

    async def gate() -> None:
        await asyncio.sleep(0.01)
        raise Blocked("blocked")

    with pytest.raises(Blocked):
        await _exchange(gate)._gated(attempt.run(), attempt.drop)
    assert attempt.cancelled and not attempt.finished and attempt.dropped == []


async def test_a_gate_that_blocks_after_the_answer_drops_it() -> None:
    attempt = Attempt(0.0)

    async def gate() -> None:
        await asyncio.sleep(0.05)
        raise Blocked("blocked")

    with pytest.raises(Blocked):
        await _exchange(gate)._gated(attempt.run(), attempt.drop)
    assert attempt.finished and attempt.dropped == ["answer"]


async def test_a_request_cancelled_while_its_checks_run_cancels_its_attempt() -> None:
    attempt = Attempt(5.0)
    checks_started = asyncio.Event()

    async def gate() -> None:
        checks_started.set()
        await asyncio.sleep(5.0)

    task = asyncio.ensure_future(_exchange(gate)._gated(attempt.run(), attempt.drop))
    await checks_started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert attempt.cancelled and not attempt.finished


async def test_a_passing_gate_returns_the_attempts_answer() -> None:
    attempt = Attempt(0.01)

    async def gate() -> None:
        await asyncio.sleep(0)

    assert await _exchange(gate)._gated(attempt.run(), attempt.drop) == "answer"
    assert attempt.dropped == []


async def test_a_request_cancelled_as_its_attempt_starts_cancels_the_attempt() -> None:
    attempt = Attempt(5.0)

    async def gate() -> None:
        await asyncio.sleep(5.0)

    task = asyncio.ensure_future(_exchange(gate)._gated(attempt.run(), attempt.drop))
    await asyncio.sleep(0)  # the gated wait has started the attempt and yielded once
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert attempt.cancelled and not attempt.finished

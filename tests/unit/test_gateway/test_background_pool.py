"""The low-priority worker that counts prompts behind their requests."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from gateway.background_pool import LOWEST_PRIORITY, BackgroundPool


def _where() -> tuple[int, int]:
    return threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0)  # this thread, on Linux


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread niceness is set on Linux only")
async def test_work_runs_in_one_thread_at_the_lowest_priority_and_the_loop_keeps_its_own() -> None:
    pool = BackgroundPool("test-behind")
    try:
        first, second = await pool.submit(_where), await pool.submit(_where)
    finally:
        pool.close()
    assert first == second and first[1] == LOWEST_PRIORITY  # one worker, nice 19
    assert first[0] != threading.get_native_id()
    assert os.getpriority(os.PRIO_PROCESS, 0) != LOWEST_PRIORITY  # the event loop's thread unchanged

"""A worker thread for work no request waits on (a prompt counted behind its request), run at
the lowest CPU priority.

A thread at the event loop's priority that shares its core takes half of it while it runs: an
8k-token prompt counted behind its request (3.2 ms of tiktoken, which releases the GIL) slowed
the loop relaying that request's first token. At ``nice 19`` the scheduler gives the thread what
the loop leaves. Linux sets a thread's niceness by its id; elsewhere the priority is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["BackgroundPool"]

T = TypeVar("T")
LOWEST_PRIORITY = 19


class BackgroundPool:
    """One low-priority worker thread, started on first use."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._executor: ThreadPoolExecutor | None = None

    def submit(self, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``func(*args)`` in the worker; the loop's future of its result."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=self._name, initializer=_lowest_priority)
        return asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    def close(self) -> None:
        """Drop queued work; a running item finishes in its thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _lowest_priority() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or not permitted
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)

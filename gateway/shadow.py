"""Canary shadow mirrors as tasks their runtime owns.

A mirror runs in the background after its request has been answered. The runtime that started
it keeps it: a policy reload lets the old runtime's mirrors finish (bounded) before it closes
the backends they use, and shutdown cancels what is left, so no mirror outlives its pools.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("switchyard.canary")


class ShadowMirrors:
    """The shadow requests one runtime has in flight."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, run: Coroutine[Any, Any, None]) -> None:
        """Start a mirror; it is forgotten when it ends."""
        task = asyncio.get_running_loop().create_task(run, name="canary-shadow")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Let running mirrors finish for up to ``timeout_s``, then cancel the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            log.info("cancelled %d shadow requests at close", len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

"""The input checks of one request as a stage: awaited first, or beside the upstream call.

When the policy allows it (``moderation.input.send_while_checking``) and no rule can rewrite
the request, the request is sent upstream while its input is checked: the ``Exchange`` starts
its attempt, then runs ``Screen.passed`` beside it, and hands nothing of the answer on before
the checks pass. The checks overlap the model's prefill instead of adding to the time to first
token, whatever the input's size: a long input is checked in a worker thread
(``gateway.moderation.OFFLOAD_CHARS``), a short one on the loop once its request is written,
where a cold check of a few words cost 0.7-1 ms of a small request's latency at low load
(docs/performance.md). Otherwise the checks run first. A request they block gets the same 400;
its stream is closed (the worker stops) or its whole answer dropped unseen, and the admission
ticket refunds it as for any refused request.

``screen_input`` is an async context manager: a check still running when the request ends
another way (an upstream error) is cancelled, and one that failed unseen is read, so no task
outlives its request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic

from gateway.moderation import Call, check_request
from gateway.runtime import Runtime
from gateway.target import Target
from gateway.telemetry import RequestRecord
from policies.moderation import Moderator

__all__ = ["Screen", "screen_input"]


@dataclass(slots=True)
class Screen(Generic[Call]):
    """The call to send, and the checks it must still pass before its answer is released.

    Overlapped checks start when ``passed`` is first awaited: the ``Exchange`` awaits it once
    its attempt is on its way, so the checks' worker thread (which holds the interpreter for
    most of its work) does not delay the request going out. They run in a task of their own:
    on a pooled connection aiohttp writes a request's body in a task the attempt has just
    started, which then runs before a short input's checks take the loop.
    """

    call: Call
    checks: Callable[[], Coroutine[Any, Any, Call]] | None = None
    """The checks still to run beside the upstream call, or None when they are done (or none)."""
    pending: asyncio.Future[Call] | None = None

    @property
    def overlapped(self) -> bool:
        """Whether the request goes upstream before its checks are done."""
        return self.checks is not None

    async def passed(self) -> None:
        """Run (or wait for) the checks; raises ``ContentPolicyViolation`` if they block."""
        if self.checks is None:
            return
        if self.pending is None:
            self.pending = asyncio.ensure_future(self.checks())
        await self.pending

    def close(self) -> None:
        """Cancel checks the request no longer needs; read a failure nobody awaited."""
        pending = self.pending
        if pending is None:
            return
        if not pending.done():
            pending.cancel()  # the request ended another way: its verdict is not needed
        elif not pending.cancelled():
            pending.exception()  # read, so an unseen block is not reported as never retrieved


@contextlib.asynccontextmanager
async def screen_input(runtime: Runtime, target: Target, moderator: Moderator | None, call: Call,
                       record: RequestRecord) -> AsyncIterator[Screen[Call]]:
    """Check ``call``'s input now, or start checking it beside the upstream call (module doc)."""
    if moderator is None or not moderator.input_roles:
        yield Screen(call)
        return
    if not _may_overlap(runtime, target, moderator):
        yield Screen(await check_request(moderator, call, record))
        return
    screen = Screen(call, functools.partial(check_request, moderator, call, record))
    try:
        yield screen
    finally:
        screen.close()


def _may_overlap(runtime: Runtime, target: Target, moderator: Moderator) -> bool:
    checks = moderator.config.input
    if checks is None or checks.send_while_checking == "never":
        return False
    if any(rule.action == "redact" for rule in checks.pii.values()):
        return False  # the request may be rewritten: nothing leaves before the checks
    if checks.send_while_checking == "always":
        return True
    route = runtime.version_routes[target.model][target.assignment.version]
    backends = runtime.policy.backends
    return all(backends[d.pool.name].kind == "sglang" for d in route.deployments)

"""Where rollout states live: this process only, or Redis for every replica.

A state is replaced whole by a compare-and-set on its ``revision``: the write succeeds only
if the stored revision is the one the writer started from (0 for "nothing stored"), so
when replicas race to take the same step, exactly one wins and the others reload. In Redis
the check and the write are one Lua script, which also announces the change on a channel;
replicas listen on it and poll every second as well, so a missed message (Redis restarted,
connection dropped) still reaches them within a second of recovery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from policies.canary.rollout import RolloutState

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

    from policies.redis_client import RedisClient

log = logging.getLogger("switchyard.canary")

RolloutKey = tuple[str, str]
"""(model, rollout id)."""


class RolloutStore(Protocol):
    """What the controller needs from a state store."""

    async def load(self, keys: Sequence[RolloutKey]) -> dict[str, RolloutState | None]:
        """The stored state of each rollout, by rollout id (None: nothing stored)."""
        ...

    async def compare_and_set(self, state: RolloutState) -> bool:
        """Store ``state`` iff the stored revision is ``state.revision - 1``; whether it was."""
        ...

    async def wait_for_change(self, timeout_s: float) -> None:
        """Return when a state may have changed, or after ``timeout_s``."""
        ...

    async def aclose(self) -> None: ...


class MemoryRolloutStore:
    """States in a dict, for one process (or several controllers in one test)."""

    def __init__(self) -> None:
        self._states: dict[str, RolloutState] = {}
        self._changed = asyncio.Event()

    async def load(self, keys: Sequence[RolloutKey]) -> dict[str, RolloutState | None]:
        return {rollout: self._states.get(rollout) for _, rollout in keys}

    async def compare_and_set(self, state: RolloutState) -> bool:
        current = self._states.get(state.rollout)
        if (current.revision if current else 0) != state.revision - 1:
            return False
        self._states[state.rollout] = state
        # wake every waiter: each holds the event it started waiting on
        self._changed.set()
        self._changed = asyncio.Event()
        return True

    async def wait_for_change(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self._changed.wait(), timeout_s)
        except TimeoutError:
            pass

    async def aclose(self) -> None:
        return None


# The check and the write in one step, then the announcement
_CAS = """
local current = tonumber(redis.call('HGET', KEYS[1], 'rev') or '0')
if current ~= tonumber(ARGV[1]) - 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'rev', ARGV[1], 'state', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""


class RedisRolloutStore:
    """One hash per rollout at ``<prefix>:rollout:<model>:<rollout>`` (fields ``rev``, ``state``).

    Args:
        client: The process's Redis client.
        prefix: e.g. ``switchyard:<cluster>:canary``; changes are announced on
            ``<prefix>:changed``.

    States have no expiry (a stored rollback must not turn back into a fresh rollout); each
    is a few kilobytes, one per rollout ever started.
    """

    def __init__(self, client: RedisClient, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._channel = f"{prefix}:changed"
        self._cas = client.register_script(_CAS)
        self._pubsub: PubSub | None = None

    def key(self, model: str, rollout: str) -> str:
        return f"{self._prefix}:rollout:{model}:{rollout}"

    async def load(self, keys: Sequence[RolloutKey]) -> dict[str, RolloutState | None]:
        if not keys:
            return {}
        async with self._client.pipeline(transaction=False) as pipe:
            for model, rollout in keys:
                pipe.hget(self.key(model, rollout), "state")
            raw = await pipe.execute()
        return {rollout: RolloutState.from_json(text) if text else None
                for (_, rollout), text in zip(keys, raw, strict=True)}

    async def compare_and_set(self, state: RolloutState) -> bool:
        stored = await self._cas(keys=[self.key(state.model, state.rollout)],
                                 args=[state.revision, state.to_json(), self._channel,
                                       f"{state.rollout} {state.revision}"])
        return bool(stored)

    async def wait_for_change(self, timeout_s: float) -> None:
        try:
            if self._pubsub is None:
                pubsub = self._client.pubsub()
                await pubsub.subscribe(self._channel)
                self._pubsub = pubsub
            await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - Redis down: the caller polls; resubscribe next time
            log.debug("canary: change channel unavailable (%s)", exc)
            await self._drop_pubsub()
            await asyncio.sleep(timeout_s)

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed in newer redis-py
            except Exception as exc:  # noqa: BLE001 - it was already broken
                log.debug("canary: closing the change channel: %s", exc)

    async def aclose(self) -> None:
        await self._drop_pubsub()

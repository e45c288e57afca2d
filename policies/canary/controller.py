"""The canary controller: what the request path calls, and the loops that run the rollouts.

One controller per gateway process, for its whole life (policies come and go, it stays):

* ``bind(policy)`` makes a policy revision's ``CanaryRoutes`` (pure; build it with the
  runtime), ``await activate(routes)`` makes them the ones the loops run (reading or
  creating each rollout's stored state);
* on each request: ``routes.assign(model, sticky_key)`` (microseconds, no I/O, reads the
  current weight from memory), later ``record(choice, outcome)`` (adds to an in-memory
  batch), and in shadow mode ``try_shadow(choice)`` for a bounded mirror;
* in the background: batches are flushed to the statistics store, the guards judge each
  plan's current step, and the replica whose compare-and-set wins stores the transition;
  every replica follows stored changes through the store's channel plus a 1 s poll.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from backends.errors import NotFoundError, ServiceUnavailableError, SwitchyardError
from policies.canary.assign import VersionChoice
from policies.canary.guards import judge
from policies.canary.rollout import (
    Action,
    CanaryStateError,
    RolloutSpec,
    RolloutState,
    Transition,
    act,
    decide,
)
from policies.canary.routes import CanaryRoutes, Live, ShadowPermit
from policies.canary.stats import (
    MemoryStatsStore,
    Outcome,
    RedisStatsStore,
    StatsStore,
    VersionStats,
    Window,
)
from policies.canary.status import describe
from policies.canary.store import MemoryRolloutStore, RedisRolloutStore, RolloutStore

if TYPE_CHECKING:
    from policies.document import Policy
    from policies.redis_client import RedisClient

log = logging.getLogger("switchyard.canary")

OnEvent = Callable[[Transition], None]


class CanaryController:
    """Runs the canaries of the active policy for this process.

    Args:
        rollouts: Where rollout states live (``MemoryRolloutStore`` or ``RedisRolloutStore``).
        stats: Where step statistics accumulate (``MemoryStatsStore`` or ``RedisStatsStore``).
        on_event: Called with each transition this process performs (not those it follows
            from other replicas, so a cluster counts each once); exceptions are logged.
        clock: Unix time (states are shared between machines).
        rng: Draws for requests without a sticky key and for shadow shares.
        evaluate_interval_s: How often the guards judge each running plan.
        flush_interval_s: How often recorded outcomes are added to the statistics store.
        follow_interval_s: The poll that backs up the store's change channel.
    """

    def __init__(self, rollouts: RolloutStore, stats: StatsStore, *, on_event: OnEvent | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 evaluate_interval_s: float = 1.0, flush_interval_s: float = 0.25,
                 follow_interval_s: float = 1.0) -> None:
        self._rollouts, self._stats = rollouts, stats
        self._on_event = on_event
        self._clock = clock
        self._rng = rng or random.Random()
        self._intervals = (evaluate_interval_s, flush_interval_s, follow_interval_s)
        self._lives: dict[str, Live] = {}
        self._routes = CanaryRoutes(self._lives, {}, {}, self._rng)
        self._previous: CanaryRoutes | None = None
        self._pending: dict[tuple[str, int, str], VersionStats] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._failing: set[str] = set()
        self._closing = False

    @classmethod
    def create(cls, client: RedisClient | None, cluster: str = "default", **options: Any) -> CanaryController:
        """On Redis (shared by the replicas of ``cluster``) when ``client`` is given, else in memory."""
        if client is None:
            return cls(MemoryRolloutStore(), MemoryStatsStore(), **options)
        prefix = f"switchyard:{cluster}:canary"
        return cls(RedisRolloutStore(client, prefix), RedisStatsStore(client, prefix), **options)

    # --- the request path ---------------------------------------------------------------------

    def bind(self, policy: Policy) -> CanaryRoutes:
        """The canaries of ``policy``, for the runtime built from it (no I/O; the rollouts
        run once ``activate`` is awaited)."""
        specs = {name: spec for name, model in policy.models.items()
                 if (spec := RolloutSpec.from_model(name, model)) is not None}
        for spec in specs.values():
            self._lives.setdefault(spec.rollout, Live(spec))
        stable = {name: model.stable_version for name, model in policy.models.items()}
        return CanaryRoutes(self._lives, specs, stable, self._rng)

    @property
    def routes(self) -> CanaryRoutes:
        """The active policy's canaries."""
        return self._routes

    def assign(self, model: str, sticky_key: str | None) -> VersionChoice:
        """``routes.assign`` of the active policy."""
        return self._routes.assign(model, sticky_key)

    def record(self, choice: VersionChoice, outcome: Outcome, *, shadow: bool = False) -> None:
        """Count the outcome of the chosen version (of its mirror with ``shadow=True``).

        Only adds to an in-memory batch; the flush loop sends it to the statistics store.
        """
        if not choice.rollout:
            return
        live = self._lives.get(choice.rollout)
        version = choice.shadow_version if shadow else choice.version
        if live is None or live.state is None or version is None:
            return
        key = (choice.rollout, live.state.epoch, version)
        stats = self._pending.get(key)
        if stats is None:
            stats = self._pending[key] = VersionStats()
        stats.add(outcome)

    def try_shadow(self, choice: VersionChoice) -> ShadowPermit | None:
        """A slot for mirroring this request to ``choice.shadow_version``, or None (no mirror:
        none chosen, or ``shadow_max_concurrency`` mirrors already in flight here)."""
        if choice.shadow_version is None:
            return None
        live = self._lives.get(choice.rollout)
        if live is None:
            return None
        if live.shadow_in_flight >= live.spec.config.shadow_max_concurrency:
            live.shadow_dropped += 1
            return None
        live.shadow_in_flight += 1
        return ShadowPermit(live)

    # --- policy changes -----------------------------------------------------------------------

    async def activate(self, routes: CanaryRoutes) -> None:
        """Run ``routes``' rollouts from now on: read their states (storing new rollouts').

        If the store does not answer, their requests go to stable until it does (the
        follow loop keeps trying); this never raises for a store failure.
        """
        self._previous, self._routes = self._routes, routes
        keep = {spec.rollout for r in (routes, self._previous) for spec in r.specs.values()}
        for rollout in [r for r in self._lives if r not in keep]:
            del self._lives[rollout]
        await self._guarded("refresh", self.refresh())

    def _active(self) -> list[Live]:
        return [self._lives[spec.rollout] for spec in self._routes.specs.values() if spec.rollout in self._lives]

    # --- background ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start flushing, judging and following (call once the event loop runs)."""
        evaluate_s, flush_s, follow_s = self._intervals
        self._tasks = [asyncio.get_running_loop().create_task(coroutine, name=f"canary-{name}")
                       for name, coroutine in (("flush", self._every(flush_s, "flush", self.flush)),
                                               ("evaluate", self._every(evaluate_s, "evaluate", self.evaluate)),
                                               ("follow", self._follow(follow_s)))]

    async def aclose(self) -> None:
        """Stop the loops and send what is still batched."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # a cancel that lands as a Redis read times out can be swallowed by the read's
            # timeout (Python 3.11): the loops then stop at their next round instead
            _, pending = await asyncio.wait(self._tasks, timeout=3.0)
            for task in pending:
                log.warning("canary task %s did not stop", task.get_name())
        self._tasks = []
        await self._guarded("flush", asyncio.wait_for(self.flush(), 2.0))
        await self._rollouts.aclose()

    async def _every(self, interval_s: float, name: str,
                     step: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        while not self._closing:
            await asyncio.sleep(interval_s)
            await self._guarded(name, step())

    async def _follow(self, interval_s: float) -> None:
        while not self._closing:
            await self._rollouts.wait_for_change(interval_s)
            if not self._closing:
                await self._guarded("refresh", self.refresh())

    async def _guarded(self, name: str, work: Coroutine[Any, Any, Any]) -> None:
        """Run one round of a loop; a store failure is logged once per outage, then retried."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the store is down: requests go on, we retry
            if name not in self._failing:
                log.warning("canary %s failed (%s); retrying", name, exc)
            self._failing.add(name)
            return
        if name in self._failing:
            self._failing.discard(name)
            log.info("canary %s works again", name)

    async def flush(self) -> None:
        """Send the batched outcomes to the statistics store (dropped if it fails)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        batch = {(Window(live.spec.model, rollout, epoch), version): stats
                 for (rollout, epoch, version), stats in pending.items()
                 if (live := self._lives.get(rollout)) is not None}
        await self._stats.add(batch)

    async def refresh(self) -> None:
        """Adopt newer stored states of the active rollouts; store those nobody stored yet."""
        lives = self._active()
        stored = await self._rollouts.load([(live.spec.model, live.spec.rollout) for live in lives])
        for live in lives:
            state = stored.get(live.spec.rollout)
            if state is None:
                await self._commit(live, replace(live.spec.initial(self._clock()), revision=1))
            else:
                self._adopt(live, state)

    def _adopt(self, live: Live, state: RolloutState) -> None:
        current = live.state
        if current is not None and current.created_at == state.created_at and current.revision >= state.revision:
            return
        _set_state(live, state)
        if current is not None and state.last is not None:
            last = state.last
            log.debug("canary %s: following %s by another replica (weight %.3g -> %.3g)",
                      live.spec.model, last.kind, last.from_weight, last.to_weight)

    async def evaluate(self) -> list[Transition]:
        """Judge every running plan once; the transitions this process stored."""
        await self.flush()
        done: list[Transition] = []
        for live in self._active():
            state, spec = live.state, live.spec
            if state is None or state.phase in ("promoted", "rolled_back"):
                continue
            window = Window(spec.model, spec.rollout, state.epoch)
            live.window = await self._stats.read(window, (spec.stable, spec.canary))
            if spec.plan is None:
                continue
            stable, canary = live.window[spec.stable], live.window[spec.canary]
            live.verdict = judge(stable, canary, spec.plan.guards)
            new = decide(spec, state, live.verdict, canary.requests, self._clock())
            if new is not None and await self._commit(live, new):
                assert new.last is not None
                done.append(new.last)
        return done

    async def _commit(self, live: Live, new: RolloutState) -> bool:
        """Store ``new`` if nobody moved the rollout meanwhile; else adopt what they stored."""
        if await self._rollouts.compare_and_set(new):
            _set_state(live, new)
            if new.last is not None:
                self._emit(new.last)
            return True
        stored = (await self._rollouts.load([(live.spec.model, live.spec.rollout)])).get(live.spec.rollout)
        if stored is not None:
            self._adopt(live, stored)
        return False

    def _emit(self, transition: Transition) -> None:
        level = logging.WARNING if transition.kind == "rollback" else logging.INFO
        log.log(level, "canary %s (%s): %s by %s, weight %.3g -> %.3g: %s", transition.model,
                transition.rollout, transition.kind, transition.actor, transition.from_weight,
                transition.to_weight, transition.reason)
        if self._on_event is not None:
            try:
                self._on_event(transition)
            except Exception:
                log.exception("canary event handler failed")

    # --- operators ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Every canary of the active policy: phase, weight, step, window, verdict, history."""
        now = self._clock()
        return {"canaries": [describe(live, now) for live in self._active()]}

    def weights(self) -> dict[str, float]:
        """The canary weight of each model with a canary whose state is known (for a gauge)."""
        return {live.spec.model: live.state.weight for live in self._active() if live.state is not None}

    def model_status(self, model: str) -> dict[str, Any]:
        return describe(self._live_of(model), self._clock())

    async def promote(self, model: str, reason: str = "") -> dict[str, Any]:
        """Send every request to the canary now (weight 1.0); the document still says stable."""
        return await self._command(model, "promote", reason)

    async def rollback(self, model: str, reason: str = "") -> dict[str, Any]:
        """Send every request to stable now (weight 0)."""
        return await self._command(model, "rollback", reason)

    async def pause(self, model: str, reason: str = "") -> dict[str, Any]:
        """Hold the weight: no more automatic steps (the guards still roll back on a breach)."""
        return await self._command(model, "pause", reason)

    async def resume(self, model: str, reason: str = "") -> dict[str, Any]:
        """Continue a paused rollout, or restart a rolled back one from its first step."""
        return await self._command(model, "resume", reason)

    def _live_of(self, model: str) -> Live:
        spec = self._routes.specs.get(model)
        live = self._lives.get(spec.rollout) if spec is not None else None
        if live is None:
            raise NotFoundError(f"model {model!r} has no canary in the active policy", param="model")
        return live

    async def _command(self, model: str, action: Action, reason: str) -> dict[str, Any]:
        live = self._live_of(model)
        spec = live.spec
        try:
            for _ in range(5):  # another replica may move the rollout between our read and write
                stored = (await self._rollouts.load([(model, spec.rollout)])).get(spec.rollout)
                state = stored or replace(spec.initial(self._clock()), revision=1)
                if stored is None and not await self._commit(live, state):
                    continue
                if await self._commit(live, act(spec, state, action, self._clock(), reason)):
                    return describe(live, self._clock())
        except SwitchyardError:
            raise
        except Exception as exc:
            raise ServiceUnavailableError(f"the canary state store is unavailable: {exc}") from exc
        raise CanaryStateError(f"the canary of model {model!r} kept changing; try again")


def _set_state(live: Live, state: RolloutState) -> None:
    # a new step is judged on new numbers; a finished rollout keeps the ones that ended it
    if state.phase in ("running", "paused") and (live.state is None or live.state.epoch != state.epoch):
        live.window, live.verdict = {}, None
    live.state = state

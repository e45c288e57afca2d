"""The rollout state machine: steps, promotion, rollback, pause and resume, as pure functions.

A rollout is one canary of one model as the policy declares it (``RolloutSpec``); its
``RolloutState`` says where it is. ``decide`` turns a state and the guards' verdict into the
next state (or none); ``act`` applies an operator's command. Neither does I/O: the
controller stores the result with a compare-and-set on ``revision``, so when several
replicas decide the same step, exactly one transition is stored.

Phases::

    running --(step passed)--> running at the next step --(reaching 1.0)--> promoted
    running|paused --(guard breach, or rollback)--> rolled_back (weight 0)
    running --(pause)--> paused --(resume)--> running
    rolled_back --(resume)--> running from the first step, fresh statistics
    any but promoted --(promote)--> promoted (weight 1.0)

Promotion does not edit the policy document: the state overrides the document's split
until the document is updated (``stable:`` the canary's version, ``canary`` removed),
which ends this rollout.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from backends.errors import SwitchyardError
from policies.canary.config import CanaryConfig, PlanConfig
from policies.canary.guards import Verdict

if TYPE_CHECKING:
    from policies.document import ModelConfig

Phase = Literal["running", "paused", "promoted", "rolled_back"]
Action = Literal["promote", "rollback", "pause", "resume"]
Actor = Literal["auto", "admin"]
TransitionKind = Literal["start", "advance", "hold", "promote", "rollback", "pause", "resume", "restart"]
HISTORY = 20
"""Transitions kept in a state (the newest)."""


class CanaryStateError(SwitchyardError):
    """A command that the rollout's phase does not allow (e.g. pausing a promoted canary)."""

    status_code, error_type, code = 409, "invalid_request_error", "canary_conflict"


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    """A model's canary as the policy declares it; ``rollout`` identifies it.

    The id hashes the model, both versions' deployments and the whole canary config, so
    changing any of them starts a new rollout (with its own state and statistics), while
    every replica with the same policy agrees on the id without talking.
    """

    model: str
    stable: str
    canary: str
    config: CanaryConfig
    rollout: str

    @classmethod
    def from_model(cls, name: str, model: ModelConfig) -> RolloutSpec | None:
        """The rollout of ``model``, or None if it has no canary."""
        if model.canary is None or model.stable is None:
            return None
        canary = model.canary
        identity = json.dumps([name, model.stable, model.versions[model.stable].model_dump(mode="json"),
                               model.versions[canary.version].model_dump(mode="json"),
                               canary.model_dump(mode="json")], sort_keys=True)
        rollout = hashlib.blake2b(identity.encode(), digest_size=6).hexdigest()
        return cls(name, model.stable, canary.version, canary, rollout)

    @property
    def plan(self) -> PlanConfig | None:
        return self.config.plan

    @property
    def mode(self) -> Literal["split", "shadow", "fixed"]:
        """``shadow`` (mirror), ``split`` (a plan raises the weight) or ``fixed`` (a set weight)."""
        return "shadow" if self.config.shadow else "split" if self.config.plan else "fixed"

    def first_weight(self) -> float:
        if self.config.shadow:
            return 0.0
        if self.config.plan is not None:
            return self.config.plan.steps[0]
        return self.config.weight or 0.0

    def initial(self, now: float) -> RolloutState:
        """The state of a rollout nobody has stored yet (``revision`` 0)."""
        weight = self.first_weight()
        start = Transition(self.model, self.rollout, "start", "auto", 0.0, weight, 0, now,
                           f"{self.canary} beside {self.stable} ({self.mode})")
        return RolloutState(self.model, self.rollout, "running", 0, weight, 1, now, 0, (start,), created_at=now)


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of a rollout: the event the gateway logs, counts and puts on a span."""

    model: str
    rollout: str
    kind: TransitionKind
    actor: Actor
    from_weight: float
    to_weight: float
    step: int
    """The step index after the change."""
    at: float
    """Unix time."""
    reason: str


@dataclass(frozen=True, slots=True)
class RolloutState:
    """Where one rollout is; stored as JSON, replaced whole by each transition."""

    model: str
    rollout: str
    phase: Phase
    step: int
    """Index in the plan's steps (0 without a plan)."""
    weight: float
    """The share of sticky keys sent to the canary now (1.0 once promoted, 0 rolled back)."""
    epoch: int
    """The statistics window: bumped by every change of weight, so a step is judged only
    on its own traffic."""
    step_started_at: float
    revision: int
    """Bumped by every stored change; the compare-and-set is on it (0: never stored)."""
    history: tuple[Transition, ...] = ()
    held: bool = False
    """The last step passed and there is no next one below 1.0: waiting for a promote."""
    created_at: float = 0.0
    """When the rollout was first stored: a state created anew (the store lost its data)
    replaces what replicas hold even though its revision is lower."""

    @property
    def last(self) -> Transition | None:
        return self.history[-1] if self.history else None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> RolloutState:
        data: dict[str, Any] = json.loads(text)
        data["history"] = tuple(Transition(**t) for t in data.get("history", ()))
        return cls(**data)


def _change(state: RolloutState, transition: Transition, *, phase: Phase, weight: float,
            step: int | None = None, new_window: bool = True, held: bool = False) -> RolloutState:
    history = (*state.history, transition)[-HISTORY:]
    return replace(state, phase=phase, weight=weight, step=state.step if step is None else step,
                   epoch=state.epoch + 1 if new_window else state.epoch,
                   step_started_at=transition.at if new_window else state.step_started_at,
                   revision=state.revision + 1, history=history, held=held)


def decide(spec: RolloutSpec, state: RolloutState, verdict: Verdict, canary_requests: float,
           now: float) -> RolloutState | None:
    """The automatic next state: roll back on a breach, advance a passed step, or None.

    A breach rolls back in any live phase (paused included: pausing stops advancing, not
    the guards). A step passes when it has lasted the plan's minimum duration, the canary
    served the minimum requests in it and every guard passes.
    """
    plan = spec.plan
    if plan is None or state.phase in ("promoted", "rolled_back"):
        return None
    if verdict.judgement == "breach":
        reason = "; ".join(verdict.reasons)
        return _change(state, Transition(spec.model, spec.rollout, "rollback", "auto", state.weight, 0.0,
                                         state.step, now, reason), phase="rolled_back", weight=0.0)
    if state.phase == "paused" or spec.config.shadow or state.held or verdict.judgement != "pass":
        return None
    if now - state.step_started_at < plan.min_step_duration_s or canary_requests < plan.min_requests_per_step:
        return None
    passed = (f"step {state.step + 1}/{len(plan.steps)} at {state.weight:.0%} passed: "
              f"{canary_requests:.0f} canary requests in {now - state.step_started_at:.0f}s, every guard within")
    if state.step + 1 >= len(plan.steps):  # the last step was below 1.0: hold for a manual promote
        return _change(state, Transition(spec.model, spec.rollout, "hold", "auto", state.weight, state.weight,
                                         state.step, now, passed + "; promote by hand"),
                       phase="running", weight=state.weight, new_window=False, held=True)
    step, weight = state.step + 1, plan.steps[state.step + 1]
    if weight >= 1.0:
        return _change(state, Transition(spec.model, spec.rollout, "promote", "auto", state.weight, 1.0, step,
                                         now, passed), phase="promoted", weight=1.0, step=step)
    return _change(state, Transition(spec.model, spec.rollout, "advance", "auto", state.weight, weight, step,
                                     now, passed), phase="running", weight=weight, step=step)


def act(spec: RolloutSpec, state: RolloutState, action: Action, now: float, reason: str = "") -> RolloutState:
    """An operator's command; ``CanaryStateError`` if the phase does not allow it."""
    why = reason or "by the admin API"

    def transition(kind: TransitionKind, to_weight: float, step: int | None = None) -> Transition:
        return Transition(spec.model, spec.rollout, kind, "admin", state.weight, to_weight,
                          state.step if step is None else step, now, why)

    phase = state.phase
    if action == "promote":
        _require(phase != "promoted", spec, "is already promoted")
        return _change(state, transition("promote", 1.0), phase="promoted", weight=1.0)
    if action == "rollback":
        _require(phase != "rolled_back", spec, "is already rolled back")
        return _change(state, transition("rollback", 0.0), phase="rolled_back", weight=0.0)
    if action == "pause":
        _require(phase == "running", spec, f"is {phase.replace('_', ' ')}; only a running canary pauses")
        return _change(state, transition("pause", state.weight), phase="paused", weight=state.weight,
                       new_window=False, held=state.held)
    _require(phase in ("paused", "rolled_back"), spec,
             f"is {phase.replace('_', ' ')}; resume continues a paused canary or restarts a rolled back one")
    if phase == "paused":
        return _change(state, transition("resume", state.weight), phase="running", weight=state.weight,
                       new_window=False, held=state.held)
    first = spec.first_weight()
    return _change(state, transition("restart", first, 0), phase="running", weight=first, step=0)


def _require(condition: bool, spec: RolloutSpec, problem: str) -> None:
    if not condition:
        raise CanaryStateError(f"the canary {spec.canary!r} of model {spec.model!r} {problem}")

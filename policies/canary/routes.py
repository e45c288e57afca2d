"""What the request path holds: a policy revision's canaries, and the live state they read.

``CanaryRoutes.assign`` is the whole per-request decision: a dict lookup, the rollout's
current phase and weight (kept up to date in place by the controller), and at most one
stable hash. No I/O, no locks; the event loop is the only writer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from policies.canary.assign import VersionChoice, is_canary
from policies.canary.guards import Verdict
from policies.canary.rollout import RolloutSpec, RolloutState
from policies.canary.stats import VersionStats


@dataclass(eq=False, slots=True)
class Live:
    """A rollout as this process knows it."""

    spec: RolloutSpec
    state: RolloutState | None = None
    """None until the store answered once: meanwhile every request goes to stable."""
    verdict: Verdict | None = None
    """The guards' last judgement of the current step."""
    window: dict[str, VersionStats] = field(default_factory=dict)
    """The current step's statistics per version, as last read."""
    shadow_in_flight: int = 0
    shadow_dropped: int = 0
    """Mirrors skipped because ``shadow_max_concurrency`` were in flight."""


class ShadowPermit:
    """A slot for one mirrored call; ``release()`` when it ends (twice is harmless)."""

    __slots__ = ("_live",)

    def __init__(self, live: Live) -> None:
        self._live: Live | None = live

    def release(self) -> None:
        if self._live is not None:
            self._live.shadow_in_flight -= 1
            self._live = None


class CanaryRoutes:
    """The canaries of one policy revision: requests served under it assign with this."""

    def __init__(self, lives: dict[str, Live], specs: dict[str, RolloutSpec], stable: dict[str, str],
                 rng: random.Random) -> None:
        self.specs = specs
        """Per model with a canary, its rollout."""
        self._lives = lives  # the controller's, by rollout id: states change in place
        self._rng = rng
        self._plain = {model: VersionChoice(model, version, "stable") for model, version in stable.items()}
        self._choices = {model: _Choices(spec) for model, spec in specs.items()}

    def assign(self, model: str, sticky_key: str | None) -> VersionChoice:
        """The version serving this request (and the one mirroring it, in shadow mode)."""
        choices = self._choices.get(model)
        if choices is None:
            # "default" is policies.document.DEFAULT_VERSION (importing it here would be a cycle)
            return self._plain.get(model) or VersionChoice(model, "default", "stable")
        spec = choices.spec
        live = self._lives.get(spec.rollout)
        state = live.state if live is not None else None
        if state is None or state.phase == "rolled_back":
            return choices.stable
        if state.phase == "promoted":
            return choices.promoted
        if spec.config.shadow:
            return choices.mirrored if self._rng.random() < spec.config.shadow_share else choices.stable
        return choices.canary if is_canary(model, sticky_key, state.weight, self._rng) else choices.stable


class _Choices:
    """The few answers ``assign`` can give for one rollout, made once."""

    __slots__ = ("canary", "mirrored", "promoted", "spec", "stable")

    def __init__(self, spec: RolloutSpec) -> None:
        self.spec = spec
        self.stable = VersionChoice(spec.model, spec.stable, "stable", None, spec.rollout)
        self.canary = VersionChoice(spec.model, spec.canary, "canary", None, spec.rollout)
        self.promoted = VersionChoice(spec.model, spec.canary, "stable", None, spec.rollout)
        self.mirrored = VersionChoice(spec.model, spec.stable, "stable", spec.canary, spec.rollout)

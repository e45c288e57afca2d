"""What ``GET /admin/canaries`` and ``switchyard canary status`` show about one rollout."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from policies.canary.controller import Live
    from policies.canary.rollout import RolloutSpec, RolloutState


def describe(live: Live, now: float) -> dict[str, Any]:
    """One rollout as plain JSON values, with a sentence saying what to do next."""
    spec, state = live.spec, live.state
    plan = spec.plan
    out: dict[str, Any] = {
        "model": spec.model, "rollout": spec.rollout, "stable": spec.stable, "canary": spec.canary,
        "mode": spec.mode, "phase": state.phase if state else "unknown",
        "weight": state.weight if state else None,
        "steps": list(plan.steps) if plan else None,
        "step": state.step + 1 if state and plan else None,
        "step_elapsed_s": round(now - state.step_started_at, 3) if state else None,
        "min_step_duration_s": plan.min_step_duration_s if plan else None,
        "min_requests_per_step": plan.min_requests_per_step if plan else None,
        "revision": state.revision if state else None,
        "window": {version: stats.summary() for version, stats in live.window.items()},
        "verdict": ({"judgement": live.verdict.judgement, "checks": [c.as_dict() for c in live.verdict.checks]}
                    if live.verdict else None),
        "history": [asdict(t) for t in state.history] if state else [],
        "next": next_step(spec, state),
    }
    if spec.config.shadow:
        out["shadow"] = {"share": spec.config.shadow_share, "max_concurrency": spec.config.shadow_max_concurrency,
                         "in_flight": live.shadow_in_flight, "dropped": live.shadow_dropped}
    return out


def next_step(spec: RolloutSpec, state: RolloutState | None) -> str:
    """What happens next, or what the operator should do."""
    if state is None:
        return "state not known yet (store unreachable?): every request goes to stable"
    last = state.last.reason if state.last else ""
    if state.phase == "promoted":
        return (f"promoted: {spec.canary} serves all traffic. Update the policy: set stable: {spec.canary} "
                f"and remove canary (this state overrides the document until then)")
    if state.phase == "rolled_back":
        return (f"rolled back: {last}. Every request goes to {spec.stable}. Fix {spec.canary}, then resume "
                f"(restarts from the first step), or remove canary from the policy")
    if state.phase == "paused":
        return "paused: the weight holds; guards still roll back on a breach. Resume to continue"
    if spec.mode == "fixed":
        return "fixed split: no plan, no automatic steps. Promote or roll back by hand"
    if spec.mode == "shadow":
        return "shadow: mirrored traffic is judged; a breach stops it. Promote by hand, or start a split"
    if state.held:
        return "the last step passed: promote by hand"
    return "running: advances when the step's duration, requests and guards all pass"

"""What ``GET /admin/canaries`` and ``switchyard canary status`` show about one rollout."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from policies.canary.rollout import RolloutSpec, RolloutState
    from policies.canary.routes import Live


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


def render(rollouts: list[dict[str, Any]]) -> str:
    """``describe`` output as text for ``switchyard canary status``."""
    if not rollouts:
        return "no canaries in the active policy"
    return "\n\n".join(_render_one(r) for r in rollouts)


def _render_one(r: dict[str, Any]) -> str:
    weight = "?" if r["weight"] is None else f"{r['weight']:.1%}"
    head = f"{r['model']}: canary {r['canary']} beside stable {r['stable']} ({r['mode']}), {r['phase']}, weight {weight}"
    if r["steps"] and r["phase"] in ("running", "paused"):
        steps = ", ".join(f"{s:.0%}" for s in r["steps"])
        head += (f", step {r['step']}/{len(r['steps'])} [{steps}] for {_duration(r['step_elapsed_s'])}"
                 f" (needs {_duration(r['min_step_duration_s'])} and {r['min_requests_per_step']} canary requests)")
    lines = [head]
    if r["window"]:
        lines.append(f"  {'this step':<16} {'requests':>9} {'errors':>8} {'blocked':>8} {'ttft p95':>9} {'e2e p95':>9}")
        for role in ("stable", "canary"):
            version = r[role]
            w = r["window"].get(version)
            if w is not None:
                lines.append(f"  {role + ' ' + version:<16} {w['requests']:>9.0f} {_rate(w['error_rate']):>8} "
                             f"{_rate(w['moderation_block_rate']):>8} {_seconds(w['ttft_p95_s']):>9} "
                             f"{_seconds(w['e2e_p95_s']):>9}")
    if r["verdict"]:
        lines.append(f"  guards: {r['verdict']['judgement']}")
        lines += [f"    {c['judgement']:<6} {c['reason']}" for c in r["verdict"]["checks"]]
    if "shadow" in r:
        s = r["shadow"]
        lines.append(f"  shadow: {s['share']:.0%} mirrored, {s['in_flight']}/{s['max_concurrency']} in flight here, "
                     f"{s['dropped']} skipped at the bound")
    for t in r["history"][-3:]:
        lines.append(f"  {_when(t['at'])} {t['kind']} by {t['actor']}: {t['from_weight']:.1%} -> "
                     f"{t['to_weight']:.1%}; {t['reason']}")
    lines.append(f"  next: {r['next']}")
    return "\n".join(lines)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) + "Z"

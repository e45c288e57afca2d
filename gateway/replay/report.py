"""What a replay found per policy, and the side-by-side table (or JSON) that shows it.

Cost is priced with each policy's own ``models.<name>.prices`` and the usage the simulated
backends reported; the cache hit rate is cached prompt tokens over prompt tokens (SGLang's
``prompt_tokens_details.cached_tokens``); TTFT is measured at the client, gateway included.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from backends.types import PromptTokensDetails, Usage
from gateway.replay.drive import Outcome
from gateway.replay.traffic import Traffic
from policies.document import Policy
from policies.spend import Charge

PERCENTILES = (50, 95, 99)


@dataclass
class PolicyReport:
    """The replay of one policy, summed up."""

    label: str
    version: str
    sent: int
    answered: int
    elapsed_s: float
    decisions: dict[str, int] = field(default_factory=dict)
    """Answered requests by ``"<tier> <model>"`` (tier ``direct`` for a model asked for by name)."""
    cost_usd: float = 0.0
    unpriced_models: list[str] = field(default_factory=list)
    """Models that answered but have no ``prices`` in the policy (counted as free)."""
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cache_by_model: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per answering model: ``prompt_tokens`` and ``cached_tokens``."""
    ttft_ms: dict[str, float | None] = field(default_factory=dict)
    """``p50``, ``p95``, ``p99`` of time to first content chunk, answered requests only."""
    ttft_by_model: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """The same per answering model."""
    trimmed_requests: int = 0
    trimmed_tokens: int = 0
    rejections: dict[str, int] = field(default_factory=dict)
    """Requests not answered, by ``"<status> <code>"`` (status ``stream`` for an error event)."""
    workers: dict[str, int] = field(default_factory=dict)
    tier_switches: int = 0
    """Turns answered by another tier than the conversation's previous turn."""
    conversations_switching: int = 0
    """Conversations with at least one tier switch."""
    routed_conversations: int = 0
    """Conversations with a turn through a difficulty route."""
    """Requests by worker, labelled ``<id> <address in the policy>``."""

    @property
    def hit_rate(self) -> float:
        """Share of prompt tokens read from the prefix cache."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the hit rate."""
        return {**asdict(self), "hit_rate": self.hit_rate}


def summarise(label: str, policy: Policy, workers: Mapping[str, str], outcomes: Sequence[Outcome],
              elapsed_s: float) -> PolicyReport:
    """Add up the outcomes of one policy's replay.

    Args:
        label: The column heading (usually the policy file's name).
        policy: The replayed policy, for prices and its version.
        workers: Gateway worker id -> the address in the policy; every one gets a row.
        outcomes: One per request sent.
        elapsed_s: Wall time of the replay.
    """
    answered = [o for o in outcomes if o.answered]
    report = PolicyReport(label, policy.version, len(outcomes), len(answered), elapsed_s)
    report.decisions = dict(Counter(f"{o.tier or 'direct'} {o.model or '?'}" for o in answered))
    report.tier_switches, report.conversations_switching, report.routed_conversations = _switches(answered)
    report.cost_usd, report.unpriced_models = _cost(policy, answered)
    report.prompt_tokens = sum(o.prompt_tokens for o in answered)
    report.cached_tokens = sum(o.cached_tokens for o in answered)
    report.completion_tokens = sum(o.completion_tokens for o in answered)
    for outcome in answered:
        tokens = report.cache_by_model.setdefault(outcome.model or "?", {"prompt_tokens": 0, "cached_tokens": 0})
        tokens["prompt_tokens"] += outcome.prompt_tokens
        tokens["cached_tokens"] += outcome.cached_tokens
    report.ttft_ms = _percentiles(answered)
    for model in sorted({o.model or "?" for o in answered}):
        report.ttft_by_model[model] = _percentiles([o for o in answered if (o.model or "?") == model])
    trimmed = [o.trimmed_tokens for o in outcomes if o.trimmed_tokens]
    report.trimmed_requests, report.trimmed_tokens = len(trimmed), sum(trimmed)
    report.rejections = dict(Counter(_rejection(o) for o in outcomes if not o.answered))
    served = Counter(o.worker for o in answered if o.worker)
    report.workers = {f"{wid} {address}": served.pop(wid, 0) for wid, address in workers.items()}
    report.workers.update({f"{wid} ?": count for wid, count in served.items()})
    return report


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values; ``None`` for no values."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _percentiles(outcomes: Sequence[Outcome]) -> dict[str, float | None]:
    ttfts = sorted(o.ttft_s * 1000 for o in outcomes if o.ttft_s is not None)
    return {f"p{p}": percentile(ttfts, p) for p in PERCENTILES}


def _switches(answered: Sequence[Outcome]) -> tuple[int, int, int]:
    """Tier switches between consecutive routed turns of a conversation (in file order), the
    conversations with one, and the conversations routed at all."""
    last: dict[str, str] = {}
    switching: set[str] = set()
    switches = 0
    for outcome in sorted(answered, key=lambda o: o.line):
        if outcome.tier is None:
            continue
        previous = last.get(outcome.conversation)
        if previous is not None and previous != outcome.tier:
            switches += 1
            switching.add(outcome.conversation)
        last[outcome.conversation] = outcome.tier
    return switches, len(switching), len(last)


def _cost(policy: Policy, answered: Sequence[Outcome]) -> tuple[float, list[str]]:
    total, unpriced = 0.0, set()
    for outcome in answered:
        config = policy.models.get(outcome.model or "")
        if config is None or config.prices is None:
            unpriced.add(outcome.model or "?")
            continue
        usage = Usage(prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens,
                      prompt_tokens_details=PromptTokensDetails(cached_tokens=outcome.cached_tokens))
        total += Charge.from_usage("replay", outcome.model or "", usage, config.prices).cost_usd
    return total, sorted(unpriced)


def _rejection(outcome: Outcome) -> str:
    if outcome.status == 200:
        return f"stream {outcome.code}"
    return f"{outcome.status or '-'} {outcome.code or 'error'}"


# --- output -------------------------------------------------------------------------------


def render_json(traffic: Traffic, reports: Sequence[PolicyReport]) -> str:
    """The whole comparison as one JSON document."""
    return json.dumps({"traffic": _traffic_dict(traffic), "policies": [r.to_dict() for r in reports]},
                      indent=2)


def _traffic_dict(traffic: Traffic) -> dict[str, Any]:
    return {"source": traffic.source, "requests": len(traffic.requests),
            "skipped_no_content": traffic.skipped_no_content}


Row = tuple[str, list[str]]


def render_table(traffic: Traffic, reports: Sequence[PolicyReport], pace: str) -> str:
    """One column per policy, one row per figure; sections for the breakdowns."""
    header = (f"Replay of {traffic.source}: {len(traffic.requests)} requests "
              f"(skipped: no content {traffic.skipped_no_content}), {pace}")
    rows: list[Row] = [("policy", [r.label for r in reports]),
                       ("version", [r.version for r in reports]),
                       ("answered / sent", [f"{r.answered} / {r.sent}" for r in reports]),
                       ("wall time", [f"{r.elapsed_s:.1f} s" for r in reports])]
    rows += _breakdown("routing (tier model)", [r.decisions for r in reports], shares=True)
    rows.append(("tier switches (conversations switching / routed)",
                 [f"{r.tier_switches} ({r.conversations_switching} / {r.routed_conversations})" for r in reports]))
    rows += _money_rows(reports)
    rows += _cache_rows(reports)
    rows += _ttft_rows(reports)
    rows.append(("trimmed requests (tokens)", [f"{r.trimmed_requests} ({r.trimmed_tokens:,})" for r in reports]))
    rows += _breakdown("rejections (status code)", [r.rejections for r in reports], empty="none")
    rows += _breakdown("requests by worker", [r.workers for r in reports])
    return header + "\n\n" + _layout(rows)


def _money_rows(reports: Sequence[PolicyReport]) -> list[Row]:
    rows: list[Row] = [("expected cost (USD)", [f"${r.cost_usd:.4f}" for r in reports])]
    if any(r.unpriced_models for r in reports):
        rows.append(("  answered by unpriced models", [", ".join(r.unpriced_models) or "-" for r in reports]))
    return rows


def _cache_rows(reports: Sequence[PolicyReport]) -> list[Row]:
    rows: list[Row] = [("prefix-cache hit rate", [f"{r.hit_rate:.1%}" for r in reports]),
                       ("  cached / prompt tokens", [f"{r.cached_tokens:,} / {r.prompt_tokens:,}" for r in reports])]
    models = list(dict.fromkeys(m for r in reports for m in sorted(r.cache_by_model)))
    for model in models:
        cells = []
        for report in reports:
            tokens = report.cache_by_model.get(model)
            cells.append(f"{tokens['cached_tokens'] / tokens['prompt_tokens']:.1%}"
                         if tokens and tokens["prompt_tokens"] else "-")
        rows.append((f"  on {model}", cells))
    return rows


def _ttft_rows(reports: Sequence[PolicyReport]) -> list[Row]:
    rows: list[Row] = [("TTFT p50 / p95 / p99 (ms)", [_ttft(r.ttft_ms) for r in reports])]
    for model in dict.fromkeys(m for r in reports for m in r.ttft_by_model):
        rows.append((f"  on {model}", [_ttft(r.ttft_by_model.get(model, {})) for r in reports]))
    return rows


def _ttft(values: Mapping[str, float | None]) -> str:
    if not values:
        return "-"
    return " / ".join("-" if v is None else f"{v:.0f}" for v in values.values())


def _breakdown(title: str, counts: Sequence[Mapping[str, int]], *, shares: bool = False,
               empty: str = "") -> list[Row]:
    """A title row, then one row per key of any of the counters (``empty`` on the title if none)."""
    keys = list(dict.fromkeys(k for c in counts for k in sorted(c)))
    rows: list[Row] = [(title, ["" if keys else empty] * len(counts))]
    for key in keys:
        cells = []
        for c in counts:
            total = sum(c.values())
            value = c.get(key, 0)
            cells.append(f"{value} ({value / total:.1%})" if shares and total else str(value))
        rows.append((f"  {key}", cells))
    return rows


def _layout(rows: Sequence[Row]) -> str:
    first = max(len(label) for label, _ in rows) + 3
    widths = [max(len(cells[i]) for _, cells in rows) + 3 for i in range(len(rows[0][1]))]
    return "\n".join(
        (label.ljust(first) + "".join(cell.ljust(w) for cell, w in zip(cells, widths))).rstrip()
        for label, cells in rows)

"""What the console's pages show, read from the gateway as it is: no state of its own.

Workers come from the active runtime's pools (health, circuit, in-flight, queue) and the
process's metrics (prompt tokens each worker answered, cached or not; failed attempts).
Difficulty routes from the policy (threshold, target share) and the metrics (decisions by
tier, the score histogram, tokens by tier priced at the policy's prices). Usage from the
ledger the admin API reads. Every figure is a total since the process started; the page
turns successive totals into rates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from gateway.runtime import Runtime
from gateway.telemetry.metrics import Metrics
from policies.limits_config import PriceConfig
from policies.scopes import tenant_scope


def totals(metric: MetricWrapperBase, suffix: str = "_total") -> dict[tuple[str, ...], float]:
    """A metric's samples named ``<name><suffix>``, by their label values in label order."""
    out: dict[tuple[str, ...], float] = {}
    for family in metric.collect():
        for sample in family.samples:
            if sample.name == family.name + suffix:
                out[tuple(sample.labels.values())] = sample.value
    return out


def workers_view(runtime: Runtime, metrics: Metrics) -> dict[str, Any]:
    """Every pool's workers: health, circuit, load, prefix-cache hits and failed attempts."""
    tokens = totals(metrics.worker_tokens)
    errors: dict[tuple[str, str], dict[str, float]] = {}
    for (pool_name, worker_id, code), count in totals(metrics.worker_errors).items():
        errors.setdefault((pool_name, worker_id), {})[code] = count
    pools = []
    for name in sorted(runtime.pools):
        pool = runtime.pools[name]
        rows = []
        for worker in pool.workers:
            cached = tokens.get((name, worker.id, "cached"), 0.0)
            uncached = tokens.get((name, worker.id, "input"), 0.0)
            prompt = cached + uncached
            health = worker.last_health
            rows.append({
                "id": worker.id, "address": worker.address, "kind": worker.backend.kind,
                "healthy": worker.healthy, "detail": health.detail, "circuit": worker.circuit.state,
                "in_flight": worker.in_flight, "queued": health.queued, "running": health.running,
                "prompt_tokens": int(prompt), "cached_tokens": int(cached),
                "cache_hit_rate": round(cached / prompt, 4) if prompt else None,
                "errors": errors.get((name, worker.id), {}),
            })
        pools.append({"name": name, "workers": rows})
    return {"pools": pools}


def _histogram(metrics: Metrics, route: str) -> list[dict[str, float]]:
    """The route's score distribution as (upper bound, count in that bucket) pairs."""
    cumulative = sorted(((float(labels[1]), value) for labels, value in totals(metrics.route_scores, "_bucket").items()
                         if labels[0] == route), key=lambda pair: pair[0])
    out, below = [], 0.0
    for bound, count in cumulative:
        if math.isinf(bound):
            continue
        out.append({"le": bound, "count": count - below})
        below = count
    return out


def _cost(prices: PriceConfig | None, tokens: dict[str, float]) -> float | None:
    if prices is None:
        return None
    cached_price = prices.input if prices.cached_input is None else prices.cached_input
    return (tokens.get("input", 0.0) * prices.input + tokens.get("cached", 0.0) * cached_price
            + tokens.get("output", 0.0) * prices.output) / 1_000_000


def routes_view(runtime: Runtime, metrics: Metrics) -> dict[str, Any]:
    """Every difficulty route: decisions by tier, the score histogram, the threshold and
    the target share, and what the cheap tier's requests would have cost on the strong model."""
    decisions = totals(metrics.tiers)
    tokens = totals(metrics.route_tokens)
    routes = []
    for name in sorted(runtime.routes):
        route, config = runtime.routes[name], runtime.policy.routes[name]
        cheap_tokens = {kind: v for (r, tier, kind), v in tokens.items() if r == name and tier == "cheap"}
        cheap_cost = _cost(runtime.policy.models[route.cheap].prices, cheap_tokens)
        strong_cost = _cost(runtime.policy.models[route.strong].prices, cheap_tokens)
        saved = None if cheap_cost is None or strong_cost is None else round(strong_cost - cheap_cost, 6)
        routes.append({
            "name": name, "cheap": route.cheap, "strong": route.strong,
            "threshold": route.threshold, "target_strong_share": config.strong_share,
            "decisions": {tier: decisions.get((name, tier), 0.0) for tier in ("cheap", "strong")},
            "histogram": _histogram(metrics, name),
            "cheap_tier_tokens": cheap_tokens, "estimated_saved_usd": saved,
        })
    return {"routes": routes}


async def usage_view(runtime: Runtime, days: int) -> dict[str, Any]:
    """Every tenant's usage by model and day over ``days``, and the tenants by spend today."""
    tenants = []
    for name in sorted(runtime.policy.tenants):
        report = await runtime.accounting.ledger.report(tenant_scope(name), days)
        tenants.append({"tenant": name, "total_tokens": report.total_tokens,
                        "total_usd": round(report.total_usd, 6), "rows": [asdict(r) for r in report.rows]})
    return {"days": days, "tenants": tenants, "top_today": _top_today(tenants)}


def _top_today(tenants: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    newest = time.strftime("%Y-%m-%d", time.gmtime())  # the ledger's UTC day
    today = []
    for tenant in tenants:
        rows = [row for row in tenant["rows"] if row["day"] == newest]
        tokens = sum(r["input_tokens"] + r["cached_input_tokens"] + r["output_tokens"] for r in rows)
        today.append({"tenant": tenant["tenant"], "day": newest, "requests": sum(r["requests"] for r in rows),
                      "tokens": tokens, "usd": round(sum(r["cost_usd"] for r in rows), 6)})
    return sorted(today, key=lambda t: (-t["usd"], -t["tokens"], t["tenant"]))[:10]

"""Reduce the cells of a run to a summary (medians over rounds) and render it as Markdown."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from typing import Any

BARS = {"added_p50_ms": 1.5, "added_p99_ms": 5.0, "c32_rps": 1500.0}
"""Issue 7's targets: added latency at 200 req/s (non-streaming), throughput at c=32."""
POLICY_BARS = {"prod_vs_bare": 0.8, "bare_vs_floor": 0.6, "prod_added_p99_ms": 3.0, "peak_rss_mb": 150.0,
               "prod_added_ttft_8k_ms": 1.5, "prod_added_ttft_8k_prefill_ms": 1.5,
               "prod_added_ttft_chat8k_prefill_ms": 1.5}
"""Issue 17's targets: the production policy's c=32 req/s against the bare one's, the bare
one's against the featureless aiohttp proxy's, the production policy's added p99 at 200 req/s
and the peak RSS of one serving process with both ONNX models loaded."""

LABELS = {
    "direct": ("direct to the sim", "-", "-"),
    "gateway": ("Switchyard gateway", "uvicorn+uvloop", "aiohttp"),
    "gateway_prod": ("Switchyard, production policy", "uvicorn+uvloop", "aiohttp"),
    "gateway_prod_redis": ("Switchyard, production policy on Redis", "uvicorn+uvloop", "aiohttp"),
    "gateway_granian": ("Switchyard gateway", "granian (uvloop)", "aiohttp"),
    "floor_httpx": ("featureless Litestar proxy", "uvicorn+uvloop", "httpx (default transport)"),
    "floor_httpx_aiohttp": ("featureless Litestar proxy", "uvicorn+uvloop", "httpx over httpx-aiohttp"),
    "floor_aiohttp": ("featureless Litestar proxy", "uvicorn+uvloop", "aiohttp ClientSession"),
}


LATENCY_ROWS = (("r200", "latency_ms"), ("r200_stream", "ttft_ms"), ("r200_stream", "latency_ms"),
                ("r25", "latency_ms"))
"""(load, measure) pairs compared with going direct: latency, and streaming TTFT and last byte;
latency again with requests far apart (25 req/s)."""


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _cell(runs: list[dict[str, Any]], target: str, load: str) -> dict[str, Any] | None:
    """Medians over the rounds of one (target, load) cell."""
    mine = [r for r in runs if r["target"] == target and r["load"] == load]
    if not mine:
        return None

    def med(get: Callable[[dict[str, Any]], float | None]) -> float | None:
        return _median(get(r) for r in mine)

    out: dict[str, Any] = {
        "rounds": len(mine),
        "rps": med(lambda r: r["rps"]),
        "rps_rounds": [round(r["rps"], 1) for r in mine],
        "rps_first_second": med(lambda r: r["rps_by_second"][0]),
        "rps_last_second": med(lambda r: r["rps_by_second"][-1]),
        "errors": sum(r["errors"] for r in mine),
        "cpu_s_per_1k": med(lambda r: r["cpu_s_per_1k"]),
        "other_share_cpu0": med(lambda r: r["other_share"]["cpu0"]),
        "other_share_cpu1": med(lambda r: r["other_share"]["cpu1"]),
        "peak_rss_mb": med(lambda r: r.get("peak_rss_mb")),
    }
    per_1k = out["cpu_s_per_1k"]
    # requests per second of the target's own CPU: what one whole core would serve, and
    # unlike req/s it barely moves when other work on a shared machine takes part of the core
    out["rps_per_cpu_s"] = 1000 / per_1k if per_1k else None
    for kind in ("latency_ms", "ttft_ms"):
        if mine[0].get(kind):
            out[kind] = {p: _median(r[kind][p] for r in mine) for p in ("p50", "p90", "p99")}
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Cells by load and target, gateway-minus-direct latency, ratios, and the issue's bars."""
    loads = sorted({r["load"] for r in runs})
    targets = sorted({r["target"] for r in runs})
    cells = {load: {t: c for t in targets if (c := _cell(runs, t, load))} for load in loads}
    summary: dict[str, Any] = {"cells": cells, "added_ms": {}, "ratios": {}}
    for load, kind in LATENCY_ROWS:
        pair = cells.get(load, {})
        for target in LABELS:
            if target != "direct" and target in pair and "direct" in pair:
                mine, direct = pair[target][kind], pair["direct"][kind]
                summary["added_ms"][f"{target}.{load}.{kind}"] = {p: mine[p] - direct[p] for p in ("p50", "p99")}
    c32 = cells.get("c32", {})
    base = {"direct": "direct", "floor_aiohttp": "floor_aiohttp", "gateway": "gateway"}
    for name, reference in base.items():
        if reference in c32:
            summary["ratios"][f"vs_{name}"] = {t: c["rps"] / c32[reference]["rps"] for t, c in c32.items()}
    summary["bars"] = _bars(summary, c32)
    summary["policy_bars"] = _policy_bars(summary, cells)
    return summary


def _added_p50(pair: dict[str, Any], target: str, kind: str) -> float | None:
    mine, direct = pair.get(target, {}).get(kind), pair.get("direct", {}).get(kind)
    return mine["p50"] - direct["p50"] if mine and direct else None


def _policy_bars(summary: dict[str, Any], cells: dict[str, Any]) -> dict[str, Any]:
    """Issue 17's bars, from cells of this run only (an absent cell leaves its bar out)."""
    c32 = cells.get("c32", {})
    rps = {t: c32.get(t, {}).get("rps") for t in ("gateway", "gateway_prod", "floor_aiohttp")}
    added = summary["added_ms"].get("gateway_prod.r200.latency_ms")
    rss = [c.get("peak_rss_mb") for load in cells.values() for t, c in load.items() if t == "gateway_prod"]
    measured = {
        "prod_vs_bare": rps["gateway_prod"] / rps["gateway"] if rps["gateway_prod"] and rps["gateway"] else None,
        "bare_vs_floor": rps["gateway"] / rps["floor_aiohttp"] if rps["gateway"] and rps["floor_aiohttp"] else None,
        "prod_added_p99_ms": added and added["p99"],
        "peak_rss_mb": max((r for r in rss if r is not None), default=None),
        "prod_added_ttft_8k_ms": _added_p50(cells.get("r20_stream_prompt8k", {}), "gateway_prod", "ttft_ms"),
        "prod_added_ttft_8k_prefill_ms": _added_p50(cells.get("r10_stream_prompt8k_prefill", {}), "gateway_prod",
                                                    "ttft_ms"),
        "prod_added_ttft_chat8k_prefill_ms": _added_p50(cells.get("r10_stream_chat8k_prefill", {}), "gateway_prod",
                                                        "ttft_ms"),
    }
    return {key: {"value": value, "bar": POLICY_BARS[key],
                  "met": value >= POLICY_BARS[key] if key in ("prod_vs_bare", "bare_vs_floor")
                  else value <= POLICY_BARS[key]}
            for key, value in measured.items() if value is not None}


def _bars(summary: dict[str, Any], c32: dict[str, Any]) -> dict[str, Any]:
    """The issue's bars for the gateway under each ASGI server measured."""
    bars: dict[str, Any] = {}
    for target in ("gateway", "gateway_granian"):
        added = summary["added_ms"].get(f"{target}.r200.latency_ms")
        measured = {"added_p50_ms": added and added["p50"], "added_p99_ms": added and added["p99"],
                    "c32_rps": c32.get(target, {}).get("rps")}
        for key, value in measured.items():
            if value is not None:
                met = value >= BARS[key] if key == "c32_rps" else value <= BARS[key]
                bars[f"{target}.{key}"] = {"value": value, "bar": BARS[key], "met": met}
    return bars


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _noise(cell: dict[str, Any]) -> str:
    return f"{100 * cell['other_share_cpu0']:.0f}% / {100 * cell['other_share_cpu1']:.0f}%"


def render(summary: dict[str, Any]) -> str:
    """The Markdown tables printed at the end of a run (and pasted into docs/performance.md)."""
    parts = [_throughput_table(summary), _latency_table(summary), _policy_bars_table(summary),
             _long_table(summary), _bars_table(summary)]
    return "\n\n".join(p for p in parts if p)


def _throughput_table(summary: dict[str, Any]) -> str:
    cells = summary["cells"]
    rows = [("| load | target | server | upstream client | req/s | 1st s → last s | vs direct | vs aiohttp floor "
             "| CPU-s / 1k req | req per CPU-s | p50 ms | p99 ms | peak RSS MiB | taken by others, core 0 / 1 |"),
            "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for load in ("c32", "c32_stream"):
        pair = cells.get(load, {})
        for target, (what, server, client) in LABELS.items():
            cell = pair.get(target)
            if not cell:
                continue
            direct = pair.get("direct", {}).get("rps")
            floor = pair.get("floor_aiohttp", {}).get("rps")
            latency = cell.get("ttft_ms" if load.endswith("stream") else "latency_ms", {})
            rows.append(
                f"| {'c=32 stream' if load.endswith('stream') else 'c=32'} | {what} | {server} | {client} "
                f"| {_f(cell['rps'], 0)} | {_f(cell['rps_first_second'], 0)} → {_f(cell['rps_last_second'], 0)} "
                f"| {_f(cell['rps'] / direct if direct else None)} "
                f"| {_f(cell['rps'] / floor if floor else None)} | {_f(cell['cpu_s_per_1k'], 3)} "
                f"| {_f(cell['rps_per_cpu_s'], 0)} | {_f(latency.get('p50'), 1)} | {_f(latency.get('p99'), 1)} "
                f"| {_f(cell.get('peak_rss_mb'), 0)} | {_noise(cell)} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def _latency_table(summary: dict[str, Any]) -> str:
    cells = summary["cells"]
    rows = [("| open loop (200 req/s unless named) | target | direct p50 | p50 | added p50 | direct p99 | p99 "
             "| added p99 | CPU-s / 1k req | taken by others, core 0 / 1 |"),
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    names = {"r200.latency_ms": "non-streaming, latency (ms)", "r200_stream.ttft_ms": "streaming, TTFT (ms)",
             "r200_stream.latency_ms": "streaming, last byte (ms)",
             "r25.latency_ms": "non-streaming at 25 req/s, latency (ms)"}
    for load, kind in LATENCY_ROWS:
        pair = cells.get(load, {})
        for target, (what, server, client) in LABELS.items():
            if target == "direct" or target not in pair or "direct" not in pair:
                continue
            d, g = pair["direct"][kind], pair[target][kind]
            rows.append(f"| {names[f'{load}.{kind}']} | {what}, {server}, {client} | {_f(d['p50'])} "
                        f"| {_f(g['p50'])} | {_f(g['p50'] - d['p50'])} | {_f(d['p99'])} | {_f(g['p99'])} "
                        f"| {_f(g['p99'] - d['p99'])} | {_f(pair[target]['cpu_s_per_1k'], 3)} "
                        f"| {_noise(pair[target])} |")
    return "\n".join(rows) if len(rows) > 2 else ""


LONG_LOADS = {
    "r200_stream": ("streamed, 8 chunks, 200 req/s", 8, "ttft_ms"),
    "r50_stream200": ("streamed, 200 chunks, 50 req/s", 200, "ttft_ms"),
    "r20_prompt1k": ("1k-token prompt, 20 req/s", 0, "latency_ms"),
    "r20_prompt8k": ("8k-token prompt, 20 req/s", 0, "latency_ms"),
    "r20_prompt30k": ("30k-token prompt, 20 req/s", 0, "latency_ms"),
    "r20_stream_prompt8k": ("8k-token prompt streamed, 20 req/s (TTFT)", 0, "ttft_ms"),
    "r10_stream_prompt8k_prefill": ("8k-token prompt streamed, 10 req/s, worker prefilling (TTFT)", 0, "ttft_ms"),
    "r10_stream_chat8k_prefill": ("chats of 1k-8k tokens, 8 turns, streamed, 10 req/s, worker prefilling (TTFT)",
                                  0, "ttft_ms"),
    "r8_stream200_prefill": ("streamed, 200 chunks paced 5 ms apart by the worker, 8 req/s", 200, "ttft_ms"),
}
"""Section ``long``'s loads: label, chunks per request (0: not a chunk measurement), latency kind."""


def _long_table(summary: dict[str, Any]) -> str:
    """CPU per request (and per relayed chunk) and added latency, bare and production policy."""
    cells = summary["cells"]
    rows = [("| load | target | CPU ms / req | CPU µs / chunk | CPU µs / chunk past the 8th | p50 ms "
            "| added p50 ms | added p99 ms | taken by others, core 0 / 1 |"),
            "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for load, (label, chunks, kind) in LONG_LOADS.items():
        pair = cells.get(load, {})
        if load == "r200_stream" and "r50_stream200" not in cells:
            continue
        for target in ("floor_aiohttp", "gateway", "gateway_prod"):  # the floor only where it ran
            cell, direct = pair.get(target), pair.get("direct")
            if not cell or not direct:
                continue
            per_req = cell["cpu_s_per_1k"]  # CPU-s per 1,000 requests = CPU ms per request
            short = cells.get("r200_stream", {}).get(target, {}).get("cpu_s_per_1k")
            # past the 8th: against the 8-chunk cell of the same (zero-latency) simulator only
            same_sim = load == "r50_stream200" and short is not None
            marginal = (per_req - short) * 1000 / (chunks - 8) if same_sim else None
            mine, base = cell.get(kind, {}), direct.get(kind, {})
            rows.append(f"| {label} | {LABELS[target][0]} | {_f(per_req, 3)} "
                        f"| {_f(per_req * 1000 / chunks if chunks else None, 1)} | {_f(marginal, 1)} "
                        f"| {_f(mine.get('p50'))} | {_f(mine.get('p50', 0) - base.get('p50', 0))} "
                        f"| {_f(mine.get('p99', 0) - base.get('p99', 0))} | {_noise(cell)} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def _policy_bars_table(summary: dict[str, Any]) -> str:
    names = {"prod_vs_bare": ("production policy req/s at c=32 / bare policy's", ">="),
             "bare_vs_floor": ("bare policy req/s at c=32 / featureless aiohttp proxy's", ">="),
             "prod_added_p99_ms": ("production policy, added p99 at 200 req/s (ms)", "<="),
             "peak_rss_mb": ("peak RSS, production policy (both ONNX models), MiB", "<="),
             "prod_added_ttft_8k_ms": (("production policy, added TTFT p50 on an 8k-token prompt, "
                                       "zero-latency worker (ms)"), "<="),
             "prod_added_ttft_8k_prefill_ms": (("production policy, added TTFT p50 on an 8k-token prompt, "
                                               "worker prefilling (ms)"), "<="),
             "prod_added_ttft_chat8k_prefill_ms": (("production policy, added TTFT p50 on 1k-8k-token chats, "
                                                   "worker prefilling (ms)"), "<=")}
    rows = ["| bar (issue 17) | target | measured | met |", "|---|--:|--:|---|"]
    for key, bar in summary.get("policy_bars", {}).items():
        name, sign = names[key]
        rows.append(f"| {name} | {sign} {_f(bar['bar'])} | {_f(bar['value'])} | {'yes' if bar['met'] else 'no'} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def _bars_table(summary: dict[str, Any]) -> str:
    names = {"added_p50_ms": "added p50 at 200 req/s, non-streaming (ms)",
             "added_p99_ms": "added p99 at 200 req/s, non-streaming (ms)",
             "c32_rps": "req/s at c=32, one process"}
    rows = ["| bar (issue) | server | target | measured | met |", "|---|---|--:|--:|---|"]
    for key, bar in summary["bars"].items():
        target, name = key.split(".")
        sign = ">=" if name == "c32_rps" else "<="
        rows.append(f"| {names[name]} | {LABELS[target][1]} | {sign} {_f(bar['bar'], 1)} "
                    f"| {_f(bar['value'])} | {'yes' if bar['met'] else 'no'} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def render_profile(profile: dict[str, Any]) -> str:
    """Top self-time functions of Switchyard's code and of Litestar, and the share per package."""
    lines = [(f"Profile of {profile.get('target', 'gateway')} at {profile['load']} ({profile['samples']} samples, "
              f"{profile['rps']:,.0f} req/s while sampled; raw stacks: {profile['file']})"), "",
             "self time by package: " + ", ".join(
                 f"{p['package']} {p['percent']}%" for p in profile["self_by_package"])]
    for key, title in (("self_switchyard", "Switchyard code, self time"),
                       ("self_litestar", "Litestar, self time"),
                       ("total_switchyard", "Switchyard code, total (inclusive) time")):
        lines += ["", f"| {title} | % of samples |", "|---|--:|"]
        lines += [f"| `{row['function']}` | {row['percent']} |" for row in profile[key]]
    return "\n".join(lines)

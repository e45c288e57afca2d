"""1,000 concurrent streams through one gateway process: ``python -m bench.streams``.

One ``switchyard serve`` process in front of one simulated SGLang worker (20 ms between
tokens, so every stream stays open for seconds and they all overlap). All streams start at
once; then a second wave is cut by the client after a few chunks. Reported: errors, time to
first token percentiles, the gateway's open file descriptors and RSS before and after, and
what the gateway and the worker still hold once everything ended (in-flight requests,
running upstream requests): anything above zero is a leak. File descriptors are read again
after 160 s idle: pooled keep-alive connections to the worker are closed once idle past
75 s by a cleanup that runs every 75 s, so anything left above the start is a leak too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.overhead.procs import Service, bin_path, free_port, start
from bench.overhead.stack import API_KEY, PUBLIC_MODEL, SIM_MODEL, write_policy

RESULTS = Path(__file__).resolve().parents[1] / "results" / "streams.json"


def _proc(pid: int) -> dict[str, int]:
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return {"fds": len(list(Path(f"/proc/{pid}/fd").iterdir())), "rss_kb": rss}


async def _stream(session: aiohttp.ClientSession, url: str, tokens: int, cut_after: int | None) -> dict[str, Any]:
    body = {"model": PUBLIC_MODEL, "stream": True, "max_tokens": tokens,
            "messages": [{"role": "user", "content": "tell me a long story"}]}
    started = time.perf_counter()
    first: float | None = None
    chunks = 0
    try:
        async with session.post(url + "/v1/chat/completions", json=body,
                                headers={"authorization": f"Bearer {API_KEY}"}) as response:
            if response.status != 200:
                return {"ok": False, "error": f"HTTP {response.status}"}
            async for line in response.content:
                if line.startswith(b"data: {"):
                    chunks += 1
                    first = first or time.perf_counter()
                    if cut_after is not None and chunks >= cut_after:
                        return {"ok": True, "cut": True, "ttft_s": first - started}
                elif line.startswith(b"data: [DONE]"):
                    break
    except (aiohttp.ClientError, TimeoutError) as exc:
        return {"ok": False, "error": type(exc).__name__}
    done = first is not None and chunks >= tokens
    return {"ok": done, "ttft_s": (first - started) if first else None, "chunks": chunks,
            **({} if done else {"error": f"{chunks} of {tokens} chunks"})}


async def _wave(url: str, streams: int, tokens: int, cut_after: int | None) -> list[dict[str, Any]]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        return await asyncio.gather(*(_stream(session, url, tokens, cut_after) for _ in range(streams)))


async def _gauges(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        text = await response.text()
    out = {}
    for line in text.splitlines():
        if line.startswith(("switchyard_requests_in_flight ", "switchyard_backend_in_flight{")):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def _sim_running(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url + "/sim/stats") as response:
        stats = await response.json()
    return {k: v for k, v in stats.items() if k in ("running", "queued", "requests_total", "cancelled")}


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    ttfts = sorted(r["ttft_s"] for r in results if r.get("ttft_s") is not None)
    errors: dict[str, int] = {}
    for r in results:
        if not r["ok"]:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    q = statistics.quantiles(ttfts, n=100) if len(ttfts) > 2 else [0.0] * 99
    return {"streams": len(results), "ok": sum(r["ok"] for r in results), "errors": errors,
            "ttft_p50_ms": round(q[49] * 1000, 1), "ttft_p99_ms": round(q[98] * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=100, help="tokens per stream (20 ms apart)")
    parser.add_argument("--cut", type=int, default=300, help="streams of the second wave, cut after 5 chunks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        port = free_port()
        sim = start("sim", [bin_path("switchyard"), "sim", "--kind", "sglang", "--port", str(port),
                            "--model", SIM_MODEL, "--itl-ms", "20", "--max-running", str(args.streams * 2),
                            "--base-ttft-ms", "5", "--enable-cache-report"], f"http://127.0.0.1:{port}", workdir / "logs", ready_path="/health")
        policy = write_policy(workdir, sim.url)
        gport = free_port()
        gateway: Service = start("gateway", [bin_path("switchyard"), "serve", "--policy", str(policy), "--port",
                                             str(gport), "--log-level", "warning"], f"http://127.0.0.1:{gport}",
                                 workdir / "logs", ready_path="/readyz", env={"SWITCHYARD_ACCESS_LOG": "off"})
        try:
            before = _proc(gateway.pid)
            started = time.perf_counter()
            full = asyncio.run(_wave(gateway.url, args.streams, args.tokens, None))
            elapsed = time.perf_counter() - started
            during = _proc(gateway.pid)
            cut = asyncio.run(_wave(gateway.url, args.cut, args.tokens, 5))
            time.sleep(2.0)  # cancelled upstream requests and closes settle
            after = _proc(gateway.pid)
            gauges = asyncio.run(_gauges(gateway.url))
            sim_stats = asyncio.run(_sim_running(sim.url))
            # aiohttp closes pooled connections idle past keepalive_timeout (75 s, backends/http.py)
            # on a cleanup tick that itself runs every 75 s: up to 150 s
            time.sleep(160.0)
            idle = _proc(gateway.pid)
        finally:
            gateway.stop()
            sim.stop()
    report = {"full_wave": {**_summary(full), "seconds": round(elapsed, 2)}, "cut_wave": _summary(cut),
              "gateway_before": before, "gateway_after_full_wave": during, "gateway_after_all": after,
              "gateway_after_160s_idle": idle,
              "gateway_gauges_after": gauges, "sim_after": sim_stats,
              "args": vars(args), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

"""What output moderation costs the user of a stream: ``python -m bench.moderation.streaming``.

One ``switchyard serve`` process pinned to its own core, in front of one simulated SGLang
worker (``switchyard sim``: 20 ms to the first token, 10 ms between tokens, no batch slowdown)
on the other core with this load generator. The policy has five models on that worker, the
same in all but output moderation: off, ``incremental``, ``buffered``, ``async`` (the shipped
classifier and the default checks), and ``incremental`` with e-mail addresses redacted; input
moderation off so only the output side differs. A stream starts every ``1 / rate`` seconds, the
models in turn, so all share one run and one machine state. Each stream is ``--tokens`` tokens:
with ``--text answers`` (the default) the first words of one of XSTest's safe model answers
from the classifier's dev split (``safe_answers``), each word with its leading space a token;
the request carries the question that answer replies to (XSTest's prompt), as a real
client's would; with ``--text sim`` the simulator's own benign words.

Per mode: time to first *visible* token (the first SSE chunk whose delta carries text, as a
client shows it) and inter-token latency (gaps between chunks with text), p50 and p99, and the
difference to moderation off in the same run. Then, in process, the ``async`` leak: benign
texts with a blocked term at a random place, streamed in 4-character chunks; how many
characters of the term, and from the term's start on, reached the client before the cut
(``incremental`` and ``buffered`` beside it, where both must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.overhead.procs import CLIENT_CORE, GATEWAY_CORE, Service, bin_path, free_port, pinned, start
from bench.overhead.stack import API_KEY, SIM_MODEL
from policies.keys import hash_key
from policies.moderation.categories import PII_TYPES

MODES = ("off", "incremental", "buffered", "async", "incremental-email")
"""``incremental-email``: the default mode with e-mail addresses redacted (the default flags
them): every first word then waits for the next token, as it could begin an address."""
EMAIL_REDACTED = {t: {"action": "flag" if t == "ip_address" else "redact"} for t in PII_TYPES}


def _output(mode: str) -> dict[str, Any]:
    if mode == "incremental-email":
        return {"mode": "incremental", "pii": EMAIL_REDACTED}
    return {"mode": mode}
RESULTS = Path(__file__).resolve().parent / "streaming.json"
TERM = "acme secret plan"


def _policy(sim_url: str, classifier: str = "ngrams") -> dict[str, Any]:
    models = {f"mod-{mode}": {"deployments": [{"backend": "sim", "model": SIM_MODEL}]} for mode in MODES}
    moderation = {f"mod-{mode}": {"input": None, "output": _output(mode), "classifier": classifier}
                  for mode in MODES if mode != "off"}
    return {
        "version": "bench-moderation-streaming",
        "backends": {"sim": {"kind": "sglang", "workers": [sim_url], "health_interval_s": 5.0,
                             "selection": {"type": "round_robin"}}},
        "models": models,
        "moderation": {"models": moderation},
        "tenants": {"bench": {"models": ["*"], "keys": [{"name": "bench-key", "sha256": hash_key(API_KEY)}]}},
    }


def _start(workdir: Path, ttft_ms: float, itl_ms: float, classifier: str = "ngrams") -> tuple[Service, Service]:
    port = free_port()
    sim = start("sim", pinned(CLIENT_CORE, [
        bin_path("switchyard"), "sim", "--kind", "sglang", "--port", str(port), "--model", SIM_MODEL,
        "--base-ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms), "--itl-batch-factor", "0",
        "--prefill-us-per-token", "0"]), f"http://127.0.0.1:{port}", workdir / "logs", ready_path="/health")
    policy = workdir / "policy.yaml"
    policy.write_text(yaml.safe_dump(_policy(sim.url, classifier), sort_keys=False), encoding="utf-8")
    port = free_port()
    try:
        gateway = start("gateway", pinned(GATEWAY_CORE, [
            bin_path("switchyard"), "serve", "--policy", str(policy), "--port", str(port), "--workers", "1",
            "--log-level", "warning"]), f"http://127.0.0.1:{port}", workdir / "logs", ready_path="/readyz",
            timeout=60.0)
    except BaseException:
        sim.stop()
        raise
    return sim, gateway


async def _stream(session: aiohttp.ClientSession, url: str, model: str, tokens: int,
                  reply: tuple[str, list[str]] | None = None) -> dict[str, Any]:
    question = f"say something {random.random()}" if reply is None else reply[0]
    body: dict[str, Any] = {"model": model, "stream": True, "max_tokens": tokens,
                            "messages": [{"role": "user", "content": question}]}
    if reply is not None:
        body["sim_reply"] = reply[1]  # the simulator streams one piece per token, at its ITL
    finish = None
    started = time.perf_counter()
    stamps: list[float] = []
    async with session.post(url + "/v1/chat/completions", json=body,
                            headers={"authorization": f"Bearer {API_KEY}"}) as response:
        if response.status != 200:
            return {"ok": False, "error": f"HTTP {response.status}"}
        async for line in response.content:
            if line.startswith(b"data: {"):
                choices = json.loads(line[6:]).get("choices") or []
                if choices and (choices[0].get("delta") or {}).get("content"):
                    stamps.append(time.perf_counter())
                finish = (choices[0].get("finish_reason") if choices else None) or finish
    if not stamps:
        return {"ok": False, "error": f"no text (finish_reason {finish})"}
    return {"ok": True, "ttft_s": stamps[0] - started, "gaps_s": [b - a for a, b in itertools.pairwise(stamps)]}


async def _load(url: str, seconds: float, rate: float, tokens: int,
                replies: list[tuple[str, list[str]]] | None) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for mode in MODES:  # warm-up: one stream each
            await _stream(session, url, f"mod-{mode}", tokens)
        tasks: list[tuple[str, asyncio.Task[dict[str, Any]]]] = []
        begin = time.perf_counter()
        for i in range(int(seconds * rate)):
            await asyncio.sleep(max(0.0, begin + i / rate - time.perf_counter()))
            mode = MODES[i % len(MODES)]
            # the same text for the modes in turn: each round of streams shares one answer
            reply = replies[(i // len(MODES)) % len(replies)] if replies else None
            tasks.append((mode, asyncio.create_task(_stream(session, url, f"mod-{mode}", tokens, reply))))
        for mode, task in tasks:
            out[mode].append(await task)
    return out


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Per mode: TTFT and ITL p50/p99 in ms, and their difference to moderation off."""
    table: dict[str, dict[str, float]] = {}
    for mode, results in runs.items():
        ok = [r for r in results if r["ok"]]
        ttft = [r["ttft_s"] * 1000 for r in ok]
        gaps = [g * 1000 for r in ok for g in r["gaps_s"]]
        errors = sorted({r["error"] for r in results if not r["ok"]})
        table[mode] = {"streams": len(results), "errors": len(results) - len(ok), "error_kinds": errors,  # type: ignore[dict-item]
                       "ttft_p50_ms": _pct(ttft, 50), "ttft_p99_ms": _pct(ttft, 99),
                       "itl_p50_ms": _pct(gaps, 50), "itl_p99_ms": _pct(gaps, 99)}
    base = table["off"]
    for row in table.values():
        for key in ("ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms"):
            row[f"added_{key}"] = row[key] - base[key]
    return table


def leak(texts: int = 300, seed: int = 7) -> dict[str, dict[str, float]]:
    """Characters of a blocked term (and from its start on) delivered before the cut, per mode."""
    from policies.moderation import ModerationClassifier, ModerationConfig, Moderator

    classifier = ModerationClassifier.load()
    words = ("the plan for the week starts on Monday with a design review then we write the code "
             "and test it well before we ship it to everyone who asked for it").split()
    rng = random.Random(seed)
    out: dict[str, dict[str, float]] = {}
    cases = []
    for _ in range(texts):
        filler = [rng.choice(words) for _ in range(rng.randint(20, 80))]
        at = rng.randint(0, len(filler))
        head = " ".join(filler[:at]) + (" " if at else "")
        cases.append((head + TERM + " " + " ".join(filler[at:]) + ".", len(head)))
    for mode in ("incremental", "buffered", "async"):
        config = ModerationConfig.model_validate({"input": None, "output": {"mode": mode, "blocked_terms": [TERM]}})
        moderator = Moderator(config, classifier)
        term_chars, after_start = [], []
        for text, at in cases:
            stream = moderator.stream()
            assert stream is not None
            sent = ""
            for i in range(0, len(text), 4):
                release = stream.feed(text[i:i + 4])
                sent += release.text
                if release.blocked is not None:
                    break
            else:
                sent += stream.finish().text
            delivered = max(0, len(sent) - at)
            term_chars.append(min(delivered, len(TERM)))
            after_start.append(delivered)
        out[mode] = {"texts": texts, "term_chars_mean": sum(term_chars) / texts, "term_chars_max": max(term_chars),
                     "whole_term_delivered": sum(c == len(TERM) for c in term_chars) / texts,
                     "chars_after_term_start_mean": sum(after_start) / texts,
                     "chars_after_term_start_p99": _pct([float(a) for a in after_start], 99)}
    return out


def safe_answers(data: Path) -> list[tuple[str, str]]:
    """XSTest's model answers labelled safe, with the prompt each answers, from its dev split
    only (by prompt, as the classifier's training splits it): the classifier never trained on
    them, whole or cut. Shuffled with a fixed seed: the file is grouped by model, so the first
    120 were all GPT-4's and a short run measured one model's way of opening an answer."""
    import gzip
    import random

    from policies.moderation import data as D

    share = D.SETS["mod_xstest_completions"].dev_share
    with gzip.open(D.set_path(data, "mod_xstest_completions"), "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    pairs = [(str(r["prompt"]), str(r["text"])) for r in rows
             if r.get("label") == 0 and D.is_dev(str(r["xstest_prompt_id"]), share)]
    random.Random(0).shuffle(pairs)
    return pairs


def answers(data: Path, count: int, tokens: int) -> list[tuple[str, list[str]]]:
    """Benign model answers (``safe_answers``) with their prompts, each answer cut into
    ``tokens`` words with their leading space: what a real model streams, not the simulator's
    word salad."""
    import re

    out = [(prompt, re.findall(r"\s*\S+", text)[:tokens]) for prompt, text in safe_answers(data)]
    return [(prompt, pieces) for prompt, pieces in out if len(pieces) == tokens][:count]


def holdback(data: Path, texts: int = 300) -> dict[str, dict[str, float]]:
    """``incremental`` on real model answers (``safe_answers``), split into words with their
    leading space as tokens, each stream given its prompt's words as the gateway gives them:
    characters held after each token, per ``release_below``, and with e-mail addresses redacted."""
    import re

    from policies.moderation import Echo, ModerationClassifier, ModerationConfig, Moderator

    classifier = ModerationClassifier.load()
    answers = safe_answers(data)[:texts]
    out: dict[str, dict[str, float]] = {}
    for name, output in (("0.5", {}), ("0.75", {"release_below": 0.75}), ("1.0", {"release_below": 1.0}),
                         ("0.5, e-mail redacted", {"pii": EMAIL_REDACTED})):
        moderator = Moderator(ModerationConfig.model_validate({"input": None, "output": output}), classifier)
        held: list[float] = []
        firsts: list[float] = []
        for prompt, answer in answers:
            stream = moderator.stream(echo=Echo(functools.partial(str, prompt)))
            assert stream is not None
            first = None
            for k, token in enumerate(re.findall(r"\s*\S+", answer)[:200]):
                release = stream.feed(token)
                if release.blocked is not None:
                    break
                held.append(stream.held)
                if first is None and release.text:
                    first = k
            firsts.append(float(first if first is not None else 200))
        out[name] = {"answers": len(answers), "held_p50": _pct(held, 50), "held_p90": _pct(held, 90),
                           "held_p99": _pct(held, 99), "first_release_token_p50": _pct(firsts, 50),
                           "first_release_token_p99": _pct(firsts, 99)}
    return out


def render(table: dict[str, dict[str, float]], leaks: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    lines = [(f"Streams: {args.rate:g}/s for {args.seconds:g} s, {args.tokens} tokens each ({args.text}), modes in turn; "
              f"upstream TTFT {args.ttft_ms:g} ms, ITL {args.itl_ms:g} ms."), "",
             ("| output moderation | streams | visible TTFT p50 | p99 | added p50 | added p99 | ITL p50 | ITL p99 "
              "| added ITL p99 |"), "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for mode, r in table.items():
        lines.append(f"| {mode} | {int(r['streams'])} ({int(r['errors'])} without text) | {r['ttft_p50_ms']:.1f} ms "
                     f"| {r['ttft_p99_ms']:.1f} ms | {r['added_ttft_p50_ms']:+.1f} ms | {r['added_ttft_p99_ms']:+.1f} ms "
                     f"| {r['itl_p50_ms']:.1f} ms | {r['itl_p99_ms']:.1f} ms | {r['added_itl_p99_ms']:+.1f} ms |")
    lines += ["", f"Leak: a {len(TERM)}-character blocked term in benign text, 4-character chunks:", "",
              ("| mode | texts | term characters delivered (mean / max) | whole term delivered "
               "| characters from the term's start on (mean / p99) |"), "| --- | --- | --- | --- | --- |"]
    for mode, r in leaks.items():
        lines.append(f"| {mode} | {int(r['texts'])} | {r['term_chars_mean']:.1f} / {int(r['term_chars_max'])} "
                     f"| {r['whole_term_delivered']:.0%} | {r['chars_after_term_start_mean']:.1f} / "
                     f"{r['chars_after_term_start_p99']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.moderation.streaming", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=10.0, help="streams started per second (all modes)")
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--ttft-ms", type=float, default=20.0)
    parser.add_argument("--itl-ms", type=float, default=10.0)
    parser.add_argument("--json", type=Path, default=None, help="default: streaming.json, or streaming-cascade.json")
    parser.add_argument("--classifier", choices=["ngrams", "cascade"], default="ngrams",
                        help="moderation.classifier of the three moderated models (off is the same either way)")
    parser.add_argument("--text", choices=["answers", "sim"], default="answers",
                        help="answers: XSTest's safe model answers (needs --data); sim: the simulator's own words")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2].parent / "shared" / "data",
                        help="shared data (XSTest completions) for the hold-back on real answers; skipped if absent")
    args = parser.parse_args(argv)
    args.json = args.json or (RESULTS if args.classifier == "ngrams" else RESULTS.with_name("streaming-cascade.json"))
    with tempfile.TemporaryDirectory(prefix="bench-mod-stream-") as tmp:
        sim, gateway = _start(Path(tmp), args.ttft_ms, args.itl_ms, args.classifier)
        try:
            replies = answers(args.data, 400, args.tokens) if args.text == "answers" else None
            runs = asyncio.run(_load(gateway.url, args.seconds, args.rate, args.tokens, replies))
        finally:
            gateway.stop()
            sim.stop()
    table = summarize(runs)
    leaks = leak()
    print(render(table, leaks, args))
    held = holdback(args.data) if (args.data / "mod_xstest_completions").is_dir() else {}
    if held:
        print("\nHold-back on XSTest's safe model answers (tokens: words with their leading space):\n")
        print("| release_below (checks) | answers | characters held after a token p50 / p90 / p99 "
              "| first text after token p50 / p99 |\n| --- | --- | --- | --- |")
        for below, r in held.items():
            print(f"| {below} | {int(r['answers'])} | {r['held_p50']:.0f} / {r['held_p90']:.0f} / {r['held_p99']:.0f} "
                  f"| {r['first_release_token_p50']:.0f} / {r['first_release_token_p99']:.0f} |")
    args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "streams": table,
                                     "leak": leaks, "holdback": held}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``switchyard`` command as an operator runs it: real processes, real ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from gateway.cli import main
from gateway.local_stack import DEMO_KEY, LOCAL_MODEL, UPSTREAM_ANTHROPIC_KEY, UPSTREAM_OPENAI_KEY
from policies.keys import hash_key
from tests.conftest import ThreadedStack

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"
SWITCHYARD = [sys.executable, "-m", "gateway.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_policy_check_summarises_a_valid_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "valid policy" in out and "model llama-3.1-8b: local-llama:meta-llama/Llama-3.1-8B-Instruct" in out


def test_policy_check_lists_errors_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(EXAMPLE.read_text().replace("http://127.0.0.1:30001", "not a url")
                      .replace("backend: openai", "backend: nowhere"))
    assert main(["policy", "check", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "backends.local-llama.workers[1]" in err
    assert "models.gpt-4o-mini.deployments[0].backend: no backend named 'nowhere'" in err


def test_keys_hash_and_new(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "hash", "sy-demo-key"]) == 0
    assert capsys.readouterr().out.strip() == hash_key("sy-demo-key")
    assert main(["keys", "new"]) == 0
    key_line, hash_line = capsys.readouterr().out.strip().splitlines()
    assert hash_key(key_line.split()[-1]) == hash_line.split()[-1]


def test_serve_runs_the_gateway(stack: ThreadedStack, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(stack.stack.policy_path.read_text())
    port = free_port()
    env = {**os.environ, "SWITCHYARD_SIM_OPENAI_KEY": UPSTREAM_OPENAI_KEY,
           "SWITCHYARD_SIM_ANTHROPIC_KEY": UPSTREAM_ANTHROPIC_KEY}
    process = subprocess.Popen([*SWITCHYARD, "serve", "--policy", str(policy), "--port", str(port),
                                "--log-level", "warning"], env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        client = openai.OpenAI(base_url=base + "/v1", api_key=DEMO_KEY, max_retries=0)
        reply = client.chat.completions.create(model=LOCAL_MODEL, messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content
        # small SSE chunks must not wait for ACKs (Nagle + delayed ACK shows as ~40 ms gaps)
        gaps, last = [], None
        for _ in client.chat.completions.create(model=LOCAL_MODEL, stream=True, max_tokens=40,
                                                messages=[{"role": "user", "content": "count"}]):
            now = time.perf_counter()
            if last is not None:
                gaps.append(now - last)
            last = now
        # the simulator emits a token every 2 ms; Nagle + delayed ACK would show ~40 ms
        assert sorted(gaps)[len(gaps) // 2] < 0.03
    finally:
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal as its exit status
        assert process.wait(timeout=15) in (0, -signal.SIGTERM)


def test_serve_refuses_an_invalid_policy(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("backends: {}\nmodels: {}\n")
    result = subprocess.run([*SWITCHYARD, "serve", "--policy", str(broken), "--port", str(free_port())],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1 and "models" in result.stderr


def test_demo_prints_its_table_and_exits_0() -> None:
    result = subprocess.run([*SWITCHYARD, "demo"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("request"))
    rows = [line for line in lines[header + 2:] if line.strip() and line[0] != " " and ":" not in line[:12]
            or line.startswith("auto:")]
    by_label = {line[:22].strip(): line.split() for line in rows}
    assert "HTTP 403" in result.stdout
    def worker_and_why(cells: list[str]) -> tuple[str, str]:
        at = next(i for i, cell in enumerate(cells) if cell.startswith("local/"))
        return cells[at], cells[at + 1]

    for user in "ABC":
        worker, _ = worker_and_why(by_label[f"user {user}, turn 1"])
        later, why = worker_and_why(by_label[f"user {user}, turn 3"])
        assert later == worker and why in {"home_hit", "conversation_match"}, \
            "a conversation stays on its worker and finds its history cached"
        assert int(by_label[f"user {user}, turn 3"][-4]) > 0, "its history was found in the worker's cache"
    assert "(cheap" in " ".join(by_label["auto: easy prompt"]) and "(strong" in " ".join(by_label["auto: hard prompt"])


def test_route_explain_prints_score_tier_and_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "explain", "--policy", str(EXAMPLE), "hi, how are you?"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("route auto: score ") and "-> cheap tier -> model llama-3.1-8b" in out


def test_route_calibrate_on_a_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = tmp_path / "traffic.jsonl"
    prompts = ["hi", "thanks!", "what time is it", "Prove Fermat's little theorem and use it to compute 3^100 mod 7.",
               "Derive the closed form of the Fibonacci numbers with generating functions."]
    sample.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": p}]}) for p in prompts))
    assert main(["route", "calibrate", "--policy", str(EXAMPLE), "--strong-share", "0.4", "--sample", str(sample)]) == 0
    out = capsys.readouterr().out
    assert "sends 40.0% to the strong tier" in out and "routes.auto.threshold:" in out


def test_route_commands_fail_clearly_on_a_policy_without_routes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({k: v for k, v in yaml.safe_load(EXAMPLE.read_text()).items() if k != "routes"}))
    assert main(["route", "explain", "--policy", str(plain), "x"]) == 1
    assert "declares no difficulty route" in capsys.readouterr().err

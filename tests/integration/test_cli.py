"""The ``switchyard`` command as an operator runs it: real processes, real ports."""

from __future__ import annotations

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
    finally:
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal as its exit status
        assert process.wait(timeout=15) in (0, -signal.SIGTERM)


def test_serve_refuses_an_invalid_policy(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("backends: {}\nmodels: {}\n")
    result = subprocess.run([*SWITCHYARD, "serve", "--policy", str(broken), "--port", str(free_port())],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "models" in result.stderr


def test_demo_prints_its_table_and_exits_0() -> None:
    result = subprocess.run([*SWITCHYARD, "demo"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("request"))
    rows = [line for line in lines[header + 2:] if line.strip() and not line.startswith("worker =")]
    assert len(rows) >= 8
    assert any("local/0" in r for r in rows) and any("local/1" in r for r in rows)
    assert "HTTP 403" in rows[-1]
    conversation = [r for r in rows if r.startswith("conversation turn")]
    assert int(conversation[-1].split()[6]) > 0, "a later turn hits the prefix cache"

"""Canary rollouts through the real endpoint: a bad canary rolled back, a good one promoted,
two gateway processes sharing Redis assigning alike."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.cli import main as cli_main
from gateway.local_stack import ADMIN_KEY, DEMO_KEY, LOCAL_MODEL
from tests.conftest import ThreadedStack

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
VERSION = "x-switchyard-model-version"


def _sim_process(fail_rate: float, ttft_ms: float | None) -> tuple[subprocess.Popen[bytes], str]:
    from tests.integration.test_limits import free_port

    port = free_port()
    latency = ["--zero-latency"] if ttft_ms is None else ["--base-ttft-ms", str(ttft_ms), "--itl-ms", "2"]
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "sim", "--kind", "sglang", "--port", str(port),
                                "--model", "sim-next", *latency, "--fail-rate", str(fail_rate), "--seed", "7"],
                               stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health").status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the canary's sim did not start")


def _versions(canary_url: str, canary: dict[str, Any]) -> Any:
    def edit(document: dict[str, Any]) -> None:
        document["backends"]["next"] = {"kind": "sglang", "workers": [canary_url], "health_interval_s": 1.0}
        document["models"][LOCAL_MODEL] = {
            "versions": {"v1": {"deployments": [{"backend": "local", "model": "sim-llama"}]},
                         "v2": {"deployments": [{"backend": "next", "model": "sim-next"}]}},
            "stable": "v1", "canary": {"version": "v2", **canary},
            "tokens": {"tokens_per_message": 13, "safety_margin_tokens": 5},
        }
        document["retries"] = {"max_attempts": 1}  # the canary's own failures must show
    return edit


def _plan(**guards: Any) -> dict[str, Any]:
    return {"plan": {"steps": [0.25, 0.5, 1.0], "min_step_duration_s": 0, "min_requests_per_step": 20,
                     "guards": {"min_samples": 20, **guards}}}


def _ask(stack_url: str, session: str) -> tuple[int, str | None]:
    response = httpx.post(stack_url + "/v1/chat/completions", timeout=10,
                          headers={"authorization": f"Bearer {DEMO_KEY}", "x-switchyard-session": session},
                          json={"model": LOCAL_MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]})
    return response.status_code, response.headers.get(VERSION)


def _status(url: str) -> dict[str, Any]:
    canaries = httpx.get(url + "/admin/canaries", headers=ADMIN).json()["canaries"]
    return next(c for c in canaries if c["model"] == LOCAL_MODEL)  # type: ignore[no-any-return]


@pytest.fixture
def canary_sim() -> Iterator[Any]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(fail_rate: float, ttft_ms: float | None = None) -> str:
        process, url = _sim_process(fail_rate, ttft_ms)
        processes.append(process)
        return url
    yield start
    for process in processes:
        process.kill()
        process.wait(5)


@pytest.mark.parametrize(("fail_rate", "ttft_ms", "why"), [(0.2, None, "error"), (0.0, 80.0, "p95")],
                         ids=["fails-20-percent", "twice-the-ttft"])
def test_a_bad_canary_is_rolled_back(tmp_path: Path, canary_sim: Any, fail_rate: float,
                                     ttft_ms: float | None, why: str) -> None:
    from backends.sim import SimConfig

    # stable answers its first token after ~40 ms, the slow canary after ~80: twice the TTFT
    stable = SimConfig(base_ttft_ms=40.0, itl_ms=2.0, prefill_us_per_token=20.0)
    stack = ThreadedStack(tmp_path, sim=stable, edit_policy=_versions(canary_sim(fail_rate, ttft_ms), _plan()))
    try:
        sent = 0
        while _status(stack.url)["phase"] != "rolled_back":
            assert sent < 1500, f"not rolled back after {sent} requests: {_status(stack.url)}"
            for _ in range(50):
                _ask(stack.url, f"user-{sent}")
                sent += 1
            time.sleep(0.3)  # the controller judges once a second
        status = _status(stack.url)
        assert status["weight"] == 0 and why in status["history"][-1]["reason"], status["history"][-1]
        # no new user reaches the canary afterwards
        assert {_ask(stack.url, f"new-{i}")[1] for i in range(40)} == {"v1"}
        metrics = httpx.get(stack.url + "/metrics").text
        assert f'switchyard_canary_weight{{model="{LOCAL_MODEL}"}} 0.0' in metrics
        assert 'kind="rollback"' in metrics
    finally:
        stack.close()


def test_a_healthy_canary_is_promoted_through_every_step(tmp_path: Path, canary_sim: Any,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    stack = ThreadedStack(tmp_path, edit_policy=_versions(canary_sim(0.0), _plan()))
    try:
        sent, seen = 0, set()
        while _status(stack.url)["phase"] != "promoted":
            assert sent < 2000, f"not promoted after {sent} requests: {_status(stack.url)}"
            for _ in range(40):
                status, version = _ask(stack.url, f"user-{sent}")
                assert status == 200
                seen.add(version)
                sent += 1
            time.sleep(0.3)
        history = _status(stack.url)["history"]
        weights = [h["to_weight"] for h in history if h["kind"] in ("start", "advance", "promote")]
        assert weights[:3] == [0.25, 0.5, 1.0] and history[-1]["kind"] == "promote"
        assert seen == {"v1", "v2"}
        assert {_ask(stack.url, f"after-{i}")[1] for i in range(20)} == {"v2"}
        assert cli_main(["canary", "status", "--url", stack.url, "--admin-key", ADMIN_KEY]) == 0
        assert "promoted" in capsys.readouterr().out
    finally:
        stack.close()


def test_two_processes_sharing_redis_assign_alike_and_raising_the_weight_moves_no_one_back(
        tmp_path: Path, canary_sim: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    from tests.integration.test_limits import free_port, serve_process
    from tests.redis_support import REDIS_URL, require_redis

    require_redis()
    cluster = f"canary-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SWITCHYARD_CLUSTER", cluster)
    monkeypatch.setenv("SWITCHYARD_ACCESS_LOG", "off")
    stack = ThreadedStack(tmp_path, sglang_workers=1, edit_policy=_versions(canary_sim(0.0), {"weight": 0.05}))
    urls = [f"http://127.0.0.1:{port}" for port in (free_port(), free_port())]
    processes = [serve_process(stack.stack.policy_path, int(url.rsplit(":", 1)[1]), REDIS_URL) for url in urls]
    try:
        users = [f"user-{i}" for i in range(200)]
        first = {u: _ask(urls[0], u)[1] for u in users}
        assert first == {u: _ask(urls[1], u)[1] for u in users}, "both processes assign alike"
        assert 0 < sum(v == "v2" for v in first.values()) < 40
        document = yaml.safe_load(stack.stack.policy_path.read_text())
        document["models"][LOCAL_MODEL]["canary"]["weight"] = 0.25
        pushed = httpx.post(urls[0] + "/admin/policy", content=yaml.safe_dump(document), headers=ADMIN, timeout=30)
        assert pushed.status_code == 200, pushed.text
        deadline = time.monotonic() + 5
        while _status(urls[1])["weight"] != 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _status(urls[0])["weight"] == _status(urls[1])["weight"] == 0.25
        after = {u: _ask(urls[i % 2], u)[1] for i, u in enumerate(users)}
        assert not [u for u in users if first[u] == "v2" and after[u] == "v1"], "nobody moves back to stable"
        assert sum(v == "v2" for v in after.values()) > sum(v == "v2" for v in first.values())
    finally:
        for process in processes:
            process.terminate()
            process.wait(15)
        stack.close()
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"switchyard:{cluster}:*"):
            client.delete(key)


def test_shadow_mode_mirrors_requests_without_touching_the_answers(tmp_path: Path, canary_sim: Any) -> None:
    canary_url = canary_sim(0.0)
    stack = ThreadedStack(tmp_path, edit_policy=_versions(canary_url, {"shadow": True, "shadow_share": 1.0}))
    try:
        versions = {_ask(stack.url, f"user-{i}")[1] for i in range(30)}
        assert versions == {"v1"}, "every user is answered by stable"
        deadline = time.monotonic() + 5
        while httpx.get(canary_url + "/sim/stats").json()["requests_total"] < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(canary_url + "/sim/stats").json()["requests_total"] >= 30  # each one mirrored
        mirrored = httpx.get(canary_url + "/sim/requests").json()[-1]["body"]
        assert mirrored["model"] == "sim-next" and mirrored["stream"] is False
        status = _status(stack.url)
        assert status["mode"] == "shadow" and status["shadow"]["max_concurrency"] == 16
        deadline = time.monotonic() + 5  # statistics reach the window on the next flush
        while status["window"].get("v2", {}).get("requests", 0) < 30 and time.monotonic() < deadline:
            time.sleep(0.2)
            status = _status(stack.url)
        assert status["window"]["v2"]["requests"] >= 30, status["window"]
    finally:
        stack.close()

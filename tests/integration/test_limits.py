"""Context budgets, rate limits, spend budgets and usage through the real endpoint."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.local_stack import (
    ADMIN_KEY,
    LOCAL_MODEL,
    UPSTREAM_ANTHROPIC_KEY,
    UPSTREAM_OPENAI_KEY,
)
from policies.keys import hash_key
from tests.conftest import ThreadedStack
from tests.redis_support import REDIS_URL, require_redis

LONG_TURN = "Please summarise the incident log that follows. " + "disk full on node seven, " * 40


def tenant(name: str, **config: Any) -> Callable[[dict[str, Any]], None]:
    """A policy edit adding tenant ``name`` (key ``sy-<name>``) with ``config``."""
    def edit(document: dict[str, Any]) -> None:
        document["tenants"][name] = {"models": ["*"], "keys": [{"name": name, "sha256": hash_key(f"sy-{name}")}],
                                     **config}
    return edit


def combine(*edits: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        for one in edits:
            one(document)
    return edit


def context_limits(document: dict[str, Any]) -> None:
    document["models"][LOCAL_MODEL]["context"] = {"context_window": 900, "max_output_tokens": 64,
                                                  "reserve_output_tokens": 32, "overflow_action": "drop_oldest"}
    document["models"][LOCAL_MODEL]["prices"] = {"input": 1.0, "cached_input": 0.5, "output": 2.0}
    document["models"]["strict-local"] = {"deployments": document["models"][LOCAL_MODEL]["deployments"],
                                          "tokens": document["models"][LOCAL_MODEL]["tokens"],
                                          "context": {"context_window": 300, "overflow_action": "reject"}}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedStack]:
    edit = combine(context_limits, tenant("rpm", rate_limits={"rpm": 3}),
                   tenant("budget", budgets={"daily_tokens": 300}))
    stack = ThreadedStack(tmp_path_factory.mktemp("limits"), sglang_workers=1, edit_policy=edit)
    yield stack
    stack.close()


def client(stack: ThreadedStack, name: str = "demo") -> openai.OpenAI:
    key = "sy-demo-key" if name == "demo" else f"sy-{name}"
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0)


def conversation(turns: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "You are terse."}]
    for i in range(turns):
        messages += [{"role": "user", "content": f"{i}: {LONG_TURN}"}, {"role": "assistant", "content": "Noted."}]
    return messages + [{"role": "user", "content": "And now?"}]


def test_over_long_prompt_is_rejected_with_the_counts(limited: ThreadedStack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(limited).chat.completions.create(model="strict-local", messages=conversation(3))
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "context_length_exceeded"
    assert "300" in error["message"]


def test_over_long_conversation_is_trimmed_and_fits(limited: ThreadedStack) -> None:
    raw = client(limited).chat.completions.with_raw_response.create(
        model=LOCAL_MODEL, messages=conversation(6), max_tokens=5000)
    assert int(raw.headers["x-switchyard-trimmed-tokens"]) > 0
    sent = limited.sim_requests(limited.stack.sglang[0].url)[-1]["body"]
    assert sent["messages"][0]["role"] == "system" and sent["messages"][-1]["content"] == "And now?"
    assert len(sent["messages"]) < len(conversation(6))
    assert sent["max_tokens"] <= 64, "max_tokens is clamped to what the model may produce"
    assert raw.parse().usage.prompt_tokens + sent["max_tokens"] <= 900


def test_rpm_limit_gives_429_with_openai_headers(limited: ThreadedStack) -> None:
    rpm = client(limited, "rpm")
    for _ in range(3):
        raw = rpm.chat.completions.with_raw_response.create(
            model=LOCAL_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
    with pytest.raises(openai.RateLimitError) as info:
        rpm.chat.completions.create(model=LOCAL_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    headers = info.value.response.headers
    assert int(headers["retry-after"]) >= 1 and headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")


def test_daily_token_budget_gives_a_clear_429(limited: ThreadedStack) -> None:
    budget = client(limited, "budget")
    with pytest.raises(openai.RateLimitError) as info:
        for _ in range(20):  # each call uses ~40 tokens; the budget is 300 a day
            budget.chat.completions.create(model=LOCAL_MODEL, max_tokens=16,
                                           messages=[{"role": "user", "content": "count to ten"}])
            time.sleep(0.05)  # charges land just after each answer
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "insufficient_quota"
    assert "daily budget" in body["message"] and "tenant:budget" in body["message"]


def usage_report(stack: ThreadedStack, tenant_name: str) -> dict[str, Any]:
    response = httpx.get(stack.url + "/admin/usage", params={"tenant": tenant_name, "days": 1},
                         headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_usage_and_spend_are_reported_and_a_cancelled_stream_is_charged(limited: ThreadedStack) -> None:
    before = usage_report(limited, "demo")
    with httpx.Client(timeout=10) as http, http.stream(
            "POST", limited.url + "/v1/chat/completions", headers={"authorization": "Bearer sy-demo-key"},
            json={"model": LOCAL_MODEL, "stream": True, "max_tokens": 60,
                  "messages": [{"role": "user", "content": f"long story {uuid.uuid4()}"}]}) as response:
        chunks = response.iter_raw()
        for _ in range(3):
            next(chunks)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        after = usage_report(limited, "demo")
        if after["total_tokens"] > before["total_tokens"]:
            break
        time.sleep(0.05)
    assert after["total_tokens"] > before["total_tokens"], "the cut stream was charged"
    row = next(r for r in after["rows"] if r["model"] == LOCAL_MODEL)
    assert row["output_tokens"] > 0 and row["cost_usd"] > 0


def test_admin_api_needs_the_admin_key(limited: ThreadedStack) -> None:
    response = httpx.get(limited.url + "/admin/usage", params={"tenant": "demo"},
                         headers={"authorization": "Bearer sy-demo-key"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    missing = httpx.get(limited.url + "/admin/usage", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert missing.status_code == 400 and "tenant" in missing.json()["error"]["message"]


# --- shared across replicas, and Redis going away ------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_process(policy: Path, port: int, redis_url: str) -> subprocess.Popen[bytes]:
    """``switchyard serve`` as an operator runs it, sharing ``redis_url``."""
    env = {**os.environ, "REDIS_URL": redis_url, "SWITCHYARD_SIM_OPENAI_KEY": UPSTREAM_OPENAI_KEY,
           "SWITCHYARD_SIM_ANTHROPIC_KEY": UPSTREAM_ANTHROPIC_KEY}
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--policy", str(policy),
                                "--port", str(port), "--log-level", "warning"], env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("the gateway process did not become ready")


def test_two_gateway_processes_sharing_redis_enforce_one_rpm_limit(tmp_path: Path) -> None:
    require_redis()
    name = f"shared{uuid.uuid4().hex[:6]}"
    stack = ThreadedStack(tmp_path, sglang_workers=1, edit_policy=tenant(name, rate_limits={"rpm": 10}))
    ports = [free_port(), free_port()]
    processes = [serve_process(stack.stack.policy_path, port, REDIS_URL) for port in ports]
    try:
        admitted = 0
        for i in range(30):  # a round-robin balancer in front of both
            response = httpx.post(f"http://127.0.0.1:{ports[i % 2]}/v1/chat/completions",
                                  headers={"authorization": f"Bearer sy-{name}"}, timeout=10,
                                  json={"model": LOCAL_MODEL, "max_tokens": 1,
                                        "messages": [{"role": "user", "content": "x"}]})
            admitted += response.status_code == 200
        assert 10 <= admitted <= 11, "one limit across both processes: at most limit + 1"
    finally:
        for process in processes:
            process.terminate()
            process.wait(15)
        stack.close()


@pytest.fixture
def own_redis() -> Iterator[int]:
    """A redis-server of this test's own, which it may stop and start."""
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    try:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    except FileNotFoundError:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    holder = {"process": process}
    _wait_for_redis(port)
    yield port
    holder["process"].terminate()
    holder["process"].wait(5)


def _wait_for_redis(port: int) -> None:
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def test_redis_outage_fail_open_serves_fail_closed_refuses(tmp_path: Path, own_redis: int) -> None:
    url = f"redis://127.0.0.1:{own_redis}/0"
    edit = combine(tenant("open", rate_limits={"rpm": 1000, "on_redis_failure": "fail_open"}),
                   tenant("closed", rate_limits={"rpm": 1000, "on_redis_failure": "fail_closed"}))
    stack = ThreadedStack(tmp_path, sglang_workers=1, edit_policy=edit, settings_overrides={"redis_url": url})

    def status(name: str) -> int:
        return httpx.post(stack.url + "/v1/chat/completions", headers={"authorization": f"Bearer sy-{name}"},
                          json={"model": LOCAL_MODEL, "max_tokens": 1,
                                "messages": [{"role": "user", "content": "x"}]}, timeout=10).status_code

    try:
        assert (status("open"), status("closed")) == (200, 200)
        subprocess.run(["redis-cli", "-p", str(own_redis), "shutdown", "nosave"], capture_output=True, timeout=5,
                       check=False)
        time.sleep(0.2)
        assert status("open") == 200, "fail_open keeps serving with per-process limits"
        assert status("closed") == 503, "fail_closed refuses while the shared limit cannot be checked"
        restarted = subprocess.Popen(["redis-server", "--port", str(own_redis), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
        try:
            _wait_for_redis(own_redis)
            deadline = time.monotonic() + 5
            while status("closed") != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert status("closed") == 200 and status("open") == 200
            assert httpx.get(stack.url + "/healthz").status_code == 200
        finally:
            restarted.terminate()
            restarted.wait(5)
    finally:
        stack.close()

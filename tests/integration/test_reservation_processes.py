"""Reservations across gateway processes sharing Redis (issue 15 findings 3 and 5): a TPM limit
holds across two gateways in a burst, a gateway killed with SIGKILL mid-streams has its
reservations charged by another, and charges made while Redis was down survive a graceful stop."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from gateway.local_stack import ADMIN_KEY, LOCAL_MODEL
from policies.keys import hash_key
from tests.conftest import ThreadedStack
from tests.integration.test_limits import (
    _wait_for_redis,
    free_port,
    own_redis,
    serve_process,
)
from tests.redis_support import REDIS_URL, require_redis

__all__ = ["own_redis"]  # the fixture, used below
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def tenant(name: str, limits: dict[str, Any] | None = None, **config: Any) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        document["tenants"][name] = {"models": ["*"], "keys": [{"name": "k", "sha256": hash_key(f"sy-{name}")}],
                                     **config}
        if limits:
            document["limits"] = limits
    return edit


def chat(port: int, name: str, max_tokens: int, stream: bool = False) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", headers={"authorization": f"Bearer sy-{name}"},
                      json={"model": LOCAL_MODEL, "max_tokens": max_tokens, "stream": stream,
                            "messages": [{"role": "user", "content": f"go {uuid.uuid4().hex[:6]}"}]}, timeout=20)


def report(port: int, name: str) -> dict[str, Any]:
    response = httpx.get(f"http://127.0.0.1:{port}/admin/usage", params={"tenant": name, "days": 1},
                         headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def requests_in(body: dict[str, Any]) -> int:
    return sum(row["requests"] for row in body["rows"])


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(15)


def test_a_tpm_limit_holds_across_two_gateways_in_a_burst(tmp_path: Path) -> None:
    # TPM 3,000 across two gateways sharing Redis admitted ~10,240 tokens in a burst: admission
    # took only the prompt estimate; now it takes the prompt plus max_tokens
    require_redis()
    name = f"tpm{uuid.uuid4().hex[:6]}"
    stack = ThreadedStack(tmp_path, sglang_workers=1, edit_policy=tenant(name, rate_limits={"tpm": 3000}))
    ports = [free_port(), free_port()]
    processes = [serve_process(stack.stack.policy_path, port, REDIS_URL) for port in ports]
    try:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: chat(ports[i % 2], name, 100), range(40)))
        used = [a.json()["usage"]["total_tokens"] for a in answers if a.status_code == 200]
        assert {a.status_code for a in answers} == {200, 429}
        one_request = max(used)
        assert sum(used) <= 3000 + one_request, f"{sum(used)} tokens served against a TPM of 3,000"
    finally:
        for process in processes:
            stop(process)
        stack.close()


def test_a_killed_gateways_reservations_are_charged_by_another(tmp_path: Path) -> None:
    # kill -9 with 40 streams in flight: 2,806 tokens generated, 0 charged
    require_redis()
    name = f"kill{uuid.uuid4().hex[:6]}"
    stack = ThreadedStack(tmp_path, sglang_workers=1,
                          edit_policy=tenant(name, limits={"reservation_ttl_s": 1.0}))
    port = free_port()
    doomed = serve_process(stack.stack.policy_path, port, REDIS_URL)
    received = [0] * 8
    started = threading.Barrier(len(received) + 1, timeout=20)

    def stream(index: int) -> None:
        with httpx.Client(timeout=20) as http, http.stream(
                "POST", f"http://127.0.0.1:{port}/v1/chat/completions", headers={"authorization": f"Bearer sy-{name}"},
                json={"model": LOCAL_MODEL, "max_tokens": 2000, "stream": True,
                      "messages": [{"role": "user", "content": f"a long story {index}"}]}) as response:
            try:
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        received[index] += 1
                        if received[index] == 5:
                            started.wait()
            except httpx.HTTPError:
                pass  # the gateway died under us

    threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(len(received))]
    survivor = None
    try:
        for thread in threads:
            thread.start()
        started.wait()  # every stream is flowing
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
        for thread in threads:
            thread.join(10)
        survivor_port = free_port()
        survivor = serve_process(stack.stack.policy_path, survivor_port, REDIS_URL)
        deadline = time.monotonic() + 15
        while requests_in(body := report(survivor_port, name)) < len(received) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert requests_in(body) == len(received), "every reservation of the dead gateway became a charge"
        row = body["rows"][0]
        assert row["output_tokens"] >= sum(received), "at least what was generated is charged"
        assert row["output_tokens"] == len(received) * 2000, "in full: the dead gateway cannot say less"
    finally:
        doomed.kill()
        if survivor is not None:
            stop(survivor)
        stack.close()


def test_charges_made_while_redis_is_down_survive_a_graceful_stop(tmp_path: Path, own_redis: int) -> None:
    # Redis down, 20 requests served (recorded in process), then a graceful stop: all 20 were lost
    url = f"redis://127.0.0.1:{own_redis}/0"
    name = f"journal{uuid.uuid4().hex[:6]}"
    limits = {"charge_journal_dir": str(tmp_path / "journal"), "redis_timeout_s": 0.2,
              "redis_retry_interval_s": 0.2}
    stack = ThreadedStack(tmp_path, sglang_workers=1,
                          edit_policy=tenant(name, limits=limits, budgets={"daily_tokens": 10**6}))
    port = free_port()
    gateway = serve_process(stack.stack.policy_path, port, url)
    restarted: subprocess.Popen[bytes] | None = None
    again: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(["redis-cli", "-p", str(own_redis), "shutdown", "nosave"], capture_output=True, timeout=5,
                       check=False)
        served = [chat(port, name, 5).status_code for _ in range(20)]
        assert served == [200] * 20, "fail_open keeps serving while Redis is down"
        stop(gateway)  # graceful: the charges cannot reach Redis, they stay in the journal
        assert len(list((tmp_path / "journal").glob("charges-*.jsonl"))) == 1
        restarted = subprocess.Popen(["redis-server", "--port", str(own_redis), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
        _wait_for_redis(own_redis)
        again_port = free_port()
        again = serve_process(stack.stack.policy_path, again_port, url)
        body = report(again_port, name)  # no request needed: the report replays what waits first
        assert requests_in(body) == 20 and body["rows"][0]["output_tokens"] == 20 * 5
        assert list((tmp_path / "journal").glob("charges-*.jsonl")) == []
    finally:
        stop(gateway)
        for process in (again, restarted):
            if process is not None:
                stop(process)
        stack.close()

"""Retries, fallback, circuit breakers and load shedding, with real workers going away."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.local_stack import DEMO_KEY, LOCAL_MODEL, OPENAI_MODEL
from gateway.telemetry import AccessLog, Telemetry
from tests.conftest import ThreadedStack


def _stack(tmp_path: Path, edit: Any = None, **options: Any) -> tuple[ThreadedStack, io.StringIO]:
    access = io.StringIO()
    stack = ThreadedStack(tmp_path, circuit_breakers=True, edit_policy=edit,
                          telemetry=Telemetry(None, AccessLog(access)), **options)
    return stack, access


def _lines(access: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in access.getvalue().splitlines()]


def _client(stack: ThreadedStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=DEMO_KEY, max_retries=0)


def _ask(client: openai.OpenAI, model: str = LOCAL_MODEL, **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model, max_tokens=3, messages=[{"role": "user", "content": "hello"}], **extra)


def _metric(stack: ThreadedStack, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(httpx.get(stack.url + "/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_a_dead_worker_is_retried_elsewhere_then_cut_off_by_its_circuit(tmp_path: Path) -> None:
    def slow_health(document: dict[str, Any]) -> None:
        document["backends"]["local"]["health_interval_s"] = 60  # only the circuit may notice
    stack, access = _stack(tmp_path, slow_health)
    try:
        stack.run(stack.stack.sglang[0].aclose())  # worker local/0 dies
        client = _client(stack)
        for _ in range(12):  # round robin sends half of them to the dead worker first
            assert _ask(client).headers["x-switchyard-worker"] == "local/1"
        lines = _lines(access)
        retried = [x for x in lines if x.get("retries")]
        assert retried and all(x["retries"] == ["local/0:upstream_unavailable"] for x in retried)
        assert all(x["status"] == 200 for x in lines)
        assert _metric(stack, "switchyard_backend_circuit_state", worker="local/0") == 2  # open
        assert _metric(stack, "switchyard_retries_total", code="upstream_unavailable") == len(retried)
        # once open, the dead worker is not even tried
        before = len(retried)
        for _ in range(6):
            _ask(client)
        assert len([x for x in _lines(access) if x.get("retries")]) == before
    finally:
        stack.close()


def test_the_next_deployment_is_the_fallback_when_a_pool_fails(tmp_path: Path) -> None:
    def with_fallback(document: dict[str, Any]) -> None:
        document["backends"]["local"]["health_interval_s"] = 60
        document["models"][LOCAL_MODEL]["deployments"].append({"backend": "openai", "model": "sim-gpt"})
    stack, access = _stack(tmp_path, with_fallback)
    try:
        for sim in stack.stack.sglang:
            stack.run(sim.aclose())
        raw = _ask(_client(stack))
        assert raw.headers["x-switchyard-worker"] == "openai"
        assert raw.headers["x-switchyard-model"] == LOCAL_MODEL
        (line,) = _lines(access)
        assert line["fallback"] is True
        assert sorted(line["retries"]) == ["local/0:upstream_unavailable", "local/1:upstream_unavailable"]
    finally:
        stack.close()


def test_retries_stop_at_max_attempts_and_the_error_is_clear(tmp_path: Path) -> None:
    def one_attempt(document: dict[str, Any]) -> None:
        document["retries"] = {"max_attempts": 1}
        document["backends"]["local"]["health_interval_s"] = 60
    stack, access = _stack(tmp_path, one_attempt)
    try:
        stack.run(stack.stack.sglang[0].aclose())
        client = _client(stack)
        statuses = []
        for _ in range(2):
            try:
                _ask(client)
                statuses.append(200)
            except openai.APIStatusError as exc:
                statuses.append(exc.status_code)
                assert exc.body["code"] == "upstream_unavailable"  # type: ignore[index]
        assert sorted(statuses) == [200, 503]
        assert not any(x.get("retries") for x in _lines(access) if x["status"] == 200)
    finally:
        stack.close()


def test_a_provider_429_reaches_the_client_with_retry_after(tmp_path: Path) -> None:
    stack, _ = _stack(tmp_path)
    try:
        with pytest.raises(openai.RateLimitError) as caught:
            _ask(_client(stack), OPENAI_MODEL, extra_body={"sim_fail": 429})
        assert caught.value.response.headers["retry-after"] == "1"
        assert caught.value.body["code"] == "upstream_rate_limited"  # type: ignore[index]
    finally:
        stack.close()


def test_a_worker_at_its_concurrency_cap_sheds_load_with_503(tmp_path: Path) -> None:
    def capped(document: dict[str, Any]) -> None:
        document["backends"]["local"]["resilience"] = {"max_concurrent_per_worker": 1, "queue_timeout_s": 0.3}
    stack, _ = _stack(tmp_path, capped, sglang_workers=1)
    try:
        client = _client(stack)
        slow = threading.Thread(target=lambda: _ask(client, extra_body={"sim_delay_ms": 1500}))
        slow.start()
        time.sleep(0.3)
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as caught:
            _ask(client)
        waited = time.monotonic() - started
        assert caught.value.status_code == 503 and caught.value.response.headers["retry-after"] == "1"
        assert caught.value.body["code"] == "overloaded"  # type: ignore[index]
        assert 0.25 <= waited < 1.2  # it queued for its timeout, then gave up
        slow.join(10)
        # a request that finds a slot within the queue timeout is served
        short = threading.Thread(target=lambda: _ask(client, extra_body={"sim_delay_ms": 100}))
        short.start()
        time.sleep(0.05)
        assert _ask(client).headers["x-switchyard-worker"] == "local/0"
        short.join(10)
    finally:
        stack.close()


def test_a_worker_killed_mid_stream_ends_the_stream_with_an_error_and_charges_it(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.integration.test_limits import free_port

    port = free_port()
    worker = subprocess.Popen([sys.executable, "-m", "gateway.cli", "sim", "--kind", "sglang", "--port", str(port),
                               "--model", "sim-llama", "--itl-ms", "5"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)

    def on_the_process(document: dict[str, Any]) -> None:
        document["backends"]["local"]["workers"] = [f"http://127.0.0.1:{port}"]
    stack, access = _stack(tmp_path, on_the_process, sglang_workers=1)
    try:
        stream = _client(stack).chat.completions.create(model=LOCAL_MODEL, stream=True, max_tokens=400,
                                                        messages=[{"role": "user", "content": "long"}])
        received = 0
        with pytest.raises(openai.APIError):
            for _ in stream:
                received += 1
                if received == 5:
                    worker.kill()  # SIGKILL: the socket resets mid-stream
        deadline = time.monotonic() + 5
        while not _lines(access) and time.monotonic() < deadline:
            time.sleep(0.02)
        (line,) = _lines(access)
        assert line["code"] in {"upstream_error", "upstream_unavailable", "upstream_timeout"}
        assert 4 <= line["completion_tokens"] < 400  # what was generated is charged
        assert "retries" not in line  # never retried after the first byte
        assert _metric(stack, "switchyard_backend_in_flight", worker="local/0") == 0  # slot released
    finally:
        worker.kill()
        worker.wait(5)
        stack.close()


class _BrokenWorker:
    """An SGLang-looking worker that answers garbage: invalid JSON, broken SSE."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._send(200, b"ok", "text/plain")

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                mode = body["messages"][-1]["content"]
                if not body.get("stream"):
                    self._send(200, b'{"id": "x", "choices": [', "application/json")
                elif mode == "broken-first":
                    self._send(200, b"data: {not json\n\n", "text/event-stream")
                else:  # one good chunk, then garbage
                    good = json.dumps({"id": "c", "created": 1, "model": "m", "object": "chat.completion.chunk",
                                       "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]})
                    self._send(200, f"data: {good}\n\ndata: {{broken\n\n".encode(), "text/event-stream")

            def _send(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"


def test_a_worker_answering_garbage_gets_clean_errors_and_the_gateway_serves_on(tmp_path: Path) -> None:
    broken = _BrokenWorker()

    def with_broken(document: dict[str, Any]) -> None:
        document["backends"]["broken"] = {"kind": "sglang", "workers": [broken.url], "health_interval_s": 60}
        document["models"]["broken-model"] = {"deployments": [{"backend": "broken", "model": "m"}]}
    stack, access = _stack(tmp_path, with_broken)
    try:
        client = _client(stack)
        with pytest.raises(openai.APIStatusError) as caught:  # invalid JSON
            client.chat.completions.create(model="broken-model", messages=[{"role": "user", "content": "x"}])
        assert caught.value.status_code == 502 and caught.value.body["code"] == "upstream_error"  # type: ignore[index]
        with pytest.raises(openai.APIStatusError) as caught:  # broken SSE before the first chunk
            list(client.chat.completions.create(model="broken-model", stream=True,
                                                messages=[{"role": "user", "content": "broken-first"}]))
        assert caught.value.status_code == 502
        received: list[str] = []
        with pytest.raises(openai.APIError):  # broken SSE after the first chunk: an error event
            for chunk in client.chat.completions.create(model="broken-model", stream=True,
                                                        messages=[{"role": "user", "content": "broken-later"}]):
                received.append(chunk.choices[0].delta.content or "")
        assert received == ["hi"]
        _ask(client)  # the gateway serves on
        deadline = time.monotonic() + 5
        while len(_lines(access)) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        statuses = [(x["request_model"], x["status"]) for x in _lines(access)]
        assert all(status != 500 for _, status in statuses), statuses
        assert _metric(stack, "switchyard_backend_in_flight", worker="broken/0") == 0
    finally:
        stack.close()
        broken.server.shutdown()


def test_policy_reloads_under_load_drop_nothing(tmp_path: Path) -> None:
    import yaml

    stack, access = _stack(tmp_path)
    stop = threading.Event()
    results: list[int] = []

    def load() -> None:
        client = _client(stack)
        while not stop.is_set():
            try:
                stream = client.chat.completions.create(model=LOCAL_MODEL, stream=True, max_tokens=20,
                                                        messages=[{"role": "user", "content": "x"}])
                results.append(200 if list(stream) else 0)
            except openai.APIStatusError as exc:
                results.append(exc.status_code)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        document = yaml.safe_load(stack.stack.policy_path.read_text())
        for i in range(4):  # alternate changes that rebuild the pool and that do not
            document["version"] = f"load-{i}"
            document["backends"]["local"]["health_interval_s"] = 1.0 + i / 10
            response = httpx.post(stack.url + "/admin/policy", content=yaml.safe_dump(document),
                                  headers={"authorization": "Bearer sy-admin-key"}, timeout=30)
            assert response.status_code == 200, response.text
            time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        stack.close()
    assert len(results) > 20 and set(results) == {200}, sorted(set(results))
    assert all(x["status"] == 200 for x in _lines(access))

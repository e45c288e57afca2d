"""Bounds under attack, end to end (issue 15, findings 2, 4 and 7).

A broken upstream (real aiohttp server on 127.0.0.1:0, in a thread of its own) sends a 25 MB
answer, a 10 MB single SSE event, a gzip bomb, a stream that never ends and a body that
drips forever. The gateway answers each with the right error in OpenAI's shape, quickly,
without its memory jumping, and another tenant's probe requests keep being answered while
it happens. A slowloris run against ``switchyard serve`` under ``ulimit -n 256`` checks the
connection bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import select
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway.local_stack import DEMO_KEY, LOCAL_MODEL, TEAM_B_KEY
from policies.keys import hash_key
from tests.conftest import ThreadedStack

MIB = 1024 * 1024
PIECE = 64 * 1024
RSS_BOUND = 250 * MIB
"""Peak RSS growth allowed during one attack (before the bounds: 1.4 GB for the 25 MB answer)."""
PROBE_BOUND_S = 5.0
"""Slowest probe answer allowed during an attack (before: stalls of 6-15 s)."""


def _chunk(content: str) -> bytes:
    return json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                       "choices": [{"index": 0, "delta": {"role": "assistant", "content": content},
                                    "finish_reason": None}]}).encode()


class BrokenUpstream:
    """An OpenAI-compatible (and Anthropic) upstream whose behaviour is its model name."""

    def __init__(self) -> None:
        text = "x" * (25 * MIB)
        self.huge_json = json.dumps({
            "id": "c", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
        self.huge_message = json.dumps({
            "id": "msg", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 1, "output_tokens": 1}}).encode()
        self.bomb = gzip.compress(b" " * (50 * MIB), compresslevel=9)  # ~51 KB
        self.huge_event = b"data: " + _chunk("y" * (10 * MIB)) + b"\n\n"
        self.disconnected: dict[str, float] = {}
        self.accept_encoding: list[str] = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="broken-upstream", daemon=True)
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/messages", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        model = (await request.json())["model"]
        self.accept_encoding.append(request.headers.get("accept-encoding", ""))
        if model == "gzip-bomb":
            return web.Response(body=self.bomb, headers={"content-type": "application/json",
                                                         "content-encoding": "gzip"})
        stream = model in ("huge-event", "endless")
        response = web.StreamResponse(headers={
            "content-type": "text/event-stream" if stream else "application/json"})
        await response.prepare(request)
        try:
            if model in ("huge-json", "claude-huge"):
                body = self.huge_json if model == "huge-json" else self.huge_message
                for start in range(0, len(body), PIECE):
                    await response.write(body[start:start + PIECE])
            elif model == "huge-event":
                await response.write(b"data: " + _chunk("hi") + b"\n\n")
                for start in range(0, len(self.huge_event), PIECE):
                    await response.write(self.huge_event[start:start + PIECE])
            elif model == "endless":
                while True:
                    await response.write(b"data: " + _chunk("more ") + b"\n\n")
                    await asyncio.sleep(0.02)
            elif model == "drip":
                while True:  # JSON whitespace, never silent for long: the idle timeout never fires
                    await response.write(b" " * 64)
                    await asyncio.sleep(0.02)
        except (ConnectionError, asyncio.CancelledError):
            self.disconnected[model] = time.monotonic()
        return response

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


BROKEN_MODELS = ("huge-json", "huge-event", "gzip-bomb", "endless", "drip")


@pytest.fixture(scope="module")
def broken() -> Iterator[BrokenUpstream]:
    upstream = BrokenUpstream()
    yield upstream
    upstream.close()


@pytest.fixture(scope="module")
def gateway(broken: BrokenUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedStack]:
    def with_broken(document: dict[str, Any]) -> None:
        timeouts = {"connect_s": 2, "first_byte_s": 10, "idle_s": 10}
        document["backends"]["broken"] = {"kind": "openai", "base_url": broken.url + "/v1",
                                          "health_interval_s": 30, "timeouts": timeouts,
                                          "resilience": {"circuit_breaker": {"enabled": False}}}
        document["backends"]["broken-claude"] = {"kind": "anthropic", "base_url": broken.url,
                                                 "timeouts": timeouts,
                                                 "resilience": {"circuit_breaker": {"enabled": False}}}
        for name in BROKEN_MODELS:
            document["models"][name] = {"deployments": [{"backend": "broken", "model": name}]}
        document["models"]["claude-huge"] = {"deployments": [{"backend": "broken-claude", "model": "claude-huge"}]}
        # the size bounds keep their defaults (8 MiB answer, 1 MiB event); the times are short
        document["bounds"] = {"stream_duration_s": 2, "upstream_deadline_s": 2}

    stack = ThreadedStack(tmp_path_factory.mktemp("bounds"), edit_policy=with_broken)
    yield stack
    stack.close()


def _peak_rss_reset() -> int:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    return _status_kib("VmRSS") * 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def _metric(stack: ThreadedStack, bound: str) -> float:
    for family in text_string_to_metric_families(httpx.get(stack.url + "/metrics").text):
        for sample in family.samples:
            if sample.name == "switchyard_bound_exceeded_total" and sample.labels.get("bound") == bound:
                return float(sample.value)
    return 0.0


def _under_attack(stack: ThreadedStack, attack: Callable[[], BaseException | None]) -> tuple[BaseException | None, float, float]:
    """Run ``attack`` in a thread while another tenant probes; (its error, its seconds, slowest probe)."""
    probe = openai.OpenAI(base_url=stack.url + "/v1", api_key=TEAM_B_KEY, max_retries=0, timeout=30)
    slowest = 0.0
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        future = pool.submit(attack)
        while not future.done():
            sent = time.monotonic()
            probe.chat.completions.create(model=LOCAL_MODEL, max_tokens=2,
                                          messages=[{"role": "user", "content": "probe"}])
            slowest = max(slowest, time.monotonic() - sent)
            time.sleep(0.05)
        error = future.result()
        return error, time.monotonic() - started, slowest


def _client(stack: ThreadedStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=60)


def _ask(stack: ThreadedStack, model: str, *, stream: bool = False) -> Callable[[], BaseException | None]:
    def call() -> BaseException | None:
        try:
            if stream:
                ends = time.monotonic() + 20  # without the bounds a stream could run forever
                for _ in _client(stack).chat.completions.create(
                        model=model, stream=True, messages=[{"role": "user", "content": "hi"}]):
                    if time.monotonic() > ends:
                        break
            else:
                _client(stack).chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        except openai.APIError as exc:
            return exc
        return None
    return call


@pytest.mark.parametrize(("model", "stream", "status", "code", "bound", "within_s"), [
    ("huge-json", False, 502, "upstream_response_too_large", "upstream_body_bytes", 10.0),
    ("gzip-bomb", False, 502, "upstream_response_too_large", "upstream_body_bytes", 10.0),
    ("drip", False, 504, "upstream_deadline_exceeded", "upstream_deadline_s", 8.0),
    ("huge-event", True, None, None, "upstream_event_bytes", 10.0),
    ("endless", True, None, None, "stream_duration_s", 8.0),
])
def test_a_broken_upstream_ends_one_request_not_the_gateway(
        gateway: ThreadedStack, broken: BrokenUpstream, model: str, stream: bool, status: int | None,
        code: str | None, bound: str, within_s: float) -> None:
    counted = _metric(gateway, bound)
    baseline = _peak_rss_reset()
    error, seconds, slowest = _under_attack(gateway, _ask(gateway, model, stream=stream))
    peak = _status_kib("VmHWM") * 1024
    assert isinstance(error, openai.APIError), f"{model}: no error reached the client"
    if status is not None:  # before the first byte: an HTTP error in OpenAI's shape
        assert isinstance(error, openai.APIStatusError) and error.status_code == status
        assert isinstance(error.body, dict) and error.body.get("code") == code
    else:  # mid-stream: the SSE error event the SDK raises
        assert f"bounds.{bound}" in str(error)
    assert seconds < within_s, f"{model}: answered after {seconds:.1f}s"
    assert slowest < PROBE_BOUND_S, f"{model}: a probe of another tenant took {slowest:.1f}s"
    assert peak - baseline < RSS_BOUND, f"{model}: RSS peaked {(peak - baseline) / MIB:.0f} MiB higher"
    assert _metric(gateway, bound) == counted + 1
    if model in ("drip", "endless", "huge-json"):  # the upstream connection was closed, not drained
        deadline = time.monotonic() + 5
        while model not in broken.disconnected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert model in broken.disconnected


def test_an_anthropic_answer_over_the_bound_is_refused(gateway: ThreadedStack) -> None:
    baseline = _peak_rss_reset()
    error, seconds, slowest = _under_attack(gateway, _ask(gateway, "claude-huge"))
    assert isinstance(error, openai.APIStatusError) and error.status_code == 502
    assert isinstance(error.body, dict) and error.body.get("code") == "upstream_response_too_large"
    assert slowest < PROBE_BOUND_S and seconds < 10
    assert _status_kib("VmHWM") * 1024 - baseline < RSS_BOUND


def test_upstreams_are_asked_for_uncompressed_bodies(gateway: ThreadedStack, broken: BrokenUpstream) -> None:
    _ask(gateway, "gzip-bomb")()
    assert broken.accept_encoding and set(broken.accept_encoding) == {"identity"}


# --- slowloris against `switchyard serve` under a low descriptor limit ------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _half_open(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Ty")
    return sock


def test_slowloris_cannot_lock_other_clients_out(tmp_path: Path) -> None:
    policy = {
        "backends": {"b": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {"m": {"deployments": [{"backend": "b", "model": "m"}]}},
        "tenants": {"t": {"keys": [{"name": "k", "sha256": hash_key("k")}]}},
        "bounds": {"header_read_s": 2, "connections_per_address": 100},
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    port = _free_port()
    command = (f"ulimit -n 256 && exec {shlex.quote(sys.executable)} -m gateway.cli serve "
               f"--policy {shlex.quote(str(path))} --port {port} --log-level warning")
    env = {**os.environ, "SWITCHYARD_ACCESS_LOG": "off", "SWITCHYARD_POLICY_POLL_S": "0"}
    server = subprocess.Popen(["sh", "-c", command], env=env, cwd=Path(__file__).parents[2])
    attackers: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 40
        while True:
            assert server.poll() is None, "switchyard serve exited"
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "switchyard serve did not start"
                time.sleep(0.2)
        opened = time.monotonic()
        attackers = [_half_open(port) for _ in range(300)]  # more than the 256 descriptors
        # another address (all of 127/8 is loopback) is not behind the attackers' cap
        normal = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=5)
        sent = time.monotonic()
        assert normal.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        assert time.monotonic() - sent < 3
        # every attacker is answered (429 over the cap, 408 after the header bound) and closed
        answers: dict[int, bytes] = {}
        while len(answers) < len(attackers) and time.monotonic() - opened < 10:
            waiting = [s for s in attackers if s.fileno() not in answers]
            readable, _, _ = select.select(waiting, [], [], 0.5)
            for sock in readable:
                try:
                    answers[sock.fileno()] = sock.recv(4096)
                except OSError:
                    answers[sock.fileno()] = b""
        closed_after = time.monotonic() - opened
        assert len(answers) == len(attackers), f"{len(attackers) - len(answers)} attackers still open"
        statuses = [a[9:12] for a in answers.values()]
        assert statuses.count(b"408") == 100 and statuses.count(b"429") == 200
        assert 2 <= closed_after < 8
    finally:
        for sock in attackers:
            sock.close()
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


async def test_connection_bounds_answer_in_openai_shape_and_are_counted(tmp_path: Path) -> None:
    import uvicorn

    from gateway.app import create_app
    from gateway.server import ServerBounds, uvicorn_config
    from gateway.settings import Settings
    from gateway.telemetry import AccessLog, Telemetry

    policy = {"backends": {"b": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
              "models": {"m": {"deployments": [{"backend": "b", "model": "m"}]}}}
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    app = create_app(Settings(policy_path=tmp_path / "policy.yaml", access_log="off", policy_poll_s=0),
                     Telemetry(None, AccessLog("off")))
    bounds = ServerBounds(header_read_s=0.5, keep_alive_s=5, connections_per_address=2)
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", 0, bounds=bounds))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        streams[0][1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
        answers = [await asyncio.wait_for(reader.read(), 5) for reader, _ in streams]
        assert answers[2].startswith(b"HTTP/1.1 429 ")  # the third from one address, at once
        for answer in answers[:2]:  # the one that sent half a head, and the one that sent nothing
            assert answer.startswith(b"HTTP/1.1 408 ")
            error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
            assert error["code"] == "request_timeout" and error["type"] == "invalid_request_error"
        for _, writer in streams:
            writer.close()
        async with httpx.AsyncClient() as client:
            exposition = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        counts = {s.labels["bound"]: s.value for f in text_string_to_metric_families(exposition)
                  for s in f.samples if s.name == "switchyard_bound_exceeded_total"}
        assert counts == {"header_read_s": 2.0, "connections_per_address": 1.0}
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)

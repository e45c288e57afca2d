"""Workers discovered, not listed: a real DNS server (dnsmasq) and an EndpointSlice watch.

SGLang sims listen on loopback addresses 127.0.0.11-13 at one port (A records carry no port,
as a headless Service's do not); the DNS records and the watched EndpointSlices change while
streamed requests run, and no request fails: a new worker gets traffic once healthy, a removed
one gets no new request and finishes the streams it has.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from backends.dns_query import A, DnsError, resolve
from backends.sim import SimConfig, start_sim
from backends.sim.server import RunningSim
from gateway.local_stack import LOCAL_MODEL
from tests.conftest import ThreadedStack

HOSTS = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]


def _shared_port() -> int:
    """A port free on every worker address."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind((HOSTS[0], 0))
            port = int(sock.getsockname()[1])
        try:
            for host in HOSTS[1:]:
                with socket.socket() as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on every worker address")


def _dns_port() -> int:
    """A port free on 127.0.0.1 for UDP and for TCP: dnsmasq listens on both, and exits (status
    2) when either is taken."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both UDP and TCP")


class Dnsmasq:
    """dnsmasq answering from a hosts file on 127.0.0.1; ``set`` rewrites it and reloads (SIGHUP)."""

    def __init__(self, workdir: Path, name: str, addresses: list[str]) -> None:
        binary = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists() else None)
        if binary is None:
            pytest.skip("dnsmasq is not installed (.ci/run installs it)")
        self.name = name
        self._hosts = workdir / "hosts"
        self._hosts.write_text("".join(f"{address} {name}\n" for address in addresses))
        self._hosts.chmod(0o644)
        for _ in range(3):  # the port can still be taken between the check and dnsmasq's bind
            self.port = _dns_port()
            self.process = subprocess.Popen(
                [binary, "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                 f"--addn-hosts={self._hosts}", f"--port={self.port}", "--listen-address=127.0.0.1",
                 "--bind-interfaces", "--cache-size=0", "--local-ttl=0", "--user=root", "--pid-file="],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._answering(addresses):
                return
        raise AssertionError(f"dnsmasq did not start (status {self.process.returncode})")

    def _answering(self, addresses: list[str]) -> bool:
        """Wait for its first answer (a SIGHUP before dnsmasq installs its handler would kill it);
        False if it exited first."""
        deadline = time.monotonic() + 10
        while self.process.poll() is None:
            try:
                if asyncio.run(resolve(self.name, ("127.0.0.1", self.port), A, timeout_s=0.2)) == addresses:
                    return True
            except DnsError:
                pass
            assert time.monotonic() < deadline, "dnsmasq started but did not answer"
        return False

    def set(self, addresses: list[str]) -> None:
        self._hosts.write_text("".join(f"{address} {self.name}\n" for address in addresses))
        self.process.send_signal(signal.SIGHUP)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(5)


class Traffic:
    """Streamed chat requests in a few threads until stopped; where each went and how it ended."""

    def __init__(self, url: str, threads: int = 3) -> None:
        self.url = url
        self.workers: list[tuple[float, str]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self, index: int) -> None:
        with httpx.Client(base_url=self.url, headers={"authorization": "Bearer sy-demo-key"}, timeout=20) as http:
            turn = 0
            while not self._stop.is_set():
                turn += 1
                body = {"model": LOCAL_MODEL, "max_tokens": 24, "stream": True,
                        "messages": [{"role": "user", "content": f"conversation {index} turn {turn}"}]}
                try:
                    with http.stream("POST", "/v1/chat/completions", json=body) as response:
                        text = "".join(response.iter_text())
                        worker = response.headers.get("x-switchyard-worker", "?")
                    if response.status_code != 200 or "[DONE]" not in text:
                        self.failures.append(f"{response.status_code} {text[-200:]}")
                    else:
                        self.workers.append((time.monotonic(), worker))
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    def since(self, moment: float) -> Counter[str]:
        return Counter(worker for at, worker in self.workers if at >= moment)

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert time.monotonic() < deadline, f"timed out; served {Counter(w for _, w in self.workers)}"
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def _start_workers(stack: ThreadedStack, port: int) -> list[RunningSim]:
    base = SimConfig(itl_ms=3.0, prefill_us_per_token=20.0, enable_cache_report=True, enable_metrics=True)
    return [stack.run(start_sim(dataclasses.replace(base, kind="sglang", worker_id=f"found-{i}", model="sim-llama",
                                                    host=host, port=port)))
            for i, host in enumerate(HOSTS)]


def _discovering(discovery: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        document["backends"]["local"]["workers"] = []
        document["backends"]["local"]["discovery"] = discovery
        document["backends"]["local"]["health_interval_s"] = 0.5
    return edit


def _exercise(stack: ThreadedStack, set_workers: Callable[[list[str]], None], port: int) -> None:
    """Two workers, then a third joins, then the first leaves; all during traffic."""
    ids = [f"local/{host}:{port}" for host in HOSTS]
    deadline = time.monotonic() + 10
    while httpx.get(stack.url + "/readyz").status_code != 200:  # the first two found and healthy
        assert time.monotonic() < deadline, httpx.get(stack.url + "/readyz").text
        time.sleep(0.05)
    traffic = Traffic(stack.url)
    try:
        traffic.wait_for(lambda: {ids[0], ids[1]} <= set(traffic.since(0)))
        assert ids[2] not in traffic.since(0)
        set_workers(HOSTS)
        traffic.wait_for(lambda: ids[2] in traffic.since(0))
        set_workers(HOSTS[1:])
        removed_at = time.monotonic()
        traffic.wait_for(lambda: ids[0] not in traffic.since(time.monotonic() - 1.0)
                         and time.monotonic() - removed_at > 2.0)
        settled = time.monotonic()
        traffic.wait_for(lambda: sum(traffic.since(settled).values()) >= 20)
        late = traffic.since(settled)
        assert ids[0] not in late, f"a removed worker got new requests: {late}"
        assert {ids[1], ids[2]} <= set(late)
    finally:
        traffic.stop()
    assert traffic.failures == [], traffic.failures[:3]


@pytest.fixture
def worker_port() -> int:
    return _shared_port()


def test_dns_discovery_follows_record_changes_during_traffic(tmp_path: Path, worker_port: int) -> None:
    dns = Dnsmasq(tmp_path, "sglang.switchyard.test", HOSTS[:2])
    stack = ThreadedStack(tmp_path, sglang_workers=1, edit_policy=_discovering(
        {"type": "dns", "name": dns.name, "port": worker_port, "nameserver": f"127.0.0.1:{dns.port}",
         "interval_s": 0.2, "ipv6": False}))
    sims = _start_workers(stack, worker_port)
    try:
        _exercise(stack, dns.set, worker_port)
    finally:
        for sim in sims:
            stack.run(sim.aclose())
        stack.close()
        dns.close()


class EndpointSliceApi:
    """The part of the Kubernetes API discovery uses: list and watch EndpointSlices (JSON lines)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.version = 1
        self.slices: dict[str, dict[str, Any]] = {}
        self.watchers: list[asyncio.Queue[dict[str, Any]]] = []
        self.seen_auth: set[str] = set()

    def routes(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/apis/discovery.k8s.io/v1/namespaces/llm/endpointslices", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen_auth.add(request.headers.get("authorization", ""))
        assert request.query["labelSelector"] == "kubernetes.io/service-name=sglang-headless"
        if request.query.get("watch") != "true":
            return web.json_response({"kind": "EndpointSliceList", "metadata": {"resourceVersion": str(self.version)},
                                      "items": list(self.slices.values())})
        response = web.StreamResponse(headers={"content-type": "application/json"})
        await response.prepare(request)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.watchers.append(queue)
        try:
            while True:
                event = await queue.get()
                await response.write(json.dumps(event).encode() + b"\n")
        finally:
            self.watchers.remove(queue)

    def put(self, name: str, hosts: list[str], not_ready: tuple[str, ...] = ()) -> None:
        self.version += 1
        kind = "MODIFIED" if name in self.slices else "ADDED"
        self.slices[name] = {
            "metadata": {"name": name, "resourceVersion": str(self.version),
                         "labels": {"kubernetes.io/service-name": "sglang-headless"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": self.port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [host], "conditions": {"ready": host not in not_ready}} for host in hosts]}
        self._announce(kind, self.slices[name])

    def _announce(self, kind: str, item: dict[str, Any]) -> None:
        for queue in self.watchers:
            queue.put_nowait({"type": kind, "object": item})


@pytest.fixture
def api_server(worker_port: int) -> Iterator[tuple[EndpointSliceApi, str, asyncio.AbstractEventLoop]]:
    api = EndpointSliceApi(worker_port)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def serve() -> tuple[web.AppRunner, int]:
        runner = web.AppRunner(api.routes(), handler_cancellation=True, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, int(runner.addresses[0][1])

    runner, port = asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
    yield api, f"http://127.0.0.1:{port}", loop
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_kubernetes_discovery_follows_watched_endpointslices(
        tmp_path: Path, worker_port: int,
        api_server: tuple[EndpointSliceApi, str, asyncio.AbstractEventLoop]) -> None:
    api, url, loop = api_server
    token = tmp_path / "token"
    token.write_text("service-account-token\n")

    def set_workers(hosts: list[str]) -> None:
        # the departing pod turns not-ready first (terminating), as Kubernetes reports it
        loop.call_soon_threadsafe(api.put, "sglang-abc", list(HOSTS), tuple(h for h in HOSTS if h not in hosts))

    loop.call_soon_threadsafe(api.put, "sglang-abc", HOSTS[:2])
    stack = ThreadedStack(tmp_path, sglang_workers=1, edit_policy=_discovering(
        {"type": "kubernetes", "service": "sglang-headless", "namespace": "llm", "port_name": "http",
         "api_url": url, "token_path": str(token), "ca_path": str(tmp_path / "no-ca.crt")}))
    sims = _start_workers(stack, worker_port)
    try:
        _exercise(stack, set_workers, worker_port)
        assert api.seen_auth == {"Bearer service-account-token"}
    finally:
        for sim in sims:
            stack.run(sim.aclose())
        stack.close()


def test_a_removed_worker_finishes_the_stream_it_is_serving(tmp_path: Path, worker_port: int) -> None:
    """A stream open on a worker when DNS drops it runs to ``[DONE]``; new requests go elsewhere."""
    dns = Dnsmasq(tmp_path, "sglang.switchyard.test", HOSTS[:2])
    stack = ThreadedStack(tmp_path, sglang_workers=1, edit_policy=_discovering(
        {"type": "dns", "name": dns.name, "port": worker_port, "nameserver": f"127.0.0.1:{dns.port}",
         "interval_s": 0.2, "ipv6": False}))
    sims = _start_workers(stack, worker_port)
    ids = [f"local/{host}:{port}" for host, port in zip(HOSTS, [worker_port] * 3, strict=True)]
    pieces = [f"piece{i} " for i in range(1500)]  # ~4.5 s at the sims' 3 ms between tokens
    try:
        deadline = time.monotonic() + 10
        while httpx.get(stack.url + "/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with httpx.Client(base_url=stack.url, headers={"authorization": "Bearer sy-demo-key"}, timeout=20) as http:
            for _ in range(6):  # round robin: one of the first streams lands on the first worker
                body = {"model": LOCAL_MODEL, "stream": True, "sim_reply": pieces,
                        "messages": [{"role": "user", "content": "a long answer, please"}]}
                with http.stream("POST", "/v1/chat/completions", json=body) as response:
                    if response.headers.get("x-switchyard-worker") != ids[0]:
                        "".join(response.iter_text())
                        continue
                    chunks = response.iter_text()
                    received = next(chunks)
                    dns.set(HOSTS[1:])  # the worker leaves while its stream runs
                    gone = time.monotonic() + 10
                    while True:  # until discovery has dropped it: a short request lands elsewhere
                        short = http.post("/v1/chat/completions", json={
                            "model": LOCAL_MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
                        assert short.status_code == 200, short.text
                        if short.headers["x-switchyard-worker"] != ids[0]:
                            others = [http.post("/v1/chat/completions", json={
                                "model": LOCAL_MODEL, "max_tokens": 2,
                                "messages": [{"role": "user", "content": f"hi {i}"}]}) for i in range(4)]
                            if all(r.headers["x-switchyard-worker"] != ids[0] for r in others):
                                break
                        assert time.monotonic() < gone, "discovery never dropped the worker"
                        time.sleep(0.1)
                    # dropped from the pool while its stream still runs upstream
                    assert stack.sim_stats(sims[0].url)["running"] == 1
                    received += "".join(chunks)
                    break
            else:
                pytest.fail("no stream landed on the first worker")
        assert received.rstrip().endswith("data: [DONE]"), received[-300:]
        assert "piece1499" in received  # the whole answer, from the worker that left
    finally:
        for sim in sims:
            stack.run(sim.aclose())
        stack.close()
        dns.close()

"""Security through the real endpoint: tenants apart, the admin API closed, credentials kept.

One stack serves the module: the demo upstreams (zero latency), plus an OpenAI-compatible
upstream that answers every request with an error quoting the credentials it received, as a
careless provider might. Every response, access line, log record, span, ``/metrics`` scrape
and ``/admin`` answer of the module is kept, and the last test checks no upstream key is in
any of them.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from backends.sim import SimConfig
from gateway.local_stack import (
    ADMIN_KEY,
    ANTHROPIC_MODEL,
    DEMO_KEY,
    LOCAL_MODEL,
    OPENAI_MODEL,
    TEAM_B_KEY,
    UPSTREAM_ANTHROPIC_KEY,
    UPSTREAM_OPENAI_KEY,
)
from gateway.telemetry import AccessLog, Telemetry
from policies.keys import hash_key
from tests.conftest import ThreadedStack, eventually

ECHO_MODEL = "echo-model"
ECHO_KEY_ENV = "SWITCHYARD_TEST_ECHO_UPSTREAM_KEY"
ECHO_SECRET = "sy-test-upstream-secret-9f8e7d6c5b4a"
NOISY_KEY = "sy-noisy-tenant-key"
SECRETS = (UPSTREAM_OPENAI_KEY, UPSTREAM_ANTHROPIC_KEY, ECHO_SECRET)
"""The gateway's upstream credentials: none may ever leave it."""


class EchoUpstream(BaseHTTPRequestHandler):
    """An OpenAI-compatible provider whose errors quote the credentials they were sent.

    ``GET /v1/models`` (the health check) succeeds; every completion fails with the status
    named by the body's ``echo_status`` (400 by default), a message and a header carrying the
    key in three spellings.
    """

    received: ClassVar[list[str]] = []
    """The ``Authorization`` of every completion request: proof the secret was there to leak."""

    def do_GET(self) -> None:
        self._answer(200, {"object": "list", "data": [{"id": "echo", "object": "model"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        authorization = self.headers.get("authorization", "")
        EchoUpstream.received.append(authorization)
        key = authorization.removeprefix("Bearer ")
        message = f"Incorrect API key provided: {key}. You sent '{authorization}' (api_key={key})."
        self._answer(int(body.get("echo_status", 400)), {"error": {"message": message, "type": "x", "code": "y"}},
                     {"x-echo-key": key, "retry-after": "1"})

    def _answer(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {"content-type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


class Canary:
    """A TCP listener nobody should ever connect to: it counts who does."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


class Seen:
    """Everything that left the gateway during the module: searched for secrets at the end."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(self, response: httpx.Response) -> httpx.Response:
        self.texts.append(response.text)
        self.texts.append(json.dumps(dict(response.headers)))
        return response


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logging.Formatter().format(record))


class Secured:
    def __init__(self, stack: ThreadedStack, spans: InMemorySpanExporter, access: io.StringIO,
                 logs: _Records, canary: Canary) -> None:
        self.stack, self.spans, self.access, self.logs, self.canary = stack, spans, access, logs, canary
        self.seen = Seen()

    def post(self, body: dict[str, Any], key: str = DEMO_KEY, path: str = "/v1/chat/completions",
             headers: dict[str, str] | None = None, **options: Any) -> httpx.Response:
        response = httpx.post(self.stack.url + path, json=body, timeout=30,
                              headers={"authorization": f"Bearer {key}", **(headers or {})}, **options)
        return self.seen.add(response)

    def get(self, path: str, key: str | None = ADMIN_KEY, **params: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return self.seen.add(httpx.get(self.stack.url + path, headers=headers, params=params, timeout=30))

    def sim_requests(self, url: str) -> list[dict[str, Any]]:
        return self.stack.sim_requests(url)


def secure_policy(echo_url: str) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        document["backends"]["echo"] = {"kind": "openai", "base_url": echo_url + "/v1",
                                        "api_key_env": ECHO_KEY_ENV, "health_interval_s": 5.0}
        document["models"][ECHO_MODEL] = {"deployments": [{"backend": "echo", "model": "echo"}]}
        local = document["models"][LOCAL_MODEL]
        local["response_cache"] = {"enabled": True, "ttl_s": 60}
        local["context"] = {"context_window": 4096, "max_output_tokens": 16}
        document["tenants"]["noisy"] = {"models": [LOCAL_MODEL], "rate_limits": {"rpm": 3},
                                        "keys": [{"name": "noisy-key", "sha256": hash_key(NOISY_KEY)}]}
    return edit


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    echo = ThreadingHTTPServer(("127.0.0.1", 0), EchoUpstream)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    exporter, provider, access = InMemorySpanExporter(), TracerProvider(), io.StringIO()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    logs, root = _Records(), logging.getLogger()
    root.addHandler(logs)
    os.environ[ECHO_KEY_ENV] = ECHO_SECRET  # upstream keys come from the environment
    canary = Canary()
    stack = ThreadedStack(tmp_path_factory.mktemp("secured"), sim=SimConfig(zero_latency=True),
                          edit_policy=secure_policy(f"http://127.0.0.1:{echo.server_port}"),
                          telemetry=Telemetry(provider, AccessLog(access)))
    try:
        yield Secured(stack, exporter, access, logs, canary)
    finally:
        stack.close()
        canary.close()
        echo.shutdown()
        root.removeHandler(logs)
        os.environ.pop(ECHO_KEY_ENV, None)


def chat(model: str = LOCAL_MODEL, content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 4, **extra}


# --- tenants ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [DEMO_KEY, TEAM_B_KEY, NOISY_KEY, "sy-unknown"])
@pytest.mark.parametrize("tenant", ["demo", "team-b"])
def test_a_tenant_key_cannot_read_any_usage(secured: Secured, key: str, tenant: str) -> None:
    response = secured.get("/admin/usage", key=key, tenant=tenant)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert "rows" not in response.text


def test_usage_is_charged_to_the_calling_tenant_only(secured: Secured) -> None:
    def total(tenant: str) -> int:
        return int(secured.get("/admin/usage", tenant=tenant).json()["total_tokens"])

    def settled() -> bool:  # charges land in the background: start from quiet totals
        before = total("demo")
        time.sleep(0.2)
        return total("demo") == before

    assert eventually(settled)
    demo_before, team_b_before = total("demo"), total("team-b")
    for _ in range(3):
        assert secured.post(chat(content=f"team-b {time.time_ns()}"), key=TEAM_B_KEY).status_code == 200
    assert eventually(lambda: total("team-b") > team_b_before)
    assert total("demo") == demo_before


def test_spoofed_tenant_headers_do_not_reach_another_tenants_cache(secured: Secured) -> None:
    """The cache key's tenant comes from the API key alone: no header can borrow another's."""
    body = chat(content=f"cache me {time.time_ns()}", temperature=0)
    assert secured.post(body).headers["x-switchyard-cache"] == "miss"
    assert secured.post(body).headers["x-switchyard-cache"] == "hit"
    spoof = {"x-switchyard-tenant": "demo", "x-tenant": "demo", "openai-organization": "demo",
             "openai-project": "demo", "x-switchyard-session": "demo", "x-switchyard-key": DEMO_KEY}
    assert secured.post(body, key=TEAM_B_KEY, headers=spoof).headers["x-switchyard-cache"] == "miss"
    assert secured.post({**body, "stream": True}, key=TEAM_B_KEY,
                        headers=spoof).headers["x-switchyard-cache"] == "hit", "team-b's own entry"


def test_one_tenants_rate_limit_does_not_slow_another(secured: Secured) -> None:
    statuses = [secured.post(chat(content=f"noisy {i}"), key=NOISY_KEY).status_code for i in range(6)]
    assert 429 in statuses
    assert secured.post(chat(content="quiet"), key=TEAM_B_KEY).status_code == 200
    assert secured.post(chat(content="quiet")).status_code == 200


# --- the admin API ------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, f"Bearer {DEMO_KEY}", f"Bearer {TEAM_B_KEY}",
                                           f"Basic {ADMIN_KEY}", ADMIN_KEY, f"Bearer {ADMIN_KEY}x",
                                           f"Bearer {hash_key(ADMIN_KEY)}"])
def test_the_admin_api_needs_the_admin_key(secured: Secured, authorization: str | None) -> None:
    headers = {"authorization": authorization} if authorization else {}
    before = secured.get("/admin/policy").json()
    for method, path, params in (("GET", "/admin/usage", {"tenant": "demo"}), ("GET", "/admin/policy", {}),
                                 ("GET", "/admin/policy", {"format": "yaml"}), ("POST", "/admin/policy", {})):
        content = b"version: hijacked\nbackends: {}\nmodels: {}\n" if method == "POST" else None
        response = secured.seen.add(httpx.request(method, secured.stack.url + path, headers=headers,
                                                  params=params, content=content, timeout=30))
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"]["code"] == "invalid_api_key"
    assert secured.get("/admin/policy").json() == before


def test_admin_output_holds_no_plain_key(secured: Secured) -> None:
    """The policy stores SHA-256 digests only; /admin shows the policy, so it shows no key."""
    described = secured.get("/admin/policy")
    text = secured.get("/admin/policy", format="yaml")
    assert described.status_code == text.status_code == 200
    assert hash_key(DEMO_KEY) in text.text  # the digest, as stored
    for plain in (DEMO_KEY, TEAM_B_KEY, NOISY_KEY, ADMIN_KEY, *SECRETS):
        assert plain not in described.text and plain not in text.text


@pytest.fixture(scope="module")
def no_admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedStack]:
    def drop_admin_key(document: dict[str, Any]) -> None:
        del document["admin_key_sha256"]

    stack = ThreadedStack(tmp_path_factory.mktemp("no-admin"), sglang_workers=1, sim=SimConfig(zero_latency=True),
                          edit_policy=drop_admin_key, telemetry=Telemetry(None, AccessLog("off")))
    yield stack
    stack.close()


@pytest.mark.parametrize(("method", "path"), [("GET", "/admin/usage?tenant=demo"), ("GET", "/admin/policy"),
                                              ("GET", "/admin/policy?format=yaml"), ("POST", "/admin/policy")])
@pytest.mark.parametrize("key", [ADMIN_KEY, DEMO_KEY, None])
def test_without_an_admin_key_the_admin_api_does_not_exist(no_admin: ThreadedStack, method: str, path: str,
                                                            key: str | None) -> None:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    response = httpx.request(method, no_admin.url + path, headers=headers, timeout=30,
                             content=b"version: x\n" if method == "POST" else None)
    unknown = httpx.request(method, no_admin.url + "/admin/nothing-here", headers=headers, timeout=30)
    assert response.status_code == 404
    assert response.json() == unknown.json(), "indistinguishable from a route that does not exist"


# --- credentials --------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", [LOCAL_MODEL, OPENAI_MODEL, ANTHROPIC_MODEL])
def test_the_clients_credentials_are_never_forwarded(secured: Secured, model: str, stream: bool) -> None:
    hostile = {"x-api-key": "client-x-api-key", "anthropic-version": "client-version",
               "api-key": "client-api-key", "openai-organization": "client-org"}
    marker = f"forward-check {model} {stream} {time.time_ns()}"
    response = secured.post(chat(model, marker, stream=stream), headers=hostile)
    assert response.status_code == 200, response.text
    stack = secured.stack.stack
    sims = {LOCAL_MODEL: stack.sglang, OPENAI_MODEL: [stack.openai], ANTHROPIC_MODEL: [stack.anthropic]}[model]
    sent = [r for sim in sims for r in secured.sim_requests(sim.url) if marker in json.dumps(r["body"])]
    assert len(sent) == 1
    headers, raw = sent[0]["headers"], json.dumps(sent[0])
    assert DEMO_KEY not in raw and "client-" not in raw
    expected = {LOCAL_MODEL: (None, None), OPENAI_MODEL: (f"Bearer {UPSTREAM_OPENAI_KEY}", None),
                ANTHROPIC_MODEL: (None, UPSTREAM_ANTHROPIC_KEY)}[model]
    assert (headers["authorization"], headers["x-api-key"]) == expected


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 429, 500, 503])
def test_an_upstream_quoting_its_key_does_not_leak_it(secured: Secured, status: int, stream: bool) -> None:
    response = secured.post(chat(ECHO_MODEL, echo_status=status, stream=stream))
    assert 400 <= response.status_code < 600
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert EchoUpstream.received[-1] == f"Bearer {ECHO_SECRET}", "the upstream had the secret to quote"
    assert ECHO_SECRET not in response.text and "x-echo-key" not in response.headers
    assert "echo" in response.json()["error"]["message"]  # the backend is named, its secret is not


# --- where the gateway connects -----------------------------------------------------------


def url_smuggling_requests(canary: str) -> list[tuple[dict[str, Any], dict[str, str], str]]:
    """(body, headers, path) of requests naming the canary in every way a client might."""
    fields = ("base_url", "api_base", "api_url", "endpoint", "url", "host", "upstream", "backend", "worker",
              "deployment", "proxy", "callback_url", "webhook")
    smuggled = {name: canary + "/v1" for name in fields}
    image = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": canary + "/cat.png"}}]
    requests: list[tuple[dict[str, Any], dict[str, str], str]] = [
        (chat(model, **smuggled), {}, "/v1/chat/completions") for model in (LOCAL_MODEL, OPENAI_MODEL)]
    requests += [
        (chat(LOCAL_MODEL, extra_body={"base_url": canary}, extra_headers={"host": canary}), {}, "/v1/chat/completions"),
        (chat(canary + "/v1"), {}, "/v1/chat/completions"),
        (chat(f"openai/{canary}"), {}, "/v1/chat/completions"),
        ({"model": canary, "prompt": "hi"}, {}, "/v1/completions"),
        ({"model": LOCAL_MODEL, "prompt": "hi", "max_tokens": 2, **smuggled}, {}, "/v1/completions"),
        (chat(LOCAL_MODEL), {"x-forwarded-host": canary[7:], "forwarded": f"host={canary[7:]}",
                             "x-original-url": canary, "x-rewrite-url": canary, "x-switchyard-worker": canary,
                             "x-switchyard-backend": canary, "x-switchyard-route": canary}, "/v1/chat/completions"),
        (chat(LOCAL_MODEL), {}, f"/v1/chat/completions?base_url={canary}&api_base={canary}"),
        ({**chat(ANTHROPIC_MODEL), "messages": [{"role": "user", "content": image}]}, {}, "/v1/chat/completions"),
        ({**chat(LOCAL_MODEL), "messages": [{"role": "user", "content": image}]}, {}, "/v1/chat/completions"),
    ]
    return requests


def test_no_request_field_makes_the_gateway_call_another_url(secured: Secured) -> None:
    """URLs in the body, the model name, headers or the query are data, never destinations:
    each request is refused or served by a configured upstream, and the canary hears nothing.
    (An image URL is passed on for the provider to fetch; the gateway itself never fetches it.)"""
    workers = {"local/0", "local/1", "openai", "claude"}
    for body, headers, path in url_smuggling_requests(secured.canary.url):
        response = secured.post(body, path=path, headers=headers)
        assert response.status_code in (200, 400, 404), (body, response.text)
        if response.status_code == 200:
            assert response.headers["x-switchyard-worker"] in workers
    time.sleep(0.3)  # a connection the gateway started would have been accepted by now
    assert secured.canary.connections == 0


# --- limits cannot be side-stepped --------------------------------------------------------


def test_context_budget_applies_to_legacy_completions(secured: Secured) -> None:
    marker = f"legacy budget {time.time_ns()}"
    response = secured.post({"model": LOCAL_MODEL, "prompt": marker, "max_tokens": 5000}, path="/v1/completions")
    if response.status_code == 400:
        assert response.json()["error"]["param"] == "max_tokens"
        return
    assert response.status_code == 200, response.text
    sent = [r["body"] for sim in secured.stack.stack.sglang for r in secured.sim_requests(sim.url)
            if marker in json.dumps(r["body"])]
    assert sent and sent[0]["max_tokens"] <= 16, sent


# --- last: nothing above leaked a secret -------------------------------------------------


def test_no_secret_in_metrics_policy_access_log_logs_or_spans(secured: Secured) -> None:
    """Runs last in the module: by now every request above has been logged, traced and counted."""
    secured.post(chat(ECHO_MODEL, echo_status=500))  # at least one 5xx: logged at warning
    secured.get("/metrics", key=None)
    secured.get("/admin/policy")
    secured.get("/admin/policy", format="yaml")
    provider = secured.spans
    spans = [json.dumps({"name": s.name, "attributes": dict(s.attributes or {}),
                         "events": [dict(e.attributes or {}) for e in s.events]}, default=str)
             for s in provider.get_finished_spans()]
    places = {"responses": secured.seen.texts, "access log": [secured.access.getvalue()],
              "log records": secured.logs.lines, "spans": spans,
              "policy file": [secured.stack.stack.policy_path.read_text()]}
    assert secured.access.getvalue() and secured.logs.lines and spans
    for where, texts in places.items():
        for secret in SECRETS:
            assert not any(secret in text for text in texts), f"{secret} found in {where}"
        if where != "responses":  # the client's own key is sent back to nobody either
            assert not any(DEMO_KEY in text or ADMIN_KEY in text for text in texts), where

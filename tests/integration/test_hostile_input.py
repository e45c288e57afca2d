"""Hostile input through a real socket: each gets a clear 400/413 in OpenAI's shape, and the
gateway keeps serving afterwards.

Requests are written byte for byte on a plain socket (``raw_request``), so nothing between the
test and the gateway repairs them: no client re-encodes a body, fixes a header or adds a
Content-Length. docs/reliability.md has the table of cases and what each gets.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

from gateway.local_stack import (
    ADMIN_KEY,
    ANTHROPIC_MODEL,
    DEMO_KEY,
    LOCAL_MODEL,
    TEAM_B_KEY,
)
from tests.conftest import ThreadedStack

CHAT, TEXT, POLICY = "/v1/chat/completions", "/v1/completions", "/admin/policy"
MIB = 1024 * 1024
VALID = {"model": LOCAL_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool = True
    """The server closed the connection after answering."""

    def error(self) -> dict[str, object]:
        """The OpenAI error object; fails unless the body has exactly OpenAI's shape."""
        assert self.headers.get("content-type", "").startswith("application/json"), (self.status, self.body)
        payload = json.loads(self.body)
        assert set(payload) == {"error"}, payload
        error: dict[str, object] = payload["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert all(isinstance(error[k], str) and error[k] for k in ("message", "type", "code")), error
        assert error["param"] is None or isinstance(error["param"], str), error
        return error


def _dechunk(body: bytes) -> bytes:
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2:]
    return out


def raw_request(stack: ThreadedStack, data: bytes | list[bytes], timeout: float = 30) -> RawResponse:
    """Send bytes (one write per list item) and read the answer until the server closes.

    Writing happens in a thread while this one reads: a server refusing a large body answers
    and closes before it has read it all, and the answer must be read before the reset that
    closing with unread data sends.
    """
    url = urlsplit(stack.url)
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
        def write() -> None:
            with contextlib.suppress(OSError):  # refused before the last byte: the answer says why
                for part in data if isinstance(data, list) else [data]:
                    sock.sendall(part)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
        writer.join(timeout)
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return RawResponse(int(status_line.split()[1]), headers, body)


def request_bytes(body: bytes, *, path: str = CHAT, key: str = DEMO_KEY, method: str = "POST",
                  content_type: str | None = "application/json", extra: str = "",
                  content_length: bool = True) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {key}\r\nconnection: close\r\n"
    if content_type is not None:
        head += f"content-type: {content_type}\r\n"
    if content_length:
        head += f"content-length: {len(body)}\r\n"
    return (head + extra + "\r\n").encode("latin-1") + body


def send(stack: ThreadedStack, body: bytes, **options: object) -> RawResponse:
    return raw_request(stack, request_bytes(body, **options))  # type: ignore[arg-type]


def assert_still_serving(stack: ThreadedStack) -> None:
    response = send(stack, json.dumps(VALID).encode())
    assert response.status == 200, response.body
    assert json.loads(response.body)["choices"][0]["message"]["content"]


def with_fields(**fields: object) -> bytes:
    return json.dumps({**VALID, **fields}).encode()


def nested(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + close * depth


@dataclass(frozen=True)
class Hostile:
    """One hostile body and the error it must get."""

    id: str
    body: bytes
    status: int
    code: str
    param: str | None = None
    path: str = CHAT
    options: dict[str, object] = field(default_factory=dict)


def body_cases() -> list[Hostile]:
    bad_utf8 = b'{"model": "' + LOCAL_MODEL.encode() + b'", "messages": [{"role": "user", "content": "'
    deep_extra = '{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "x": %s}'
    return [
        # not UTF-8
        Hostile("invalid-utf8-byte", bad_utf8 + b'\xff\xfe"}]}', 400, "invalid_json"),
        Hostile("overlong-utf8", bad_utf8 + b'\xc0\xaf"}]}', 400, "invalid_json"),
        Hostile("truncated-utf8", bad_utf8 + b'\xe2\x82"}]}', 400, "invalid_json"),
        Hostile("utf16-body", json.dumps(VALID).encode("utf-16"), 400, "invalid_json"),
        Hostile("lone-surrogate-escape", with_fields().replace(b'"hi"', b'"\\ud800"'), 400, "invalid_json"),
        Hostile("latin1-declared", bad_utf8 + 'caf\xe9"}]}'.encode("latin-1"), 400, "invalid_json",
                options={"content_type": "application/json; charset=latin-1"}),
        # huge numbers
        Hostile("max_tokens-1e400", with_fields().replace(b'"max_tokens": 2', b'"max_tokens": 1e400'),
                400, "invalid_json"),
        Hostile("max_tokens-2**200", with_fields(max_tokens=2**200), 400, "invalid_request", "max_tokens"),
        Hostile("max_tokens--2**200", with_fields(max_tokens=-(2**200)), 400, "invalid_request", "max_tokens"),
        Hostile("max_completion_tokens-2**31", with_fields(max_completion_tokens=2**31), 400,
                "invalid_request", "max_completion_tokens"),
        Hostile("temperature-1e308", with_fields(temperature=1e308), 400, "invalid_request", "temperature"),
        Hostile("seed-2**64", with_fields(seed=2**64), 400, "invalid_request", "seed"),
        Hostile("n-2**63", with_fields(n=2**63), 400, "invalid_request", "n"),
        Hostile("logit_bias-1e400", with_fields().replace(b'"max_tokens": 2', b'"logit_bias": {"1": 1e400}'),
                400, "invalid_json"),
        Hostile("NaN-literal", with_fields().replace(b'"max_tokens": 2', b'"temperature": NaN'), 400,
                "invalid_json"),
        Hostile("text-max_tokens-2**200", json.dumps({"model": LOCAL_MODEL, "prompt": "hi", "max_tokens": 2**200})
                .encode(), 400, "invalid_request", "max_tokens", path=TEXT),
        # deeply nested JSON
        Hostile("nested-10k-arrays", (deep_extra % (LOCAL_MODEL, nested(10_000))).encode(), 400, "invalid_json"),
        Hostile("nested-10k-objects", (deep_extra % (LOCAL_MODEL, nested(10_000, '{"a":', "}")
                                                     .replace('{"a":}', '{"a":1}'))).encode(), 400, "invalid_json"),
        Hostile("nested-10k-in-content", with_fields(messages=[{"role": "user", "content": []}])
                .replace(b'"content": []', f'"content": {nested(10_000)}'.encode()), 400, "invalid_json"),
        Hostile("nested-100k-top-level", nested(100_000).encode(), 400, "invalid_json"),
        Hostile("nested-10k-text-prompt", json.dumps({"model": LOCAL_MODEL, "prompt": []})
                .replace("[]", nested(10_000)).encode(), 400, "invalid_json", path=TEXT),
        # unknown roles and null content
        Hostile("role-wizard", with_fields(messages=[{"role": "wizard", "content": "hi"}]), 400,
                "invalid_request", "messages[0].role"),
        Hostile("role-empty", with_fields(messages=[{"role": "", "content": "hi"}]), 400,
                "invalid_request", "messages[0].role"),
        Hostile("role-upper-case", with_fields(messages=[{"role": "USER", "content": "hi"}]), 400,
                "invalid_request", "messages[0].role"),
        Hostile("role-missing", with_fields(messages=[{"content": "hi"}]), 400, "invalid_request", "messages[0]"),
        Hostile("content-null-user", with_fields(messages=[{"role": "user", "content": None}]), 400,
                "invalid_request", "messages[0].content"),
        Hostile("content-missing", with_fields(messages=[{"role": "user"}]), 400,
                "invalid_request", "messages[0].content"),
        Hostile("content-null-system", with_fields(messages=[{"role": "system", "content": None},
                                                             {"role": "user", "content": "hi"}]),
                400, "invalid_request", "messages[0].content"),
        Hostile("content-null-assistant-without-calls",
                with_fields(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": None},
                                      {"role": "user", "content": "hi"}]),
                400, "invalid_request", "messages[1].content"),
        Hostile("tool-without-call-id", with_fields(messages=[{"role": "user", "content": "hi"},
                                                              {"role": "tool", "content": "x"}]),
                400, "invalid_request", "messages[1].tool_call_id"),
        Hostile("content-part-unknown-type", with_fields(messages=[{"role": "user", "content": [{"type": "video"}]}]),
                400, "invalid_request", "messages[0].content[0]"),
        # empty and non-object bodies
        Hostile("empty", b"", 400, "invalid_json"),
        Hostile("whitespace", b" \r\n\t ", 400, "invalid_json"),
        Hostile("array", b"[]", 400, "invalid_json"),
        Hostile("null", b"null", 400, "invalid_json"),
        Hostile("string", b'"hello"', 400, "invalid_json"),
        Hostile("number", b"1e400", 400, "invalid_json"),
        Hostile("true", b"true", 400, "invalid_json"),
        Hostile("utf8-bom", b"\xef\xbb\xbf" + json.dumps(VALID).encode(), 400, "invalid_json"),
        Hostile("trailing-garbage", json.dumps(VALID).encode() + b"}", 400, "invalid_json"),
        Hostile("two-objects", json.dumps(VALID).encode() * 2, 400, "invalid_json"),
        Hostile("truncated", json.dumps(VALID).encode()[:-5], 400, "invalid_json"),
        Hostile("empty-text-body", b"", 400, "invalid_json", path=TEXT),
        # NUL bytes
        Hostile("raw-NUL-between-tokens", with_fields().replace(b", ", b",\x00 ", 1), 400, "invalid_json"),
        Hostile("raw-NUL-in-string", with_fields().replace(b'"hi"', b'"h\x00i"'), 400, "invalid_json"),
        Hostile("escaped-NUL-in-model", with_fields(model="llama\u0000"), 404, "model_not_found", "model"),
        # Content-Type lies: the body is parsed as JSON whatever the header says
        Hostile("form-urlencoded", b"model=llama&messages=hi", 400, "invalid_json",
                options={"content_type": "application/x-www-form-urlencoded"}),
        Hostile("multipart", b"--b\r\ncontent-disposition: form-data; name=model\r\n\r\nx\r\n--b--\r\n", 400,
                "invalid_json", options={"content_type": "multipart/form-data; boundary=b"}),
        Hostile("xml-as-json", b"<messages><m role='user'>hi</m></messages>", 400, "invalid_json"),
        Hostile("gzip-is-not-inflated", gzip.compress(json.dumps(VALID).encode()), 400, "invalid_json",
                options={"extra": "content-encoding: gzip\r\n"}),
        # wrong sizes
        Hostile("10MB", b'{"model": "x", "pad": "' + b"a" * (10 * MIB) + b'"}', 413, "request_too_large"),
        Hostile("10MB-text", b'{"model": "x", "prompt": "' + b"a" * (10 * MIB) + b'"}', 413,
                "request_too_large", path=TEXT),
        Hostile("10MB-policy", b"a: " + b"b" * (10 * MIB), 413, "request_too_large", path=POLICY,
                options={"key": ADMIN_KEY, "content_type": "application/yaml"}),
        Hostile("messages-empty", with_fields(messages=[]), 400, "invalid_request", "messages"),
    ]


WRONG_TYPES = [
    ("model", 5, "model"), ("model", None, "model"), ("messages", "hi", "messages"),
    ("messages", {"role": "user"}, "messages"), ("messages", [5], "messages[0]"),
    ("messages", [{"role": 5, "content": "hi"}], "messages[0].role"),
    ("messages", [{"role": "user", "content": 5}], "messages[0].content"),
    ("messages", [{"role": "user", "content": {"text": "hi"}}], "messages[0].content"),
    ("messages", [{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0]"),
    ("messages", [{"role": "user", "content": [{"type": "text", "text": 5}]}], "messages[0].content[0].text"),
    ("messages", [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}],
     "messages[0].content[0].image_url"),
    ("messages", [{"role": "assistant", "content": None, "tool_calls": "x"}], "messages[0].tool_calls"),
    ("messages", [{"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": 1}}]}],
     "messages[0].tool_calls[0].function.name"),
    ("stream", "yes", "stream"), ("stream", 1, "stream"), ("stream_options", 5, "stream_options"),
    ("stream_options", {"include_usage": "yes"}, "stream_options.include_usage"),
    ("max_tokens", "many", "max_tokens"), ("max_tokens", True, "max_tokens"), ("max_tokens", 1.5, "max_tokens"),
    ("max_tokens", 0, "max_tokens"), ("max_tokens", [1], "max_tokens"),
    ("temperature", "hot", "temperature"), ("temperature", 2.5, "temperature"), ("top_p", -0.1, "top_p"),
    ("n", 0, "n"), ("n", 129, "n"), ("stop", 5, "stop"), ("stop", [1], "stop[0]"), ("seed", "x", "seed"),
    ("presence_penalty", 3, "presence_penalty"), ("frequency_penalty", "x", "frequency_penalty"),
    ("logit_bias", [1], "logit_bias"), ("logit_bias", {"1": "x"}, "logit_bias"), ("user", 5, "user"),
    ("tools", "x", "tools"), ("tools", [{"function": 5}], "tools[0].function"),
    ("tool_choice", 5, "tool_choice"), ("parallel_tool_calls", "yes", "parallel_tool_calls"),
    ("response_format", "json", "response_format"), ("logprobs", "yes", "logprobs"),
    ("top_logprobs", 21, "top_logprobs"), ("max_completion_tokens", 0, "max_completion_tokens"),
]
WRONG_TEXT_TYPES = [
    ("prompt", 5, "prompt"), ("prompt", {"a": 1}, "prompt"), ("prompt", [1, "a"], "prompt"),
    ("prompt", [[1], "a"], "prompt"), ("prompt", [[1, "a"]], "prompt"), ("prompt", None, "prompt"),
    ("echo", "x", "echo"), ("best_of", 0, "best_of"), ("suffix", 5, "suffix"), ("logprobs", "x", "logprobs"),
]


@pytest.mark.parametrize("case", body_cases(), ids=lambda c: c.id)
def test_hostile_body_gets_a_clear_error(stack: ThreadedStack, case: Hostile) -> None:
    response = send(stack, case.body, path=case.path, **case.options)
    assert response.status == case.status, response.body[:300]
    error = response.error()
    assert error["code"] == case.code, error
    if case.param is not None:
        assert isinstance(error["param"], str) and error["param"].startswith(case.param), error
    assert_still_serving(stack)


@pytest.mark.parametrize(("name", "value", "param"), WRONG_TYPES, ids=lambda v: repr(v)[:40])
def test_wrong_type_names_the_field(stack: ThreadedStack, name: str, value: object, param: str) -> None:
    error = send(stack, with_fields(**{name: value})).error()
    assert (error["code"], error["type"]) == ("invalid_request", "invalid_request_error"), error
    # a map value is named by its map: logit_bias[...]
    assert error["param"] == param or str(error["param"]).startswith(param + "[..."), error


@pytest.mark.parametrize(("name", "value", "param"), WRONG_TEXT_TYPES, ids=lambda v: repr(v)[:40])
def test_wrong_type_names_the_field_in_text_completions(stack: ThreadedStack, name: str, value: object,
                                                         param: str) -> None:
    body = json.dumps({"model": LOCAL_MODEL, "prompt": "hi", "max_tokens": 2, name: value}).encode()
    error = send(stack, body, path=TEXT).error()
    assert (error["code"], error["param"]) == ("invalid_request", param), error


def test_a_chunked_10_mb_body_is_refused_without_reading_it_all(stack: ThreadedStack) -> None:
    head = request_bytes(b"", content_length=False, extra="transfer-encoding: chunked\r\n")
    piece = b"a" * MIB
    chunks = [head] + [f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for _ in range(10)] + [b"0\r\n\r\n"]
    response = raw_request(stack, chunks)
    assert response.status == 413
    assert response.error()["code"] == "request_too_large"
    assert_still_serving(stack)


def test_a_json_body_under_another_content_type_is_served(stack: ThreadedStack) -> None:
    """Lenient on purpose, like OpenAI: the body is JSON whatever Content-Type says. There is
    no CSRF exposure in that: a browser cannot send ``Authorization`` cross-site without a
    preflight, and the gateway answers no preflight with CORS headers."""
    for content_type in ("text/plain", None, "application/octet-stream"):
        response = send(stack, json.dumps(VALID).encode(), content_type=content_type)
        assert response.status == 200, (content_type, response.body)
        assert "access-control-allow-origin" not in response.headers


def test_escaped_NUL_in_content_is_text(stack: ThreadedStack) -> None:
    """``\\u0000`` is valid JSON text: relayed upstream as it came, not an error."""
    response = send(stack, with_fields(messages=[{"role": "user", "content": "a\u0000b"}]))
    assert response.status == 200, response.body
    worker = {"local/0": 0, "local/1": 1}[response.headers["x-switchyard-worker"]]
    sent = stack.sim_requests(stack.stack.sglang[worker].url)[-1]["body"]
    assert sent["messages"][0]["content"] == "a\u0000b"


@pytest.mark.parametrize("order", ["allowed-last", "forbidden-last"])
def test_duplicated_keys_the_last_one_wins_everywhere(stack: ThreadedStack, order: str) -> None:
    """A duplicated ``model`` cannot pass the permission check as one model and reach
    another: the gateway reads the last value (as Python's json does), checks that one, and
    sends upstream what it parsed, not the client's bytes."""
    allowed, forbidden = f'"model": "{LOCAL_MODEL}"', f'"model": "{ANTHROPIC_MODEL}"'
    first, last = (forbidden, allowed) if order == "allowed-last" else (allowed, forbidden)
    body = f'{{{first}, {last}, "messages": [{{"role": "user", "content": "dup"}}], "max_tokens": 2}}'
    response = send(stack, body.encode(), key=TEAM_B_KEY)  # team-b may use only the local model
    if order == "allowed-last":
        assert response.status == 200, response.body
        assert response.headers["x-switchyard-model"] == LOCAL_MODEL
    else:
        assert response.status == 403
        assert response.error()["code"] == "model_not_allowed"


@pytest.mark.parametrize("case", [
    pytest.param(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-a: a\x00b\r\ncontent-length: 2\r\n\r\n{}",
                 id="NUL-in-header"),
    pytest.param(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx a: b\r\ncontent-length: 2\r\n\r\n{}",
                 id="space-in-header-name"),
    pytest.param(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ncontent-length: 5\r\n\r\n{}",
                 id="two-content-lengths"),
    pytest.param(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n{}",
                 id="content-length-not-a-number"),
    pytest.param(b"HELLO\r\n\r\n", id="garbage-request-line"),
])
def test_malformed_http_is_refused_and_the_connection_closed(stack: ThreadedStack, case: bytes) -> None:
    response = raw_request(stack, case)
    assert response.status == 400
    assert response.headers.get("connection") == "close"
    assert_still_serving(stack)


def test_malformed_http_error_is_openai_shaped(stack: ThreadedStack) -> None:
    response = raw_request(stack, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-a: a\x00b\r\n"
                                  b"content-length: 2\r\n\r\n{}")
    response.error()


@pytest.mark.parametrize(("count", "status"), [(3_000, 200), (32_000, 431)])
def test_many_headers_are_cheap(stack: ThreadedStack, count: int, status: int) -> None:
    """3,000 small headers (under the 64 KiB limit) are served, 32,000 refused, both fast
    (httpx, the client, is quadratic in the number of headers: hence the raw socket)."""
    extra = "".join(f"x-h{i}: v\r\n" for i in range(count))
    started = time.perf_counter()
    response = raw_request(stack, request_bytes(json.dumps(VALID).encode(), extra=extra))
    assert response.status == status, response.body
    assert time.perf_counter() - started < 5
    if status != 200:
        assert response.error()["code"]
    assert_still_serving(stack)


def test_a_100_kb_header_gets_431(stack: ThreadedStack) -> None:
    response = raw_request(stack, request_bytes(json.dumps(VALID).encode(), extra=f"x-big: {'a' * 100_000}\r\n"))
    try:
        assert response.status == 431, response.status
        assert response.error()["code"]
    finally:
        assert_still_serving(stack)


@pytest.mark.parametrize("token", [-1, 2**200], ids=["negative", "2**200"])
def test_out_of_range_token_ids_are_refused(stack: ThreadedStack, token: int) -> None:
    body = json.dumps({"model": LOCAL_MODEL, "prompt": [1, token], "max_tokens": 2}).encode()
    response = send(stack, body, path=TEXT)
    assert response.status == 400, response.body
    assert response.error()["param"] == "prompt"


def test_a_deeply_nested_policy_is_refused(stack: ThreadedStack) -> None:
    response = send(stack, b"a: " + nested(10_000).encode(), path=POLICY, key=ADMIN_KEY,
                    content_type="application/yaml")
    try:
        assert response.status == 400, response.body
        response.error()
    finally:
        assert_still_serving(stack)

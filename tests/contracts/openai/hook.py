"""Check every body and SSE event the gateway sends against OpenAI's spec, in tests.

``SpecCheckMiddleware`` wraps the gateway's ASGI app in the test stack (``ThreadedStack``
installs it by default) and copies what the gateway sends on the OpenAI routes, and every
error body, into a ``SpecLedger``. The bytes are copied before they are forwarded, so by the
time a client has read a body the ledger holds it. The checks themselves run later, in the
test's own thread (``SpecLedger.check``): the stack's event loop is not slowed by them, and a
failure is reported by the test that caused it (see ``tests/conftest.py``).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from tests.contracts.openai.spec import (
    COMPLETION_CHUNK,
    OpenAISpec,
    SpecViolation,
    load_spec,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ERROR_SCHEMA = "ErrorResponse"
MAX_CAPTURE_BYTES = 32 * 1024 * 1024
"""Past this a response is recorded as not checked (a bound-test's huge body, not a leak)."""

# (method, path, schema of a JSON body, schema of each SSE event)
_ROUTES: tuple[tuple[str, re.Pattern[str], str, str | None], ...] = (
    ("POST", re.compile(r"/v1/chat/completions"), "CreateChatCompletionResponse",
     "CreateChatCompletionStreamResponse"),
    ("POST", re.compile(r"/v1/completions"), "CreateCompletionResponse", COMPLETION_CHUNK),
    ("GET", re.compile(r"/v1/models"), "ListModelsResponse", None),
    ("GET", re.compile(r"/v1/models/.+"), "Model", None),
    ("POST", re.compile(r"/v1/embeddings"), "CreateEmbeddingResponse", None),
    ("POST", re.compile(r"/v1/responses"), "Response", "ResponseStreamEvent"),
    ("GET", re.compile(r"/v1/responses/[^/]+"), "Response", None),
)
# Error bodies are OpenAI's shape everywhere but on these: the readiness probe has its own
# body, and Anthropic's door answers in Anthropic's shape (checked by its own contract tests).
# the console's HTML pages (a failed login is a page); its /console/api/ errors are checked
_NOT_OPENAI_ERRORS = re.compile(r"/readyz|/v1/messages(/.*)?|/console(?!/api/)(/.*)?")


@dataclass(frozen=True)
class Check:
    """One body or SSE event and the schema it was checked against.

    Attributes:
        method: Request method.
        path: Request path.
        status: Response status.
        schema: Schema used (``ResponseStreamEvent/ResponseCompletedEvent`` for a union
            member), or a note in parentheses when the body could not be checked.
        problem: ``None`` when valid; else the violation (JSON path and reason).
    """

    method: str
    path: str
    status: int
    schema: str
    problem: str | None = None

    def __str__(self) -> str:
        where = f"{self.method} {self.path} -> {self.status}"
        return f"{where}: {self.schema}: {self.problem}" if self.problem else f"{where}: {self.schema}"


def schemas_for(method: str, path: str, status: int) -> tuple[str, str | None] | None:
    """(body schema, event schema) of a response, or ``None`` when it is not checked."""
    if status >= 400:
        return None if _NOT_OPENAI_ERRORS.fullmatch(path) else (ERROR_SCHEMA, ERROR_SCHEMA)
    if not 200 <= status < 300:
        return None
    for route_method, pattern, body, event in _ROUTES:
        if method == route_method and pattern.fullmatch(path):
            return body, event
    return None


@dataclass
class _Capture:
    method: str
    path: str
    status: int
    content_type: str
    body_schema: str
    event_schema: str | None
    data: bytearray = field(default_factory=bytearray)
    complete: bool = False
    closed: bool = False
    overflow: bool = False

    @property
    def is_stream(self) -> bool:
        return self.content_type.startswith("text/event-stream")


class SpecLedger:
    """What the gateway sent on the OpenAI routes, and the result of checking it.

    Thread-safe: the middleware feeds it from the stack's event loop thread, tests read it
    from theirs. ``checks`` holds every ``Check`` since the last ``reset``.

    Args:
        spec: The validator; defaults to the vendored spec.
    """

    def __init__(self, spec: OpenAISpec | None = None) -> None:
        self._spec = spec
        self._lock = threading.Lock()
        self._pending: list[_Capture] = []
        self.checks: list[Check] = []

    def open(self, method: str, path: str, status: int, headers: list[tuple[bytes, bytes]]) -> _Capture | None:
        """Start recording a response; ``None`` when it is not one the spec covers."""
        schemas = schemas_for(method, path, status)
        if schemas is None:
            return None
        content_type = next((v.decode("latin-1").lower() for k, v in headers if k.lower() == b"content-type"), "")
        capture = _Capture(method, path, status, content_type, *schemas)
        with self._lock:
            self._pending.append(capture)
        return capture

    def feed(self, capture: _Capture, chunk: bytes, *, more: bool) -> None:
        """Append bytes of a response body (``more=False`` on its last part)."""
        with self._lock:
            if len(capture.data) + len(chunk) > MAX_CAPTURE_BYTES:
                capture.overflow = True
            elif not capture.overflow:
                capture.data += chunk
            capture.complete = capture.complete or not more

    def close(self, capture: _Capture) -> None:
        """The app returned: a body still incomplete will stay so (the client left)."""
        with self._lock:
            capture.closed = True

    def reset(self) -> None:
        """Forget the checks made so far (the next test starts)."""
        with self._lock:
            self.checks = []

    def check(self) -> list[Check]:
        """Check everything received since the last call; return the failed checks.

        A stream still running is checked up to its last complete event and picked up again
        by the next call.
        """
        with self._lock:
            work = [(c, self._take(c)) for c in self._pending]
            self._pending = [c for c in self._pending if not (c.complete or c.closed)]
        spec = self._spec or load_spec()
        done = [check for capture, taken in work for check in _check(spec, capture, *taken)]
        with self._lock:
            self.checks.extend(done)
        return [c for c in done if c.problem is not None]

    def _take(self, capture: _Capture) -> tuple[bytes, bool]:
        finished = capture.complete or capture.closed
        if not capture.is_stream:
            return (bytes(capture.data), True) if finished else (b"", False)
        # a stream: hand over the complete events, keep a partial one for the next call
        raw = bytes(capture.data)
        lf, crlf = raw.rfind(b"\n\n"), raw.rfind(b"\r\n\r\n")
        cut = len(raw) if finished else max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
        del capture.data[:cut]
        return raw[:cut].replace(b"\r\n", b"\n"), finished


def _check(spec: OpenAISpec, capture: _Capture, data: bytes, finished: bool) -> list[Check]:
    def result(schema: str, problem: str | None = None) -> Check:
        return Check(capture.method, capture.path, capture.status, schema, problem)

    if capture.overflow:
        return [result(f"(not checked: body over {MAX_CAPTURE_BYTES} bytes)")] if finished else []
    if capture.is_stream:
        return [_check_value(spec, capture.event_schema or capture.body_schema, event, result)
                for event in _sse_data(data)]
    if not finished:
        return []
    if not capture.complete:
        return [result("(not checked: the response ended before its body was complete)")]
    if not capture.content_type.startswith("application/json"):
        return [result(capture.body_schema, f"content-type {capture.content_type!r}, not JSON")]
    return [_check_value(spec, capture.body_schema, data.decode("utf-8", errors="replace"), result)]


def _check_value(spec: OpenAISpec, schema: str, text: str, result: Callable[..., Check]) -> Check:
    try:
        value = json.loads(text)
    except ValueError:
        return result(schema, f"not JSON: {text[:120]!r}")
    if isinstance(value, dict) and "error" in value and not {"object", "type", "choices"} & value.keys():
        schema = ERROR_SCHEMA  # an error event in a stream, as OpenAI sends one
    try:
        return result(spec.validate(schema, value))
    except SpecViolation as violation:
        return result(violation.schema, f"{violation.path}: {violation.reason}")


def _sse_data(data: bytes) -> list[str]:
    """The data of each event in complete SSE text, without ``[DONE]`` (it is not JSON)."""
    out = []
    for block in data.decode("utf-8", errors="replace").split("\n\n"):
        lines = [line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")]
        if lines and lines != ["[DONE]"]:
            out.append("\n".join(lines))
    return out


class SpecCheckMiddleware:
    """ASGI middleware that copies responses into a ``SpecLedger`` and changes nothing.

    Args:
        app: The gateway app.
        ledger: Where the responses go.
    """

    def __init__(self, app: ASGIApp, ledger: SpecLedger) -> None:
        self.app = app
        self.ledger = ledger

    @classmethod
    def around(cls, ledger: SpecLedger) -> Callable[[ASGIApp], ASGIApp]:
        """A wrapper for ``start_local_stack(wrap_app=...)``."""
        return lambda app: cls(app, ledger)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "HEAD":
            await self.app(scope, receive, send)
            return
        capture: _Capture | None = None

        async def recording_send(message: Message) -> None:
            nonlocal capture
            if message["type"] == "http.response.start":
                capture = self.ledger.open(scope["method"], scope["path"], message["status"],
                                           list(message.get("headers", [])))
            elif message["type"] == "http.response.body" and capture is not None:
                self.ledger.feed(capture, message.get("body", b""), more=message.get("more_body", False))
            await send(message)  # after recording: once the client has a byte, the ledger has it

        try:
            await self.app(scope, receive, recording_send)
        finally:
            if capture is not None:
                self.ledger.close(capture)

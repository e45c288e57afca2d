"""Recorded traffic for ``switchyard replay``: a JSONL file read and checked line by line.

Each line is either an access-log record of the gateway (``{"ts", "tenant", "session",
"request": {...}, ...}``; other fields are ignored, and a record without ``request`` was
logged with content capture off, so it is skipped and counted), or a bare OpenAI chat or
text completion body, optionally wrapped as ``{"tenant": ..., "request": {...}}`` or with
``tenant`` next to the body's own fields. A malformed line stops the replay with its number.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

Endpoint = Literal["chat", "text"]
_ENVELOPE_FIELDS = ("ts", "tenant", "session")
"""Fields next to a bare body that are ours, not OpenAI's: taken out before sending."""


class TrafficError(ValueError):
    """A traffic file that cannot be replayed; the message names the file and the line."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        where = f"{source}, line {line}" if line is not None else source
        super().__init__(f"{where}: {problem}")
        self.line = line


@dataclass(frozen=True, slots=True)
class TrafficRequest:
    """One request to replay."""

    line: int
    """Line number in the traffic file (from 1), for error messages and the JSON report."""
    ts: float | None
    """Recorded arrival time (Unix seconds), if any."""
    tenant: str | None
    """Recorded tenant; ``None`` means the replayed policy's first tenant."""
    session: str | None
    """Sent as ``x-switchyard-session``; the turns of one session are sent in order."""
    endpoint: Endpoint
    """``chat`` (``/v1/chat/completions``, the body has ``messages``) or ``text`` (``prompt``)."""
    body: dict[str, Any]
    """The OpenAI request body as recorded."""


@dataclass(frozen=True, slots=True)
class Traffic:
    """The requests of a traffic file, in file order, and what was left out."""

    source: str
    requests: list[TrafficRequest]
    skipped_no_content: int = 0
    """Access-log records without ``request`` (content capture was off)."""

    @property
    def is_timed(self) -> bool:
        """True when at least one request has a recorded arrival time."""
        return any(r.ts is not None for r in self.requests)


class _Envelope(msgspec.Struct):
    ts: float | None = None
    tenant: str | None = None
    session: str | None = None
    request: dict[str, Any] | None = None


class _Message(msgspec.Struct):
    role: str


class _ChatBody(msgspec.Struct):
    model: str
    messages: Annotated[list[_Message], msgspec.Meta(min_length=1)]


class _TextBody(msgspec.Struct):
    model: str
    prompt: str | list[Any]


def read_traffic(path: str | Path, limit: int | None = None) -> Traffic:
    """Read and check a traffic file; stop after ``limit`` requests when given.

    Raises:
        TrafficError: the file cannot be read, or a line is not a request or a record.
    """
    source = str(path)
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError as exc:
        raise TrafficError(source, None, f"cannot read: {exc.strerror}") from None
    requests: list[TrafficRequest] = []
    skipped = 0
    for number, line in _numbered(lines):
        request = parse_line(line, number, source)
        if request is None:
            skipped += 1
        else:
            requests.append(request)
            if limit is not None and len(requests) >= limit:
                break  # lines after the limit are not read, nor checked
    if not requests:
        raise TrafficError(source, None, f"no request to replay ({skipped} record(s) without content)")
    return Traffic(source, requests, skipped)


def _numbered(lines: list[str]) -> Iterator[tuple[int, str]]:
    for index, line in enumerate(lines, 1):
        if line.strip():
            yield index, line


def parse_line(line: str, number: int, source: str = "traffic") -> TrafficRequest | None:
    """The request of one line, or ``None`` for an access-log record without content.

    Raises:
        TrafficError: the line is not JSON, or not a request body or an access-log record.
    """
    try:
        data = msgspec.json.decode(line)
    except msgspec.DecodeError as exc:
        raise TrafficError(source, number, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise TrafficError(source, number, "expected a JSON object")
    if "messages" in data or "prompt" in data:  # a bare body, maybe with our fields beside it
        data = {**{k: data.pop(k) for k in _ENVELOPE_FIELDS if k in data}, "request": data}
    try:
        envelope = msgspec.convert(data, _Envelope)
    except msgspec.ValidationError as exc:
        raise TrafficError(source, number, _problem(exc)) from None
    if envelope.request is None:
        if "ts" in data or "tenant" in data:
            return None  # an access-log record written with content capture off
        raise TrafficError(source, number, "neither a request body (with messages or prompt) nor an "
                                           "access-log record (ts, tenant, request)")
    endpoint = _check_body(envelope.request, source, number)
    return TrafficRequest(number, envelope.ts, envelope.tenant, envelope.session, endpoint,
                          envelope.request)


def _check_body(body: dict[str, Any], source: str, number: int) -> Endpoint:
    endpoint: Endpoint
    shape: type[_ChatBody | _TextBody]
    if "messages" in body:
        endpoint, shape = "chat", _ChatBody
    elif "prompt" in body:
        endpoint, shape = "text", _TextBody
    else:
        raise TrafficError(source, number, "request has neither messages (chat) nor prompt (text)")
    try:
        msgspec.convert(body, shape)
    except msgspec.ValidationError as exc:
        raise TrafficError(source, number, _problem(exc, "request")) from None
    return endpoint


def _problem(exc: msgspec.ValidationError, root: str = "") -> str:
    """msgspec's message with ``$`` spelled as the field it stands for."""
    text = str(exc)
    return text.replace("`$.", f"`{root}." if root else "`").replace("`$`", f"`{root or 'line'}`")

"""The data-plane HTTP client: pooled aiohttp sessions, timeouts, and transport errors.

aiohttp carries completions because it is several times faster than httpx's default
transport under many concurrent streams (bench/overhead, docs/performance.md); httpx serves
the control plane (health checks, metrics scrapes) where its API matters more than speed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp

from backends.errors import (
    SwitchyardError,
    UpstreamDeadlineError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
    UpstreamTooLargeError,
    UpstreamUnavailableError,
)
from backends.read_clock import ReadClock

_MIB = 1024 * 1024
ERROR_BODY_BYTES = 64 * 1024
"""An upstream error body is read this far at most: only a short message of it is kept."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-deployment limits on one upstream exchange: its times (seconds) and sizes (bytes).

    The time limits come from the backend's ``timeouts``, the rest from the policy's
    ``bounds`` (``policies/bounds_config.py``); each backend receives one of these at
    construction and applies it to every read.
    """

    connect: float = 5.0
    first_byte: float = 60.0
    """Until the response headers and, for a stream, its first event."""
    idle: float = 60.0
    """Longest gap between two stream events once the stream runs."""
    total: float = 300.0
    """A non-streamed call from sending the request to the last byte (``upstream_deadline_s``)."""
    stream_total: float = 1800.0
    """A stream from its response headers to its last byte (``stream_duration_s``)."""
    max_body_bytes: int = 8 * _MIB
    """A non-streamed answer, after decompression (``upstream_body_bytes``)."""
    max_event_bytes: int = _MIB
    """One server-sent event of a stream (``upstream_event_bytes``)."""
    max_decompressed_bytes: int = 32 * _MIB
    """What one compressed body may inflate to (``upstream_decompressed_bytes``)."""


def open_session(max_connections: int = 0, *, compression: bool = False) -> aiohttp.ClientSession:
    """A keep-alive pool tuned for many concurrent streams (0 = no connection cap).

    Without ``compression`` every request asks for ``Accept-Encoding: identity``: aiohttp
    would otherwise offer gzip and inflate whatever comes back, which turns a 51 KB gzip bomb
    into gigabytes. A compressed body sent anyway is still inflated, within
    ``Timeouts.max_decompressed_bytes`` (``iter_chunks``, ``read_body``).
    """
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        limit_per_host=0,
        keepalive_timeout=75,
        ttl_dns_cache=300,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),
        headers=None if compression else {"accept-encoding": "identity"},
        skip_auto_headers=("User-Agent",),
        auto_decompress=True,
    )


def is_compressed(response: aiohttp.ClientResponse) -> bool:
    """Whether aiohttp inflates this body (its bytes then say nothing of what was sent)."""
    return response.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity")


def transport_error(exc: BaseException, target: str) -> SwitchyardError:
    """Map an aiohttp or timeout exception to the hierarchy; never lets it leave backends/."""
    if isinstance(exc, SwitchyardError):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamTimeoutError(f"{target} timed out")
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError)):
        return UpstreamUnavailableError(f"{target} is unreachable ({type(exc).__name__})")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamError(f"{target} broke off its response")
    return UpstreamError(f"{target} failed ({type(exc).__name__})")


# Status table shared by every backend speaking HTTP; each backend supplies the message.
_STATUS_ERRORS: dict[int, type[SwitchyardError]] = {
    400: UpstreamRejectedError,
    404: UpstreamRejectedError,
    408: UpstreamTimeoutError,
    413: UpstreamRejectedError,
    422: UpstreamRejectedError,
    429: UpstreamRateLimitedError,
    502: UpstreamUnavailableError,
    503: UpstreamUnavailableError,
    504: UpstreamTimeoutError,
}

_NUMBER = re.compile(r"\d{1,9}(\.\d{1,6})?")
_SECRETISH = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|Bearer\s+\S+|key[=:]\s*\S+)", re.IGNORECASE)


def status_error(
    status: int, message: str, target: str, headers: Mapping[str, str], secret: str | None
) -> SwitchyardError:
    """Translate an upstream HTTP error into ours: status class, a scrubbed short message."""
    if secret:
        message = message.replace(secret, "***")
    message = _SECRETISH.sub("***", message)[:500]
    if status in (401, 403):
        # the gateway's own credentials failed: not the client's fault, and not its business
        return UpstreamError(f"{target} refused the gateway's credentials (HTTP {status})")
    cls = _STATUS_ERRORS.get(status, UpstreamError)
    text = f"{target} answered HTTP {status}: {message}" if message else f"{target} answered HTTP {status}"
    if cls is UpstreamRateLimitedError or cls is UpstreamUnavailableError:
        return cls(text, headers=retry_headers(headers))
    return cls(text)


def retry_headers(headers: Mapping[str, str]) -> dict[str, str] | None:
    """The upstream's ``retry-after`` (seconds) and ``retry-after-ms`` (OpenAI's), when they are
    plain numbers: the client's SDK waits as the upstream asked."""
    kept = {name: headers[name] for name in ("retry-after", "retry-after-ms")
            if _NUMBER.fullmatch(headers.get(name, ""))}
    return kept or None


async def iter_chunks(
    response: aiohttp.ClientResponse, timeouts: Timeouts, target: str
) -> AsyncIterator[bytes]:
    """Yield a stream's raw body chunks: the first within ``first_byte``, each next one within
    ``idle``, all within ``stream_total``; a compressed body inflates to at most
    ``max_decompressed_bytes``. Crossing a bound raises its ``BoundExceededError``."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + timeouts.stream_total
    inflate_cap = timeouts.max_decompressed_bytes if is_compressed(response) else 0
    limit, received = timeouts.first_byte, 0
    reader = response.content
    clock = ReadClock(loop)  # one timer for the stream, not a timeout block per read
    try:
        while True:
            now = loop.time()
            left = ends - now
            if left <= 0:  # checked before reading: data that is always ready never waits on a timer
                raise _stream_too_long(target, timeouts)
            try:
                chunk = await clock.read(reader, now + min(limit, left))
            except TimeoutError as exc:
                if left < limit:
                    raise _stream_too_long(target, timeouts) from exc
                raise UpstreamTimeoutError(f"{target} sent nothing for {limit:g}s") from exc
            except aiohttp.ClientError as exc:
                raise transport_error(exc, target) from exc
            if not chunk:
                return
            if inflate_cap:
                received += len(chunk)
                if received > inflate_cap:
                    raise _inflated_too_far(target, inflate_cap)
            limit = timeouts.idle
            yield chunk
    finally:
        clock.stop()


STREAM_TAIL_S = 1.0
"""How long a finished stream's last bytes may take to arrive before its connection is closed
instead of going back to the pool."""


def end_stream(response: aiohttp.ClientResponse, *, complete: bool) -> None:
    """Let go of a streamed response, keeping its connection when the stream ended as it should.

    ``complete``: the upstream said it was done (``[DONE]``). Its connection then goes back to
    the pool, at once when the body has ended, or when its last bytes arrive: a chunked body's
    zero-length last chunk is usually a separate write after ``[DONE]``, and aiohttp returns
    the connection itself on that end of the body. A timer closes the connection if that end
    does not come within ``STREAM_TAIL_S``. Without the reuse every streamed request paid a
    new upstream connection (socket, connect, a resolver thread hop) before its first byte.
    Anything else (cancel, ``aclose``, an error) closes the socket, so the upstream sees the
    disconnect and stops generating.
    """
    if not complete:
        response.close()
    elif response.content.is_eof():
        response.release()
    else:
        asyncio.get_running_loop().call_later(STREAM_TAIL_S, _close_unless_ended, response)


def _close_unless_ended(response: aiohttp.ClientResponse) -> None:
    if not response.closed:
        response.close()


async def read_body(
    response: aiohttp.ClientResponse, timeouts: Timeouts, target: str, started: float
) -> bytes:
    """The whole body of a non-streamed answer, bounded in size and time.

    The first bytes must come within ``first_byte`` and each next within ``idle``, all by
    ``started + total`` (``started`` is the event loop's time when the request was sent);
    at most ``max_body_bytes`` (and ``max_decompressed_bytes`` for a compressed body) are
    read. On any failure, cancellation included, the response is closed rather than
    released: a half-read connection must never go back to the pool.
    """
    loop = asyncio.get_running_loop()
    ends = started + timeouts.total
    compressed = is_compressed(response)
    cap, bound = timeouts.max_body_bytes, "upstream_body_bytes"
    if compressed and timeouts.max_decompressed_bytes < cap:
        cap, bound = timeouts.max_decompressed_bytes, "upstream_decompressed_bytes"
    parts: list[bytes] = []
    size, limit = 0, timeouts.first_byte
    try:
        if not compressed and (response.content_length or 0) > cap:
            raise _too_large(target, cap, bound)  # announced: refuse without reading a byte
        while True:
            left = ends - loop.time()
            if left <= 0:
                raise _past_deadline(target, timeouts)
            try:
                async with asyncio.timeout(min(limit, left)):
                    chunk = await response.content.readany()
            except TimeoutError as exc:
                if left < limit:
                    raise _past_deadline(target, timeouts) from exc
                raise UpstreamTimeoutError(f"{target} stalled sending its answer ({limit:g}s)") from exc
            if not chunk:
                return b"".join(parts)
            size += len(chunk)
            if size > cap:
                raise _too_large(target, cap, bound)
            parts.append(chunk)
            limit = timeouts.idle
    except BaseException as exc:
        response.close()
        if isinstance(exc, aiohttp.ClientError):
            raise transport_error(exc, target) from exc
        raise


async def read_error_body(response: aiohttp.ClientResponse, timeouts: Timeouts) -> bytes:
    """The first ``ERROR_BODY_BYTES`` of an error answer (its message is all we keep), read
    within ``idle``; whatever arrived by then. Closes the response unless it was read whole."""
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeouts.idle):
            while size < ERROR_BODY_BYTES:
                chunk = await response.content.readany()
                if not chunk:
                    return b"".join(parts)
                parts.append(chunk)
                size += len(chunk)
    except (TimeoutError, aiohttp.ClientError):
        pass
    except BaseException:
        response.close()
        raise
    response.close()
    return b"".join(parts)[:ERROR_BODY_BYTES]


def _too_large(target: str, cap: int, bound: str) -> UpstreamTooLargeError:
    return UpstreamTooLargeError(f"{target} answered more than {cap} bytes (bounds.{bound})", bound=bound)


def _inflated_too_far(target: str, cap: int) -> UpstreamTooLargeError:
    return UpstreamTooLargeError(
        f"{target}'s compressed body inflates past {cap} bytes (bounds.upstream_decompressed_bytes)",
        bound="upstream_decompressed_bytes")


def _past_deadline(target: str, timeouts: Timeouts) -> UpstreamDeadlineError:
    return UpstreamDeadlineError(
        f"{target} did not finish its answer within {timeouts.total:g}s (bounds.upstream_deadline_s)",
        bound="upstream_deadline_s")


def _stream_too_long(target: str, timeouts: Timeouts) -> UpstreamDeadlineError:
    return UpstreamDeadlineError(
        f"{target}'s stream ran longer than {timeouts.stream_total:g}s (bounds.stream_duration_s)",
        bound="stream_duration_s")

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
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-deployment time limits, in seconds."""

    connect: float = 5.0
    first_byte: float = 60.0
    """Until the response headers and, for a stream, its first event."""
    idle: float = 60.0
    """Longest gap between two stream events once the stream runs."""


def open_session(max_connections: int = 0) -> aiohttp.ClientSession:
    """A keep-alive pool tuned for many concurrent streams (0 = no connection cap)."""
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        limit_per_host=0,
        keepalive_timeout=75,
        ttl_dns_cache=300,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),
        skip_auto_headers=("User-Agent",),
        auto_decompress=True,
    )


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
    if cls is UpstreamRateLimitedError:
        retry = headers.get("retry-after", "")
        return UpstreamRateLimitedError(text, headers={"retry-after": retry} if retry.isdigit() else None)
    return cls(text)


async def iter_chunks(
    response: aiohttp.ClientResponse, timeouts: Timeouts, target: str
) -> AsyncIterator[bytes]:
    """Yield raw body chunks, the first within ``first_byte`` and the rest within ``idle``."""
    limit = timeouts.first_byte
    reader = response.content
    while True:
        try:
            async with asyncio.timeout(limit):
                chunk = await reader.readany()
        except TimeoutError as exc:
            raise UpstreamTimeoutError(f"{target} sent nothing for {limit:g}s") from exc
        except aiohttp.ClientError as exc:
            raise transport_error(exc, target) from exc
        if not chunk:
            return
        limit = timeouts.idle
        yield chunk

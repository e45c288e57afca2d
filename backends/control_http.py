"""Control-plane reads (health probes, ``/metrics`` scrapes, server and model info), bounded.

The data plane bounds every answer (``read_body``); the control plane read whole bodies with
httpx's per-operation timeout only, so a worker that sent an endless body, or a huge one, a
byte now and then, kept its probe waiting and the gateway's memory growing, every health
interval. ``control_get`` reads a body to at most ``max_bytes`` (the policy's
``upstream_body_bytes``) and within ``deadline`` seconds in all, and fails like any other
control request (an ``httpx.HTTPError``), so the probe marks the worker as it marks an
unreachable one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["ControlBodyTooLarge", "ControlResponse", "bounded_lines", "control_get"]


class ControlBodyTooLarge(httpx.HTTPError):
    """A control-plane answer longer than its bound."""


@dataclass(frozen=True, slots=True)
class ControlResponse:
    """A control-plane answer, read whole within its bounds."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON (``ValueError`` if it is not)."""
        return json.loads(self.content)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise httpx.HTTPError(f"HTTP {self.status_code}")


async def control_get(client: httpx.AsyncClient, url: str, *, deadline: float, max_bytes: int,
                      headers: dict[str, str] | None = None, params: dict[str, str] | None = None) -> ControlResponse:
    """``GET url``, its whole body within ``deadline`` seconds and ``max_bytes`` bytes.

    Raises:
        httpx.HTTPError: the request failed, took longer than ``deadline`` in all
            (``httpx.ReadTimeout``), or its body is over ``max_bytes`` (``ControlBodyTooLarge``:
            nothing past the bound is read; the connection is closed).
    """
    try:
        async with asyncio.timeout(deadline):
            # identity: a compressed body would be inflated a read at a time before it is counted
            sent = {"accept-encoding": "identity", **(headers or {})}
            async with client.stream("GET", url, headers=sent, params=params, timeout=deadline) as response:
                announced = response.headers.get("content-length")
                if announced is not None and announced.isdigit() and int(announced) > max_bytes:
                    raise ControlBodyTooLarge(f"{url}: {announced} bytes announced, over {max_bytes}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise ControlBodyTooLarge(f"{url}: body over {max_bytes} bytes")
                    chunks.append(chunk)
                return ControlResponse(response.status_code, b"".join(chunks))
    except TimeoutError as exc:
        raise httpx.ReadTimeout(f"{url}: no whole answer within {deadline:g} s") from exc


async def bounded_lines(chunks: AsyncIterator[bytes], max_bytes: int) -> AsyncIterator[bytes]:
    """The newline-separated lines of a body (a watch's JSON events), each at most ``max_bytes``.

    Raises:
        ControlBodyTooLarge: a line grew past ``max_bytes`` before its newline came.
    """
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if len(line) > max_bytes:
                raise ControlBodyTooLarge(f"a line of {len(line)} bytes, over {max_bytes}")
            yield line
        if len(pending) > max_bytes:
            raise ControlBodyTooLarge(f"a line over {max_bytes} bytes")
    if pending:
        yield pending

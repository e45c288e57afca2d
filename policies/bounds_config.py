"""The ``bounds:`` section of the policy: every size and time limit that keeps one peer from
stalling or bloating the gateway for everyone else.

A client (slowloris, too many connections) or an upstream (a huge answer, a huge event, a
gzip bomb, a body that drips forever, a stream that never ends) can each hold memory, a
descriptor or a worker slot for as long as it likes unless something bounds it. Each field
here is such a bound with a default that no normal exchange comes near; exceeding one ends
that one request or connection with an error in the door's shape and counts
``switchyard_bound_exceeded_total{bound="<field name>"}``. docs/reliability.md lists them
with the attack each one stops.

The request body bound is a process setting, not a policy field (``--max-body-bytes`` /
``SWITCHYARD_MAX_BODY_BYTES``): the HTTP framework enforces it before any policy is read.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from backends.config import StrictModel

MIB = 1024 * 1024


class BoundsConfig(StrictModel):
    """Size and time bounds on upstream answers and on client connections (``bounds:``).

    The upstream bounds apply to every backend and take effect with a policy reload; the
    connection bounds (``header_read_s``, ``keep_alive_s``, ``connections_per_address``) are
    read once when ``switchyard serve`` starts, because the server's sockets outlive policies.
    """

    upstream_body_bytes: Annotated[int, Field(ge=1024)] = 8 * MIB
    """Largest non-streamed upstream answer, counted after decompression. A larger one ends
    the request with 502 ``upstream_response_too_large`` as soon as the limit is crossed
    (the rest is never read). A normal chat answer is a few KB; raise it for large ``n`` with
    ``logprobs``."""
    upstream_event_bytes: Annotated[int, Field(ge=1024)] = 1 * MIB
    """Largest single server-sent event of an upstream stream (one chunk, buffered until its
    blank line). A larger one ends the stream: 502 before the first byte, an SSE ``error``
    event after."""
    upstream_decompressed_bytes: Annotated[int, Field(ge=1024)] = 32 * MIB
    """Most bytes one compressed upstream body (streamed or not) may inflate to; a
    non-streamed answer is also held to ``upstream_body_bytes``. Stops gzip bombs."""
    upstream_compression: bool = False
    """Ask upstreams for compressed bodies (``Accept-Encoding: gzip, deflate``). Off: the
    gateway asks for ``identity`` and inflates a compressed body only if an upstream sends
    one anyway, never past ``upstream_decompressed_bytes``."""
    upstream_deadline_s: Annotated[float, Field(gt=0)] = 300.0
    """Longest a non-streamed upstream call may take, from sending the request to the last
    byte of the answer (``timeouts.first_byte_s`` bounds only the headers). Past it: 504
    ``upstream_deadline_exceeded``, and the upstream connection is closed."""
    stream_duration_s: Annotated[float, Field(gt=0)] = 1800.0
    """Longest an upstream stream may run, from its response headers to its last event,
    however steadily it sends (``timeouts.idle_s`` bounds only the gaps). Past it the
    stream ends with an SSE ``error`` event (504 before the first byte)."""
    stream_text_chars: Annotated[int, Field(ge=1024)] = 256 * 1024
    """Generated text one relayed stream keeps for settlement and cache-aware routing (the
    prefix the worker now caches); past it only counts grow, so a never-ending or huge
    stream costs bounded memory. Chunks are kept only for the response cache, and only up to
    its ``max_entry_bytes``."""
    header_read_s: Annotated[float, Field(gt=0)] = 10.0
    """Time a client connection has to send a request's line and headers, from connecting
    (or from the first byte of a later request on a kept-alive connection). Past it the
    connection gets 408 and is closed: stops slowloris. uvicorn has no such timeout of its
    own; with ``--server granian``, granian's ``header_read_timeout`` is set from it."""
    keep_alive_s: Annotated[float, Field(gt=0)] = 75.0
    """An idle kept-alive client connection is closed after this. Keep it above the idle
    timeout of a load balancer in front (60 s for most) so the balancer closes first."""
    connections_per_address: Annotated[int, Field(ge=0)] = 512
    """Open connections one client address may hold per gateway process; one more is
    answered 429 and closed at once (0: no cap). Behind a proxy or load balancer every
    connection comes from its few addresses: raise this well above the proxy's connection
    pool, or set 0 and cap per client at the proxy."""

"""The ``responses:`` section of the policy: stored responses of the OpenAI Responses door.

The door is stateless by default: a request is stored only when it says ``store: true``, and
a later request continues from it with ``previous_response_id``. Stored responses live in
Redis when the gateway has ``REDIS_URL`` (every replica reads them), in the process's memory
otherwise; a tenant only ever reads its own.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from backends.config import StrictModel


class ResponsesConfig(StrictModel):
    """How the Responses door keeps responses (``responses:``; docs/api.md)."""

    store: bool = True
    """Keep the responses a client asks to store (``store: true``) so that
    ``previous_response_id`` and ``GET /v1/responses/{id}`` work. Off: both are refused with
    400 saying how to turn it on."""
    ttl_s: Annotated[float, Field(gt=0, le=30 * 86_400)] = 3_600.0
    """Seconds a stored response can be continued or read; then it is gone (404)."""
    max_entries: Annotated[int, Field(ge=1)] = 10_000
    """Stored responses kept (over all replicas with Redis); the oldest go first."""
    max_entry_bytes: Annotated[int, Field(ge=1024)] = 1_048_576
    """Largest stored entry: the conversation so far (input items) and the response. A larger
    one is not stored (logged); continuing from it answers 404."""

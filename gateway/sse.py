"""Server-sent events towards the client, byte for byte as OpenAI sends them."""

from __future__ import annotations

from typing import Any

from backends import open_wire
from backends.errors import SwitchyardError
from gateway.errors import error_payload

DONE = b"data: [DONE]\n\n"


def encode_event(payload: Any) -> bytes:
    """``data: {json}\\n\\n``, with the fields the gateway does not model as they came."""
    return b"data: " + open_wire.encode(payload) + b"\n\n"


def encode_error_event(error: SwitchyardError) -> bytes:
    """A mid-stream failure: the ``openai`` SDK raises ``APIError`` on an ``error`` event."""
    return encode_event(error_payload(error))

"""Server-sent events towards the client, byte for byte as OpenAI sends them."""

from __future__ import annotations

from typing import Any

import msgspec

from backends.errors import SwitchyardError
from gateway.errors import error_payload

_ENCODER = msgspec.json.Encoder()
DONE = b"data: [DONE]\n\n"


def encode_event(payload: Any) -> bytes:
    """``data: {json}\\n\\n``."""
    return b"data: " + _ENCODER.encode(payload) + b"\n\n"


def encode_error_event(error: SwitchyardError) -> bytes:
    """A mid-stream failure: the ``openai`` SDK raises ``APIError`` on an ``error`` event."""
    return encode_event(error_payload(error))

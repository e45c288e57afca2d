"""Backends: one client per backend kind behind one protocol, worker pools, the simulator.

This is the bottom layer: the shared typed values (``types``) and the exception hierarchy
(``errors``) live here so every other layer can import them.
"""

from __future__ import annotations

from backends.base import Backend
from backends.errors import SwitchyardError
from backends.types import ChatChunk, ChatRequest, ChatResponse, Health, TextRequest, TextResponse

__all__ = ["Backend", "ChatChunk", "ChatRequest", "ChatResponse", "Health", "SwitchyardError",
           "TextRequest", "TextResponse"]

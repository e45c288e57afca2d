"""The prompt as routing sees it: one canonical string per request.

Cache-aware routing compares prompts by prefix, so the rendering must be deterministic and
must put earlier turns first, as the backend's chat template does. ``head`` ends after the
first user turn: system prompt plus opening question identify a conversation, so every
later turn of it hashes to the same home worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from backends.types import Message, ToolCall

_TURN, _BODY = "\x1e", "\x1f"  # record/unit separators: cannot be confused with message text
_TEXT_HEAD_CHARS = 1024


def _render(message: Message) -> str:
    text = message.text()
    calls = message.tool_calls
    if isinstance(calls, list):
        text += "".join(_render_call(call) for call in calls)
    return f"{_TURN}{message.role}{_BODY}{text}"


def _render_call(call: ToolCall) -> str:
    return f"{_BODY}{call.name}{_BODY}{call.arguments}"


def render_chat(messages: Sequence[Message]) -> tuple[str, int]:
    """(prompt text, length of its head) for a chat request."""
    parts: list[str] = []
    head = 0
    length = 0
    for message in messages:
        part = _render(message)
        parts.append(part)
        length += len(part)
        if not head and message.role == "user":
            head = length
    return "".join(parts), head or length


def render_text(prompt: str | list[Any]) -> tuple[str, int]:
    """(prompt text, head length) for a legacy completion; token ids render as numbers."""
    if isinstance(prompt, list):
        first = prompt[0] if prompt else ""
        prompt = first if isinstance(first, str) else ",".join(map(str, first if isinstance(first, list) else prompt))
    return prompt, min(len(prompt), _TEXT_HEAD_CHARS)


def render_answer(text: str) -> str:
    """How the assistant's answer continues the prompt in the next turn's rendering."""
    return f"{_TURN}assistant{_BODY}{text}"

"""Canonical chat chunks as the Responses API's stream of events.

The sequence is the spec's: ``response.created`` and ``response.in_progress``; per output
item ``response.output_item.added``, its content part (``response.content_part.added``), the
deltas (``response.reasoning_text.delta``, ``response.output_text.delta``,
``response.function_call_arguments.delta``), their ``.done`` events and
``response.output_item.done``; then ``response.completed`` (``response.incomplete`` when the
answer was cut by ``max_output_tokens`` or moderation) with usage. A stream broken after its
first byte ends with an ``error`` event and ``response.failed``. Every event carries
``sequence_number`` and is framed ``event: <type>`` + ``data: <json>``, as OpenAI sends it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from backends.errors import SwitchyardError
from backends.types import ChatChunk, Usage
from gateway.doors.responses_output import (
    Echo,
    call_item,
    message_item,
    new_id,
    reasoning_item,
    status_of,
)

__all__ = ["ResponsesStream"]

_ENCODER = msgspec.json.Encoder()


class _Item:
    """One output item being streamed: its kind, id, position and what it holds so far."""

    def __init__(self, kind: str, index: int, item_id: str) -> None:
        self.kind, self.index, self.id = kind, index, item_id
        self.text: list[str] = []
        self.thinking: list[dict[str, Any]] = []
        self.call_id, self.name = "", ""

    def snapshot(self, status: str) -> dict[str, Any]:
        text = "".join(self.text)
        if self.kind == "reasoning":
            return reasoning_item(self.id, text, self.thinking, status)
        if self.kind == "message":
            return message_item(self.id, text, None, status)
        return call_item(self.id, self.call_id, self.name, text, status)


class ResponsesStream:
    """The events of one streamed response (a ``StreamEncoder``).

    Args:
        echo: What the response objects repeat from the request.
        on_final: Called with the final response object before its last event is encoded
            (the door keeps it for ``store: true``).
    """

    def __init__(self, echo: Echo, on_final: Callable[[dict[str, Any]], None]) -> None:
        self._echo = echo
        self._on_final = on_final
        self._sequence = 0
        self._items: list[_Item] = []
        self._open: dict[str, _Item] = {}
        """The item receiving each kind of delta: ``reasoning``, ``message``, ``call:<index>``."""
        self._usage: Usage | None = None
        self._finish: str | None = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = _ENCODER.encode({"type": kind, "sequence_number": self._sequence, **fields})
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

    def _started(self) -> list[bytes]:
        if self._sequence:
            return []
        snapshot = self._echo.response("in_progress", [])
        return [self._event("response.created", response=snapshot),
                self._event("response.in_progress", response=snapshot)]

    def chunk(self, chunk: ChatChunk) -> bytes:
        if self._sequence == 0:
            self._echo.model = chunk.model
        out = self._started()
        if isinstance(chunk.usage, Usage):
            self._usage = chunk.usage
        choice = next((c for c in chunk.choices if c.index == 0), None)
        if choice is not None:
            delta = choice.delta
            if isinstance(delta.reasoning_content, str) and delta.reasoning_content:
                out += self._text("reasoning", delta.reasoning_content)
            if isinstance(delta.thinking_blocks, list) and delta.thinking_blocks:
                out += self._opened("reasoning")
                self._open["reasoning"].thinking += delta.thinking_blocks
            if isinstance(delta.content, str) and delta.content:
                out += self._text("message", delta.content)
            for call in delta.tool_calls or ():
                out += self._call(call.index, call.id, call.function)
            if choice.finish_reason is not None:
                self._finish = choice.finish_reason
        return b"".join(out)

    def _opened(self, key: str) -> list[bytes]:
        """Open the item for ``key`` if needed; an item of another kind closes first (a
        message ends the reasoning before it; a tool call ends the message)."""
        if key in self._open:
            return []
        out: list[bytes] = []
        is_call = key.startswith("call:")
        # parallel tool calls may interleave their arguments; anything else ends what is open
        for other in [k for k in self._open if not (is_call and k.startswith("call:"))]:
            out += self._close(self._open.pop(other), "completed")
        kind = "function_call" if is_call else key
        prefix = {"reasoning": "rs", "message": "msg", "function_call": "fc"}[kind]
        item = self._open[key] = _Item(kind, len(self._items), new_id(prefix))
        self._items.append(item)
        return out

    def _added(self, item: _Item) -> list[bytes]:
        out = [self._event("response.output_item.added", output_index=item.index,
                           item=item.snapshot("in_progress"))]
        if item.kind != "function_call":
            part = item.snapshot("in_progress")["content"] or [{"type": "reasoning_text", "text": ""}]
            out.append(self._event("response.content_part.added", item_id=item.id, output_index=item.index,
                                   content_index=0, part=part[0]))
        return out

    def _text(self, key: str, text: str) -> list[bytes]:
        out = self._opened(key)
        item = self._open[key]
        if not item.text:
            out += self._added(item)
        item.text.append(text)
        if not text:
            return out  # announced, nothing to add
        kind = "response.reasoning_text.delta" if key == "reasoning" else "response.output_text.delta"
        extra: dict[str, Any] = {} if key == "reasoning" else {"logprobs": []}
        out.append(self._event(kind, item_id=item.id, output_index=item.index, content_index=0, delta=text, **extra))
        return out

    def _call(self, index: int, call_id: Any, function: Any) -> list[bytes]:
        key = f"call:{index}"
        fresh = key not in self._open
        out = self._opened(key)
        item = self._open[key]
        function = function if isinstance(function, dict) else {}
        if fresh:
            item.call_id = call_id if isinstance(call_id, str) and call_id else new_id("call")
            item.name = function.get("name") if isinstance(function.get("name"), str) else ""
            out += self._added(item)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item.text.append(arguments)
            out.append(self._event("response.function_call_arguments.delta", item_id=item.id,
                                   output_index=item.index, delta=arguments))
        return out

    def _close(self, item: _Item, status: str) -> list[bytes]:
        if item.kind == "reasoning" and not item.text:
            # thinking blocks without text still need their item announced before it ends
            out = self._added(item)
        else:
            out = []
        text = "".join(item.text)
        snapshot = item.snapshot(status)
        where = {"item_id": item.id, "output_index": item.index}
        if item.kind == "function_call":
            out.append(self._event("response.function_call_arguments.done", **where, name=item.name, arguments=text))
        else:
            done = "response.reasoning_text.done" if item.kind == "reasoning" else "response.output_text.done"
            out.append(self._event(done, **where, content_index=0, text=text,
                                   **({} if item.kind == "reasoning" else {"logprobs": []})))
            part = snapshot["content"][0] if snapshot["content"] else {"type": "reasoning_text", "text": text}
            out.append(self._event("response.content_part.done", **where, content_index=0, part=part))
        out.append(self._event("response.output_item.done", output_index=item.index, item=snapshot))
        return out

    def _finish_items(self, status: str) -> tuple[list[bytes], list[dict[str, Any]]]:
        out: list[bytes] = []
        if not self._items:  # an empty answer is still one (empty) message, as OpenAI sends it
            out += self._text("message", "")
        for key in list(self._open):
            out += self._close(self._open.pop(key), status)
        return out, [item.snapshot(status) for item in self._items]

    def done(self) -> bytes:
        status, reason = status_of(self._finish)
        started = self._started()  # a replayed or empty stream still opens with response.created
        out, output = self._finish_items("incomplete" if status == "incomplete" else "completed")
        final = self._echo.response(status, output, self._usage or Usage(), reason)
        self._on_final(final)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return b"".join([*started, *out, self._event(kind, response=final)])

    def error(self, error: SwitchyardError) -> bytes:
        code = "rate_limit_exceeded" if error.status_code == 429 else "server_error"
        output = [item.snapshot("incomplete") for item in self._items]
        failed = self._echo.response("failed", output, self._usage, error={"code": code, "message": error.message})
        return b"".join([*self._started(),
                         self._event("error", code=error.code, message=error.message, param=error.param),
                         self._event("response.failed", response=failed)])

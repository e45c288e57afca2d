"""Anthropic's stream events from canonical chunks, or re-emitted as an Anthropic backend sent them.

A Messages stream is ``message_start``, then per content block ``content_block_start``,
``content_block_delta``s (``text_delta``, ``thinking_delta``, ``input_json_delta``, ...) and
``content_block_stop``, then ``message_delta`` (stop reason, usage) and ``message_stop``.

Chunks from SGLang and OpenAI-compatible backends are rendered into that sequence: a block
opens when the kind of delta changes, the finish reason becomes the stop reason, and the
usage chunk that ends the stream (the door always asks for it) the final usage.

Chunks from an Anthropic backend carry the events they were translated from
(``backends.anthropic.NATIVE_EVENTS``): those are re-emitted as they came (public model name
put on), except that a delta's text is what the relay let through (output moderation may hold,
redact or cut it): held text released later goes into the open text block before it closes,
and a stream cut by moderation ends with ``stop_reason: refusal``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from backends import open_wire
from backends.anthropic import NATIVE_EVENTS
from backends.errors import SwitchyardError
from backends.types import ChatChunk, ChatRequest, ChunkChoice, JSONObject, Usage
from gateway.doors.anthropic_render import error_payload, message_id, stop_reason, usage_of

__all__ = ["AnthropicStream", "encode_event"]

_ENCODER = msgspec.json.Encoder()


def encode_event(data: JSONObject) -> bytes:
    """``event: <type>`` and ``data: <json>``, as Anthropic frames each event."""
    return b"event: " + str(data["type"]).encode() + b"\ndata: " + _ENCODER.encode(data) + b"\n\n"


class _Text:
    """A chunk's text as the relay let it through, taken once by the event that carries it."""

    def __init__(self, choice: ChunkChoice | None) -> None:
        delta = choice.delta if choice is not None else None
        self.content = delta.content if delta is not None and isinstance(delta.content, str) else ""
        reasoning = delta.reasoning_content if delta is not None else None
        self.reasoning = reasoning if isinstance(reasoning, str) else ""
        calls = delta.tool_calls if delta is not None and isinstance(delta.tool_calls, list) else []
        function = calls[0].function if calls else None
        arguments = function.get("arguments") if isinstance(function, dict) else None
        self.arguments = arguments if isinstance(arguments, str) else ""

    def take(self, kind: str) -> str:
        text = getattr(self, kind)
        setattr(self, kind, "")
        return str(text)


class AnthropicStream:
    """Encodes one stream for the Anthropic door; see the module docstring."""

    def __init__(self, call: ChatRequest) -> None:
        self._stops = call.params.stop
        self._started = False
        self._finished = False
        self._open: tuple[int, str] | None = None
        """The open content block: its index and type."""
        self._next_index = 0
        self._tool_blocks: dict[int, int] = {}
        """Canonical tool-call index -> content block index (rendered streams)."""
        self._stop: tuple[str, str | None] = ("end_turn", None)
        self._usage: Usage | None = None
        self._delta_sent = False
        self._thinking = [0, 0]
        """Characters of the open native thinking block: as Anthropic sent them, as released."""
        self._held: list[tuple[JSONObject, ChatChunk, _Text, bool]] | None = None
        """Native events held after a thinking block whose moderated text is still held back."""

    # --- the encoder protocol -------------------------------------------------------------

    def chunk(self, chunk: Any) -> bytes:
        """The events for one chunk (re-emitted natives, or rendered)."""
        originals = chunk.__dict__.get(NATIVE_EVENTS)
        events = self._native(chunk, originals) if originals is not None else self._render(chunk)
        return b"".join(encode_event(e) for e in events)

    def done(self) -> bytes:
        """Close what is open, then ``message_delta`` and ``message_stop`` unless already sent."""
        events = self._flush()
        if self._finished:
            return b"".join(encode_event(e) for e in events)
        if not self._started:
            events.append(self._message_start("msg_switchyard", ""))
        events += self._ending()
        return b"".join(encode_event(e) for e in events)

    def error(self, error: SwitchyardError) -> bytes:
        """An ``error`` event: the ``anthropic`` SDK raises it as an ``APIStatusError``."""
        self._finished = True
        return encode_event(error_payload(error))

    # --- rendering canonical chunks -------------------------------------------------------

    def _render(self, chunk: ChatChunk) -> list[JSONObject]:
        events: list[JSONObject] = []
        if not self._started:
            events.append(self._message_start(message_id(chunk.id), chunk.model))
        if isinstance(chunk.usage, Usage):
            self._usage = chunk.usage
        choice = next((c for c in chunk.choices if c.index == 0), None)
        if choice is None:
            return events
        text = _Text(choice)
        delta = choice.delta
        if text.reasoning:
            events += self._block_delta("thinking", {"type": "thinking_delta", "thinking": text.take("reasoning")})
        for block in delta.thinking_blocks if isinstance(delta.thinking_blocks, list) else ():
            events += self._thinking_block(block)
        if text.content:
            events += self._block_delta("text", {"type": "text_delta", "text": text.take("content")})
        for call in delta.tool_calls if isinstance(delta.tool_calls, list) else ():
            events += self._tool_delta(call.index, call.id, call.function)
        if choice.finish_reason is not None:
            events += self._close()
            matched = open_wire.unknown(choice).get("matched_stop")
            self._stop = stop_reason(choice.finish_reason, matched, self._stops)
        return events

    def _message_start(self, ident: str, model: str) -> JSONObject:
        self._started = True
        return {"type": "message_start", "message": {
            "id": ident, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}}

    def _open_block(self, kind: str, block: JSONObject) -> list[JSONObject]:
        events = self._close()
        index = self._next_index
        self._next_index += 1
        self._open = (index, kind)
        return [*events, {"type": "content_block_start", "index": index, "content_block": block}]

    def _close(self) -> list[JSONObject]:
        if self._open is None:
            return []
        index, _ = self._open
        self._open = None
        return [{"type": "content_block_stop", "index": index}]

    def _block_delta(self, kind: str, delta: JSONObject) -> list[JSONObject]:
        events: list[JSONObject] = []
        if self._open is None or self._open[1] != kind:
            start = {"type": "text", "text": ""} if kind == "text" else \
                {"type": "thinking", "thinking": "", "signature": ""}
            events = self._open_block(kind, start)
        assert self._open is not None
        return [*events, {"type": "content_block_delta", "index": self._open[0], "delta": delta}]

    def _thinking_block(self, block: JSONObject) -> list[JSONObject]:
        """Anthropic's signed thinking through the translation: the signature closes the block."""
        if block.get("type") == "thinking" and self._open is not None and self._open[1] == "thinking":
            delta = {"type": "signature_delta", "signature": str(block.get("signature", ""))}
            return [{"type": "content_block_delta", "index": self._open[0], "delta": delta}, *self._close()]
        if block.get("type") == "redacted_thinking":
            return [*self._open_block("redacted_thinking", dict(block)), *self._close()]
        return []

    def _tool_delta(self, index: int, ident: object, function: object) -> list[JSONObject]:
        events: list[JSONObject] = []
        fields = function if isinstance(function, dict) else {}
        if isinstance(ident, str) and ident:
            name = fields.get("name")
            events = self._open_block("tool_use", {"type": "tool_use", "id": ident,
                                                   "name": name if isinstance(name, str) else "", "input": {}})
            assert self._open is not None
            self._tool_blocks[index] = self._open[0]
        arguments = fields.get("arguments")
        block = self._tool_blocks.get(index)
        if isinstance(arguments, str) and arguments and block is not None:
            events.append({"type": "content_block_delta", "index": block,
                           "delta": {"type": "input_json_delta", "partial_json": arguments}})
        return events

    def _ending(self) -> list[JSONObject]:
        events = self._close()
        if not self._delta_sent:
            reason, sequence = self._stop
            usage = usage_of(self._usage)
            events.append({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence},
                           "usage": usage})
        self._finished = True
        return [*events, {"type": "message_stop"}]

    # --- re-emitting an Anthropic backend's events ----------------------------------------

    def _native(self, chunk: ChatChunk, originals: list[JSONObject]) -> list[JSONObject]:
        choice = next((c for c in chunk.choices if c.index == 0), None)
        text = _Text(choice)
        blocked = choice is not None and choice.finish_reason == "content_filter"
        events: list[JSONObject] = []
        if self._held is not None and text.reasoning:  # released late: into the block held open
            events += self._thinking_text(text.take("reasoning"))
        for event in originals:
            if self._held is not None:
                self._held.append((event, chunk, text, blocked))
            else:
                events += self._native_event(event, chunk, text, blocked)
        if self._held is not None and (choice is None or text.content or choice.finish_reason is not None
                                       or self._thinking[1] >= self._thinking[0]):
            events += self._flush()  # the answer began or ended: moderation released all reasoning
        if text.content:  # released by moderation after its own event: into the text block
            events += self._released(text.take("content"))
        if blocked and not self._delta_sent and not self._finished:
            self._stop = ("refusal", None)  # cut by moderation: the upstream's ending never comes
            events += self._ending()
        return events

    def _native_event(self, event: JSONObject, chunk: ChatChunk, text: _Text, blocked: bool) -> list[JSONObject]:
        kind = event.get("type")
        if self._finished:
            return []
        if kind == "message_start":
            self._started = True
            return [{**event, "message": {**event.get("message", {}), "model": chunk.model}}]
        if kind == "content_block_start":
            index = int(event.get("index", 0))
            block = event.get("content_block") or {}
            self._open = (index, str(block.get("type", "")))
            self._next_index = max(self._next_index, index + 1)
            self._thinking = [0, 0]
            return [event]
        if self._open is not None and self._open[1] == "thinking" and self._thinking[1] < self._thinking[0] \
                and kind in ("content_block_delta", "content_block_stop") and self._held is None:
            # moderation still holds some of this block's thinking: keep the block open until
            # the relay releases it (when the answer begins, or at the end)
            self._held = [(event, chunk, text, blocked)]
            return []
        if kind == "content_block_delta":
            return self._native_delta(event, text)
        if kind == "content_block_stop":
            released = self._released(text.take("content")) if self._open and self._open[1] == "text" else []
            self._open = None
            return [*released, event]
        if kind == "message_delta":
            events = self._released(text.take("content"))
            self._delta_sent = True
            if blocked:
                event = {**event, "delta": {**event.get("delta", {}), "stop_reason": "refusal", "stop_sequence": None}}
            return [*events, event]
        if kind == "message_stop":
            self._finished = True
        return [event]

    def _native_delta(self, event: JSONObject, text: _Text) -> list[JSONObject]:
        delta = event.get("delta") or {}
        field, kind = {"text_delta": ("text", "content"), "thinking_delta": ("thinking", "reasoning"),
                       "input_json_delta": ("partial_json", "arguments")}.get(str(delta.get("type")), ("", ""))
        if not field:
            return [event]  # signature and citation deltas: the relay does not change them
        value = text.take(kind)
        if kind == "reasoning":
            self._thinking[0] += len(str(delta.get("thinking", "")))
            self._thinking[1] += len(value)
        return [{**event, "delta": {**delta, field: value}}] if value else []

    def _thinking_text(self, released: str) -> list[JSONObject]:
        """Thinking the relay released after its own event, into the open thinking block."""
        if self._open is None or self._open[1] != "thinking":
            return []
        self._thinking[1] += len(released)
        delta = {"type": "thinking_delta", "thinking": released}
        return [{"type": "content_block_delta", "index": self._open[0], "delta": delta}]

    def _flush(self) -> list[JSONObject]:
        """The held events, now that the thinking block's text is out."""
        held, self._held = self._held or [], None
        self._thinking = [0, 0]  # whatever was not released by now never will be
        events: list[JSONObject] = []
        for event, chunk, text, blocked in held:
            events += self._native_event(event, chunk, text, blocked)
        return events

    def _released(self, released: str) -> list[JSONObject]:
        """Text the relay let through without an event of its own (held, then released)."""
        if not released:
            return []
        events: list[JSONObject] = []
        if self._open is None or self._open[1] != "text":
            events = self._open_block("text", {"type": "text", "text": ""})
        assert self._open is not None
        delta = {"type": "text_delta", "text": released}
        return [*events, {"type": "content_block_delta", "index": self._open[0], "delta": delta}]

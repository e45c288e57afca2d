"""The fields of a chat request the sims read, and what the sim decides from them.

Decoded with the sim's own structs, loosely as the upstreams accept them (never the gateway's
``backends/types.py``). Two behaviours are planned here, deterministically, so tests can ask
for them:

- **Tool calling.** With ``tools`` in the request, the sim calls a function when
  ``tool_choice`` names it, when ``tool_choice`` is ``"required"`` (the first tool), or when the
  last user message says ``call <name>`` (``tool_choice`` ``"auto"`` or absent). Arguments
  follow the function's JSON schema: every property gets a placeholder of its type.
  ``tool_choice: "none"`` never calls.
- **Reasoning.** The answer opens with reasoning when the request asks for thinking:
  ``chat_template_kwargs.enable_thinking`` (or ``thinking``) true, ``reasoning_effort`` set
  (but not ``"none"``), or ``separate_reasoning: true``. ``separate_reasoning: false`` turns it
  off again, as it leaves no reasoning to separate.

Invalid requests fail with the messages SGLang 0.5.23 gives (``serving_chat._validate_request``).
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from backends.sim.engine import SimFailure, ToolCallPlan


class StreamOptions(msgspec.Struct):
    """``stream_options``."""

    include_usage: bool | None = None


class ChatBody(msgspec.Struct):
    """``POST /v1/chat/completions``, the fields the sim uses; the rest is ignored."""

    messages: list[dict[str, Any]]
    model: str = "default"
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    separate_reasoning: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    cache_salt: str | None = None
    """SGLang 0.5.23 keys its radix cache by this too: a salted prompt matches only itself."""

    def turns(self) -> list[tuple[str, str]]:
        """``(role, text)`` of every message; text parts joined, other parts skipped.

        Raises:
            SimFailure: 400 for no messages or a message without a role.
        """
        if not self.messages:
            raise SimFailure(400, "Messages cannot be empty.")
        turns = []
        for message in self.messages:
            role = message.get("role")
            if not isinstance(role, str):
                raise SimFailure(400, "every message needs a role", param="messages")
            turns.append((role, _text(message.get("content"))))
        return turns

    @property
    def include_usage(self) -> bool:
        """Whether the stream ends with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage is True

    def wants_thinking(self) -> bool:
        """Whether the request asks for reasoning (see the module docstring)."""
        if self.separate_reasoning is False:
            return False
        kwargs = self.chat_template_kwargs or {}
        asked = kwargs.get("enable_thinking") is True or kwargs.get("thinking") is True
        effort = self.reasoning_effort not in (None, "none")
        return asked or effort or self.separate_reasoning is True

    def tool_call(self) -> ToolCallPlan | None:
        """The call to make, if any.

        Raises:
            SimFailure: 400 for a ``tool_choice`` SGLang refuses.
        """
        tools = {name: fn for fn in _functions(self.tools) if isinstance(name := fn.get("name"), str)}
        choice = self.tool_choice
        if choice == "required" and not tools:
            raise SimFailure(400, "Tools cannot be empty if tool choice is set to required.")
        if isinstance(choice, dict):
            if not tools:
                raise SimFailure(
                    400, "Tools cannot be empty if tool choice is set to a specific tool.")
            named = (choice.get("function") or {}).get("name")
            if named not in tools:
                raise SimFailure(400, f"Tool '{named}' not found in tools list.")
            return _plan(tools[named])
        if not tools or choice == "none":
            return None
        if choice == "required":
            return _plan(next(iter(tools.values())))
        asked = _CALL.findall(self._last_user_text())
        return next((_plan(tools[name]) for name in asked if name in tools), None)

    def _last_user_text(self) -> str:
        users = [m for m in self.messages if m.get("role") == "user"]
        return _text(users[-1].get("content")) if users else ""


_CALL = re.compile(r"\bcall\s+([A-Za-z0-9_.\-]+)")
_PLACEHOLDERS: dict[str, Any] = {"string": "sim", "integer": 1, "number": 1.5, "boolean": True,
                                 "array": [], "object": {}, "null": None}


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, dict) and p.get("type") == "text"
                       and isinstance(p.get("text"), str))
    return ""


def _functions(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [t["function"] for t in tools or []
            if t.get("type", "function") == "function" and isinstance(t.get("function"), dict)]


def _plan(function: dict[str, Any]) -> ToolCallPlan:
    """A call with arguments that satisfy the function's schema's property types."""
    schema = function.get("parameters")
    properties = schema.get("properties") if isinstance(schema, dict) else None
    arguments: dict[str, Any] = {}
    for name, spec in (properties or {}).items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        enum = spec.get("enum") if isinstance(spec, dict) else None
        if isinstance(enum, list) and enum:
            arguments[name] = enum[0]
        else:
            arguments[name] = _PLACEHOLDERS.get(kind if isinstance(kind, str) else "string", "sim")
    # SGLang's parsers re-serialise with json.dumps: ", " and ": " separators
    return ToolCallPlan(str(function["name"]), json.dumps(arguments, ensure_ascii=False))

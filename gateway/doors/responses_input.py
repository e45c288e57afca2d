"""A ``POST /v1/responses`` body as the canonical chat request.

``instructions`` become the first (system) message; ``input`` (a string, or a list of items)
becomes the messages: message items with ``input_text``/``input_image`` parts, earlier
``function_call`` items (an assistant turn's tool calls), ``function_call_output`` items (tool
messages) and ``reasoning`` items passed back (the next assistant turn's reasoning, and
Anthropic's signed thinking blocks when the gateway put them in ``encrypted_content``).
Function tools in Responses' flat shape become chat tools, ``text.format`` the chat
``response_format``, ``reasoning.effort`` the chat ``reasoning_effort``,
``max_output_tokens`` ``max_completion_tokens``. Fields of the Responses API the gateway does
not serve are refused with 400 naming them; fields it does not know at all pass upstream as
the chat door passes them (``extra``).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import msgspec
from msgspec import UNSET

from backends.errors import InvalidRequestError, UnsupportedError
from backends.types import (
    ChatParams,
    ChatRequest,
    ContentPart,
    FunctionCall,
    FunctionDef,
    ImagePart,
    ImageURL,
    JSONObject,
    Message,
    PositiveInt,
    Probability,
    StreamOptions,
    Temperature,
    TextPart,
    Tool,
    ToolCall,
)
from gateway.wire import decode_object

__all__ = ["THINKING_PREFIX", "ResponsesBody", "decode_body", "to_chat"]

THINKING_PREFIX = "switchyard-thinking-v1:"
"""``encrypted_content`` of a reasoning item that carries Anthropic's signed thinking blocks
(base64 JSON after this prefix; encoded, not encrypted: the text is the reasoning shown)."""


class ResponsesBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """The fields of ``POST /v1/responses`` the gateway reads; the rest is ``extra``."""

    model: str
    input: str | list[Any] | None = None
    instructions: str | None = None
    tools: list[JSONObject] | None = None
    tool_choice: str | JSONObject | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    text: JSONObject | None = None
    reasoning: JSONObject | None = None
    metadata: dict[str, str] | None = None
    stream: bool | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    user: str | None = None
    truncation: str | None = None
    include: list[str] | None = None


# Responses fields that have no chat counterpart the gateway can honour
_REFUSED = {
    "background": "background responses are not served; send the request and wait (or stream)",
    "conversation": "conversations are not stored by this gateway; use previous_response_id",
    "prompt": "stored prompt templates are OpenAI-side objects this gateway cannot read",
    "max_tool_calls": "built-in tools are not served, so there is no tool-call budget to apply",
    "top_logprobs": "log probabilities are not returned by the Responses door",
}
# Responses fields accepted and sent upstream under their chat name
_PASSED = ("safety_identifier", "prompt_cache_key", "prompt_cache_retention", "service_tier")
_READ = frozenset(ResponsesBody.__struct_fields__) | {"stream_options", *_REFUSED, *_PASSED}
_ACCEPTED_INCLUDES = {"reasoning.encrypted_content"}
_PATH = re.compile(r" - at `\$\.?(.*)`$")
_MISSING = re.compile(r"missing required field `([^`]+)`")


def decode_body(body: bytes) -> tuple[ResponsesBody, dict[str, Any]]:
    """The body as ``ResponsesBody`` and the raw object; 400 in OpenAI's shape when invalid."""
    raw = decode_object(body)
    try:
        parsed = msgspec.convert(raw, ResponsesBody)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _PATH.search(text)
        param = match.group(1) if match else None
        message = _PATH.sub("", text)
        missing = _MISSING.search(message)
        if missing is not None:  # name the field itself, as OpenAI does
            param = f"{param}.{missing.group(1)}" if param else missing.group(1)
            raise InvalidRequestError(f"Missing required parameter: '{param}'.", param=param) from None
        raise InvalidRequestError(f"{param}: {message}" if param else message, param=param) from None
    return parsed, raw


def to_chat(body: ResponsesBody, raw: dict[str, Any], items: list[Any]) -> ChatRequest:
    """The canonical chat request for ``body`` over the conversation ``items``."""
    _refuse_unserved(body, raw)
    messages = ([Message(role="system", content=body.instructions)] if body.instructions else [])
    messages += to_messages(items)
    if not messages:
        raise InvalidRequestError("input: give at least one input item (or text)", param="input")
    extra = {k: v for k, v in raw.items() if k not in _READ}
    extra.update({k: raw[k] for k in _PASSED if raw.get(k) is not None})
    effort = (body.reasoning or {}).get("effort")
    if effort is not None:
        extra["reasoning_effort"] = effort
    verbosity = (body.text or {}).get("verbosity")
    if verbosity is not None:
        extra["verbosity"] = verbosity
    params = ChatParams(
        model=body.model, messages=messages,
        stream=True if body.stream else UNSET,
        # usage is what response.completed reports: always asked for on a stream
        stream_options=StreamOptions(include_usage=True) if body.stream else UNSET,
        max_completion_tokens=_given(body.max_output_tokens), temperature=_given(body.temperature),
        top_p=_given(body.top_p), user=_given(body.user),
        tools=to_tools(body.tools) if body.tools else UNSET,
        tool_choice=_tool_choice(body.tool_choice) if body.tool_choice is not None else UNSET,
        parallel_tool_calls=_given(body.parallel_tool_calls),
        response_format=_response_format(body.text),
    )
    return ChatRequest(params=params, extra=extra)


def _given(value: Any) -> Any:
    return UNSET if value is None else value


def _refuse_unserved(body: ResponsesBody, raw: dict[str, Any]) -> None:
    for name, why in _REFUSED.items():
        value = raw.get(name)
        if value not in (None, False):
            raise UnsupportedError(f"{name}: not supported by this gateway: {why}.", param=name)
    unknown = set(body.include or ()) - _ACCEPTED_INCLUDES
    if unknown:
        raise UnsupportedError(f"include: not supported by this gateway: {sorted(unknown)} (built-in tools and "
                               "logprobs are not served)", param="include")
    metadata = body.metadata or {}
    if len(metadata) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in metadata.items()):
        raise InvalidRequestError("metadata: at most 16 pairs, keys up to 64 and values up to 512 "
                                      "characters", param="metadata")


def to_tools(tools: list[JSONObject]) -> list[Tool]:
    """Responses' flat function tools as chat tools; other tool types are refused."""
    out = []
    for index, tool in enumerate(tools):
        kind = tool.get("type")
        if kind != "function":
            raise UnsupportedError(f"tools[{index}].type: {kind!r} tools are not supported by this gateway "
                                   "(only function tools)", param=f"tools[{index}].type")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequestError(f"tools[{index}].name: a function tool needs its name",
                                      param=f"tools[{index}].name")
        parameters, description = tool.get("parameters"), tool.get("description")
        function = FunctionDef(name=name, description=description if isinstance(description, str) else UNSET,
                               parameters=parameters if isinstance(parameters, dict) else UNSET,
                               strict=tool.get("strict") if isinstance(tool.get("strict"), bool) else UNSET)
        out.append(Tool(type="function", function=function))
    return out


def _tool_choice(choice: str | JSONObject) -> str | JSONObject:
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise InvalidRequestError("tool_choice: 'none', 'auto', 'required' or a function", param="tool_choice")
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise UnsupportedError(f"tool_choice: {choice.get('type')!r} is not supported by this gateway (a mode "
                           "or a function tool)", param="tool_choice")


def _response_format(text: JSONObject | None) -> JSONObject | Any:
    fmt = (text or {}).get("format")
    if fmt is None:
        return UNSET
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return UNSET
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        name, schema = fmt.get("name"), fmt.get("schema")
        if not isinstance(name, str) or not isinstance(schema, dict):
            raise InvalidRequestError("text.format: a json_schema format needs a name and a schema",
                                      param="text.format")
        spec = {"name": name, "schema": schema}
        spec.update({k: fmt[k] for k in ("strict", "description") if fmt.get(k) is not None})
        return {"type": "json_schema", "json_schema": spec}
    raise InvalidRequestError("text.format.type: 'text', 'json_object' or 'json_schema'", param="text.format.type")


# --- input items -> messages ----------------------------------------------------------------


class _Turns:
    """Messages built item by item: function calls join the assistant turn they belong to,
    reasoning waits for the assistant turn it precedes."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._reasoning: list[str] = []
        self._thinking: list[JSONObject] = []

    def add(self, message: Message) -> None:
        if message.role == "assistant":
            self._attach_reasoning(message)
        self.messages.append(message)

    def add_call(self, call: ToolCall) -> None:
        last = self.messages[-1] if self.messages else None
        if last is None or last.role != "assistant" or self._reasoning or self._thinking:
            last = Message(role="assistant", content=None)
            self.add(last)
        last.tool_calls = [*(last.tool_calls or []), call]

    def reasoning(self, text: str, thinking: list[JSONObject]) -> None:
        self._reasoning.append(text)
        self._thinking += thinking

    def _attach_reasoning(self, message: Message) -> None:
        if self._reasoning and any(self._reasoning):
            message.reasoning_content = "".join(self._reasoning)
        if self._thinking:
            message.thinking_blocks = self._thinking
        self._reasoning, self._thinking = [], []


def to_messages(items: list[Any]) -> list[Message]:
    """Responses input items as chat messages (400 naming the item for what cannot be sent)."""
    turns = _Turns()
    for index, item in enumerate(items):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequestError(f"{where}: an input item is an object", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            turns.add(_message(item, where))
        elif kind == "function_call":
            call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
            if not (isinstance(call_id, str) and isinstance(name, str) and isinstance(arguments, str)):
                raise InvalidRequestError(f"{where}: a function_call item needs call_id, name and arguments "
                                          "(strings)", param=where)
            turns.add_call(ToolCall(id=call_id, function=FunctionCall(name=name, arguments=arguments)))
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                raise InvalidRequestError(f"{where}.call_id: the call this output answers", param=f"{where}.call_id")
            turns.add(Message(role="tool", tool_call_id=call_id, content=_output_text(item.get("output"), where)))
        elif kind == "reasoning":
            turns.reasoning(*_reasoning(item))
        else:
            raise UnsupportedError(f"{where}.type: {kind!r} items are not supported by this gateway (messages, "
                                   "function_call, function_call_output and reasoning are)", param=f"{where}.type")
    return turns.messages


_ROLES = ("user", "assistant", "system", "developer")


def _message(item: JSONObject, where: str) -> Message:
    role = item.get("role")
    if role not in _ROLES:
        raise InvalidRequestError(f"{where}.role: one of {', '.join(_ROLES)}", param=f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        return Message(role=role, content=content)
    if not isinstance(content, list):
        raise InvalidRequestError(f"{where}.content: text or a list of content parts", param=f"{where}.content")
    parts: list[ContentPart] = []
    refusal = None
    for index, raw in enumerate(content):
        at = f"{where}.content[{index}]"
        part: JSONObject = raw if isinstance(raw, dict) else {}
        kind = part.get("type")
        if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
            parts.append(TextPart(text=part["text"]))
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            refusal = part["refusal"]
        elif kind == "input_image":
            parts.append(_image(part, at))
        else:
            raise UnsupportedError(f"{at}.type: {kind!r} parts are not supported by this gateway (input_text, "
                                   "output_text, refusal and input_image with an image_url are)", param=f"{at}.type")
    if role == "assistant":  # a plain string: what every backend takes for an earlier answer
        text = "".join(p.text for p in parts if isinstance(p, TextPart))
        message = Message(role=role, content=text if text or refusal is None else None)
        if refusal is not None:
            message.refusal = refusal
        return message
    return Message(role=role, content=parts)


def _image(part: JSONObject, at: str) -> ImagePart:
    url = part.get("image_url")
    if not isinstance(url, str):
        raise UnsupportedError(f"{at}.image_url: images are sent by URL or data URL (file_id is an OpenAI-side "
                               "file this gateway cannot read)", param=f"{at}.image_url")
    detail = part.get("detail")
    return ImagePart(image_url=ImageURL(url=url, detail=detail if isinstance(detail, str) else UNSET))


def _output_text(output: Any, where: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list) and all(isinstance(p, dict) and p.get("type") == "input_text" for p in output):
        return "".join(str(p.get("text", "")) for p in output)
    raise UnsupportedError(f"{where}.output: text (or input_text parts) is supported as a function's output",
                           param=f"{where}.output")


def _reasoning(item: JSONObject) -> tuple[str, list[JSONObject]]:
    """The reasoning text of a passed-back item, and Anthropic thinking blocks it carries."""
    texts = [p.get("text") for p in item.get("content") or [] if isinstance(p, dict)]
    if not texts:
        texts = [p.get("text") for p in item.get("summary") or [] if isinstance(p, dict)]
    text = "".join(t for t in texts if isinstance(t, str))
    sealed = item.get("encrypted_content")
    thinking: list[JSONObject] = []
    if isinstance(sealed, str) and sealed.startswith(THINKING_PREFIX):
        try:
            decoded = msgspec.json.decode(base64.b64decode(sealed[len(THINKING_PREFIX):], validate=True))
        except (binascii.Error, msgspec.DecodeError):
            decoded = None
        if isinstance(decoded, list):
            thinking = [block for block in decoded if isinstance(block, dict)]
    return text, thinking

"""A simulated Anthropic Messages API (``POST /v1/messages``) on top of the shared sim engine.

Only the wire format lives here: validation and errors in Anthropic's shape, the non-streamed
message, and the full SSE event sequence. Generation, latency, prefix cache and the ``sim_*``
test hooks come from ``SimEngine``.

Differences from the real API, on purpose:

* Usage: ``cache_read_input_tokens`` are the engine's prefix-cache hits (the sim caches every
  prefix, marked or not); ``cache_creation_input_tokens`` are the uncached prompt tokens when
  the request marks any block with ``cache_control``, else 0; ``input_tokens`` is the rest.
* Tool use: when the request has tools and either ``tool_choice`` forces one or the last user
  text contains "use the tool", the answer is one ``tool_use`` block calling the named (or
  first) tool with a small input derived from its schema, so round trips can be tested.
* ``sim_*`` body fields are accepted besides the Messages API fields; other unknown fields are
  rejected, as Anthropic does.
* Structured outputs (``output_config.format``): the answer is the smallest JSON instance of
  the schema (``anthropic_rules.minimal_instance``).
* Thinking (``thinking`` enabled or adaptive): the answer opens with a short ``thinking`` block
  of generated words, signed (``anthropic_rules.sign``); its words count as output tokens.

What the real API enforces is enforced here too (``backends/sim/anthropic_rules.py``): the key
as ``x-api-key`` or ``Authorization: Bearer`` (the SDK 2.17 sends the latter), the
``anthropic-version`` header, ``temperature``/``top_p`` ranges and exclusivity, the shapes of
``output_config`` and ``thinking``, intact thinking signatures, and the signed thinking block
at the head of the assistant turn whose tool calls a thinking request answers.
"""

from __future__ import annotations

import hmac
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from backends.sim import anthropic_rules as rules
from backends.sim.config import SimConfig
from backends.sim.engine import Generation, SimEngine, SimFailure, SimHooks, SimRequest
from backends.sim.textgen import generate_words

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_TOOL_TRIGGER = "use the tool"
_SAMPLE_VALUES: dict[str, Any] = {
    "string": "sim",
    "integer": 1,
    "number": 1.5,
    "boolean": True,
    "array": [],
    "object": {},
}
_ENGINE_KEY = web.AppKey("engine", SimEngine)
_THINKING_WORDS = 12
"""Length of the simulated thinking, in generated words (one token each)."""


def build_anthropic_app(config: SimConfig, engine: SimEngine) -> web.Application:
    """An aiohttp app answering ``POST /v1/messages`` like Anthropic, served by ``engine``.

    ``backends.sim.server.build_app`` adds what every sim shares: the ``x-sim-worker`` header
    on every response, ``/sim/stats`` and ``/sim/requests``.
    """
    app = web.Application(middlewares=[_anthropic_errors])
    app[_ENGINE_KEY] = engine
    app.router.add_post("/v1/messages", _messages)
    return app


@web.middleware
async def _anthropic_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unknown routes and wrong methods answer in Anthropic's error shape too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason)


def error_response(status: int, message: str, *, retry_after: int | None = None) -> web.Response:
    """An error in Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``."""
    error_type = _ERROR_TYPES.get(status) or (
        "api_error" if status >= 500 else "invalid_request_error"
    )
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    headers = {"retry-after": str(retry_after)} if retry_after is not None else None
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


def _dumps(value: Any) -> str:
    return msgspec.json.encode(value).decode()


async def _messages(request: web.Request) -> web.StreamResponse:
    engine = request.app[_ENGINE_KEY]
    raw = await request.read()
    engine.record(request.path, raw, request.headers)
    try:
        _check_headers(engine.config, request)
        body = _parse(raw)
        thinking = rules.thinking_enabled(body)
        rules.check_thinking_history(body, thinking)
        schema = rules.output_schema(body)
        tool = _tool_to_call(body)
        generation = engine.admit(_sim_request(engine, body, tool, schema))
    except SimFailure as failure:
        if not failure.counted:
            engine.record_failure()
        return error_response(failure.status, failure.message, retry_after=failure.retry_after)
    reply = _Reply(engine.config, body, generation, tool, thinking=thinking)
    if body.get("stream") is True:
        return await _stream(request, reply)
    async with generation:
        await generation.complete()
    return web.json_response(reply.message(), dumps=_dumps)


def _check_headers(config: SimConfig, request: web.Request) -> None:
    if config.api_key is not None:
        # the SDK (2.17) sends Authorization: Bearer; curl examples and older SDKs x-api-key
        bearer = request.headers.get("authorization", "")
        given = request.headers.get("x-api-key") or (bearer[7:] if bearer[:7].lower() == "bearer " else "")
        if not hmac.compare_digest(given.encode(), config.api_key.encode()):
            raise SimFailure(401, "invalid x-api-key")
    if not request.headers.get("anthropic-version"):
        raise SimFailure(400, "anthropic-version: header is required")


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise SimFailure(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise SimFailure(400, "request body must be a JSON object")
    rules.check_fields(body)
    if not isinstance(body.get("model"), str):
        raise SimFailure(400, "model: Field required")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise SimFailure(400, "max_tokens: Field required (an integer >= 1)")
    _check_messages(body.get("messages"))
    stops = body.get("stop_sequences", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise SimFailure(400, "stop_sequences: Input should be a list of strings")
    rules.check_sampling(body)
    return body


def _check_messages(messages: object) -> None:
    if not isinstance(messages, list) or not messages:
        raise SimFailure(400, "messages: Field required (a non-empty list)")
    expected = "user"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise SimFailure(400, f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if message["role"] != expected:
            raise SimFailure(
                400,
                f"messages.{i}: roles must alternate between 'user' and 'assistant', "
                "starting with 'user'",
            )
        if not isinstance(message.get("content"), (str, list)):
            raise SimFailure(400, f"messages.{i}.content: Field required")
        expected = "assistant" if expected == "user" else "user"


def _sim_request(
    engine: SimEngine, body: dict[str, Any], tool: dict[str, Any] | None,
    schema: dict[str, Any] | None,
) -> SimRequest:
    hooks = SimHooks.from_body(body)
    stops: tuple[str, ...] = tuple(body.get("stop_sequences", []))
    if tool is not None:
        # the tool input is the output: stream it as the JSON the engine "generates"
        hooks = msgspec.structs.replace(hooks, reply=_dumps(_sample_input(tool)))
        stops = ()
    elif schema is not None and hooks.reply is None:
        hooks = msgspec.structs.replace(hooks, reply=_dumps(rules.minimal_instance(schema)))
        stops = ()
    turns = [("system", _system_text(body.get("system")))] if body.get("system") else []
    turns += [(m["role"], _content_text(m["content"])) for m in body["messages"]]
    return SimRequest(
        prompt=engine.render_chat(turns), max_tokens=body["max_tokens"], stop=stops, hooks=hooks
    )


def _system_text(system: object) -> str:
    if isinstance(system, list):
        return _content_text(system)
    return system if isinstance(system, str) else ""


def _content_text(content: str | list[Any]) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            raise SimFailure(400, "content blocks must be objects")
        kind = block.get("type")
        if kind == "text":
            parts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            parts.append(f"[tool_use {block.get('name')} {_dumps(block.get('input', {}))}]")
        elif kind == "tool_result":
            inner = block.get("content", "")
            parts.append(
                f"[tool_result {_content_text(inner if isinstance(inner, (str, list)) else '')}]"
            )
        else:
            parts.append(f"[{kind}]")
    return "\n".join(parts)


def _tool_to_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool the answer calls, or None for a text answer (see the module docstring)."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    if not tools:
        return None
    choice = _object(body.get("tool_choice"))
    if choice.get("type") == "none":
        return None
    if choice.get("type") == "tool":
        named = [t for t in tools if t.get("name") == choice.get("name")]
        if not named:
            raise SimFailure(400, f"tool_choice names an unknown tool {choice.get('name')!r}")
        return named[0]
    last = body["messages"][-1]
    asked = last["role"] == "user" and _TOOL_TRIGGER in _user_text(last["content"]).lower()
    return tools[0] if asked or choice.get("type") == "any" else None


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _user_text(content: str | list[Any]) -> str:
    if isinstance(content, str):
        return content
    return " ".join(
        str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text"
    )


def _sample_input(tool: dict[str, Any]) -> dict[str, Any]:
    """A deterministic input: one sample value per declared property, in schema order."""
    properties = _object(_object(tool.get("input_schema")).get("properties"))
    out: dict[str, Any] = {}
    for name, prop in properties.items():
        spec = _object(prop)
        enum = spec.get("enum")
        out[name] = (
            enum[0]
            if isinstance(enum, list) and enum
            else _SAMPLE_VALUES.get(str(spec.get("type")), "sim")
        )
    return out


def _has_cache_mark(body: dict[str, Any]) -> bool:
    blocks: list[Any] = list(body.get("tools") or [])
    if isinstance(body.get("system"), list):
        blocks += body["system"]
    for message in body["messages"]:
        if isinstance(message["content"], list):
            blocks += message["content"]
    return any(isinstance(b, dict) and "cache_control" in b for b in blocks)


class _Reply:
    """Renders one generation as an Anthropic message or as its stream events."""

    def __init__(
        self,
        config: SimConfig,
        body: dict[str, Any],
        generation: Generation,
        tool: dict[str, Any] | None,
        *,
        thinking: bool = False,
    ) -> None:
        self.model = body.get("model") or config.model
        self.seed = config.seed
        self.id = f"msg_{generation.id}"
        self.generation = generation
        self.tool = tool
        self.tool_id = f"toolu_{generation.id}"
        self.stops: list[str] = list(body.get("stop_sequences", []))
        self.cache_marked = _has_cache_mark(body)
        self.thinking: list[str] = (
            generate_words(config.seed, "thinking:" + generation.request.prompt, _THINKING_WORDS)
            if thinking else [])
        self.signature = rules.sign(self.model, "".join(self.thinking)) if thinking else ""

    def usage(self, *, final: bool = True) -> dict[str, int]:
        prompt, completion, cached = self.generation.usage()
        creation = prompt - cached if self.cache_marked else 0
        return {
            "input_tokens": prompt - cached - creation,
            "cache_creation_input_tokens": creation,
            "cache_read_input_tokens": cached,
            "output_tokens": completion + len(self.thinking) if final else 1,
        }

    def stop(self) -> tuple[str, str | None]:
        """``stop_reason`` and ``stop_sequence``."""
        if self.tool is not None:
            return "tool_use", None
        if self.generation.finish_reason == "length":
            return "max_tokens", None
        # the engine cut its output right before a stop string: find which one
        text, full = self.generation.text, self._uncut_text()
        for stop in self.stops:
            if stop and full[len(text) :].startswith(stop):
                return "stop_sequence", stop
        return "end_turn", None

    def _uncut_text(self) -> str:
        request = self.generation.request
        reply = request.hooks.reply
        if reply is not None:
            return "".join(reply) if isinstance(reply, list) else reply
        if not self.stops:
            return self.generation.text
        return "".join(generate_words(self.seed, request.prompt, request.max_tokens or 0))

    def block(self) -> dict[str, Any]:
        if self.tool is None:
            return {"type": "text", "text": self.generation.text}
        arguments = msgspec.json.decode(self.generation.text) if self.generation.text else {}
        return {
            "type": "tool_use",
            "id": self.tool_id,
            "name": self.tool.get("name"),
            "input": arguments,
        }

    def thinking_block(self) -> dict[str, Any]:
        return {"type": "thinking", "thinking": "".join(self.thinking), "signature": self.signature}

    def blocks(self) -> list[dict[str, Any]]:
        """Every content block of the answer: the signed thinking first, when enabled."""
        return ([self.thinking_block()] if self.thinking else []) + [self.block()]

    def message(self, *, streaming: bool = False) -> dict[str, Any]:
        stop_reason, stop_sequence = (None, None) if streaming else self.stop()
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [] if streaming else self.blocks(),
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": self.usage(final=not streaming),
        }


async def _stream(request: web.Request, reply: _Reply) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
    )
    generation = reply.generation
    delta_type, field = (
        ("text_delta", "text") if reply.tool is None else ("input_json_delta", "partial_json")
    )
    index = 1 if reply.thinking else 0  # the answer's block follows the thinking block
    try:
        async with generation:
            await response.prepare(request)
            if not generation.request.hooks.hang_after_headers:
                await _send_preamble(response, reply)
            async for piece in generation.stream():
                delta = {"type": delta_type, field: piece}
                await _send(response, "content_block_delta",
                            {"type": "content_block_delta", "index": index, "delta": delta})
            await _send_ending(response, reply, index)
        await response.write_eof()
    except ConnectionError:
        pass  # the client left; the engine counted the request as cancelled
    return response


async def _send_preamble(response: web.StreamResponse, reply: _Reply) -> None:
    await _send(
        response,
        "message_start",
        {"type": "message_start", "message": reply.message(streaming=True)},
    )
    index = 0
    if reply.thinking:
        await _send_thinking(response, reply)
        index = 1
    if reply.tool is None:
        block: dict[str, Any] = {"type": "text", "text": ""}
    else:
        block = {
            "type": "tool_use",
            "id": reply.tool_id,
            "name": reply.tool.get("name"),
            "input": {},
        }
    await _send(
        response,
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )
    await _send(response, "ping", {"type": "ping"})


async def _send_thinking(response: web.StreamResponse, reply: _Reply) -> None:
    """The thinking block at index 0: its words as ``thinking_delta``s, then the signature."""
    start = {"type": "thinking", "thinking": "", "signature": ""}
    await _send(response, "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": start})
    for word in reply.thinking:
        await _send(response, "content_block_delta", {
            "type": "content_block_delta", "index": 0,
            "delta": {"type": "thinking_delta", "thinking": word}})
    await _send(response, "content_block_delta", {
        "type": "content_block_delta", "index": 0,
        "delta": {"type": "signature_delta", "signature": reply.signature}})
    await _send(response, "content_block_stop", {"type": "content_block_stop", "index": 0})


async def _send_ending(response: web.StreamResponse, reply: _Reply, index: int) -> None:
    stop_reason, stop_sequence = reply.stop()
    await _send(response, "content_block_stop", {"type": "content_block_stop", "index": index})
    await _send(
        response,
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": {"output_tokens": reply.usage()["output_tokens"]},
        },
    )
    await _send(response, "message_stop", {"type": "message_stop"})


async def _send(response: web.StreamResponse, event: str, data: dict[str, Any]) -> None:
    await response.write(
        b"event: " + event.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"
    )

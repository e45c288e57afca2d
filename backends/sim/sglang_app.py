"""HTTP apps of a simulated SGLang worker and a simulated OpenAI-compatible provider.

Both serve the OpenAI routes (``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``
(``embeddings.py``), ``/v1/models``),
each in its upstream's own shapes (``sglang_shapes.py``: SGLang 0.5.23's, nulls and
``matched_stop`` included; ``openai_shapes.py``: OpenAI's), with tool calling and, on SGLang,
reasoning (``chat_request.py`` says when). The SGLang worker adds its native routes
(``/generate``, ``/flush_cache``) and its control routes (``sglang_control.py``:
``/server_info``, ``/model_info`` and their deprecated ``/get_*`` aliases, ``/v1/loads``, and
``/metrics`` only with ``enable_metrics``); with an ``api_key`` every route but ``/health*`` and
``/metrics`` answers SGLang's ``401 {"error": "Unauthorized"}`` without it.
Errors use the upstream's body: SGLang's flat ``{"object": "error", "message", "type",
"param", "code"}``, OpenAI's ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from backends.sim import sglang_control
from backends.sim.chat_request import ChatBody, StreamOptions
from backends.sim.config import SimConfig
from backends.sim.embeddings import embeddings_body
from backends.sim.engine import Generation, SimEngine, SimFailure, SimHooks, SimRequest
from backends.sim.openai_shapes import OpenAIShapes
from backends.sim.sglang_shapes import SGLangShapes
from backends.sim.shapes import Answer, Dialect, Events

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BodyHandler = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]

_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_DONE = b"data: [DONE]\n\n"


class _TextBody(msgspec.Struct):
    """The fields of ``POST /v1/completions`` the sim uses.

    Not ``TextParams``: msgspec cannot decode its prompt union (several list types), so
    ``_single_prompt`` checks the prompt's shape.
    """

    model: str
    prompt: str | list[Any]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    stop: str | list[str] | None = None


class _SamplingParams(msgspec.Struct):
    max_new_tokens: int | None = None
    stop: str | list[str] | None = None


class _GenerateBody(msgspec.Struct):
    """SGLang ``POST /generate``: one prompt, as ``text`` or ``input_ids``."""

    text: str | list[str] | None = None
    input_ids: list[Any] | None = None
    sampling_params: _SamplingParams | None = None
    stream: bool = False
    rid: str | None = None


def build_sglang_app(config: SimConfig, engine: SimEngine) -> web.Application:
    """A simulated SGLang worker: OpenAI routes plus SGLang's native ones."""
    return _SimRoutes(config, engine, native=True).app(native=True)


def build_openai_app(config: SimConfig, engine: SimEngine) -> web.Application:
    """A simulated OpenAI-compatible provider: the ``/v1`` routes and health only."""
    return _SimRoutes(config, engine, native=False).app(native=False)


class _SimRoutes:
    """Request handlers bound to one engine."""

    def __init__(self, config: SimConfig, engine: SimEngine, *, native: bool) -> None:
        self.config = config
        self.engine = engine
        self.native = native
        self.dialect: Dialect = SGLangShapes() if native else OpenAIShapes()
        # only SGLang hides cached tokens, unless started with --enable-cache-report
        self.cache_report = config.enable_cache_report or not native
        self._bearer = f"Bearer {config.api_key}" if config.api_key else None
        self._chat_decoder = msgspec.json.Decoder(ChatBody)
        self._text_decoder = msgspec.json.Decoder(_TextBody)
        self._generate_decoder = msgspec.json.Decoder(_GenerateBody)

    def app(self, *, native: bool) -> web.Application:
        app = web.Application()
        # health and metrics stay open, as SGLang leaves them outside its API key check
        routes = [
            web.post("/v1/chat/completions", self._guarded(self.chat)),
            web.post("/v1/completions", self._guarded(self.completions)),
            web.post("/v1/embeddings", self._guarded(self.embeddings)),
            web.get("/v1/models", self._guarded(self.models)),
            web.get("/health", self.health),
            web.get("/health_generate", self.health),
        ]
        if native:
            routes += [
                web.post("/generate", self._guarded(self.generate)),
                web.get("/model_info", self._guarded(self.model_info)),
                web.get("/get_model_info", self._guarded(self.model_info)),  # deprecated alias
                web.get("/server_info", self._guarded(self.server_info)),
                web.get("/get_server_info", self._guarded(self.server_info)),  # deprecated alias
                web.get("/v1/loads", self._guarded(self.loads)),
                web.post("/flush_cache", self._guarded(self.flush_cache)),
            ]
            if self.config.enable_metrics:  # SGLang serves /metrics only with --enable-metrics
                routes.append(web.get("/metrics", self.metrics))
        app.add_routes(routes)
        return app

    def _guarded(self, handler: BodyHandler) -> Handler:
        """Record the request, check the API key, and render any ``SimFailure`` it raises."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            raw = await request.read() if request.can_read_body else b""
            if request.method == "POST":
                self.engine.record(request.path, raw, request.headers)
            try:
                bearer = self._bearer
                if bearer is not None and request.headers.get("Authorization") != bearer:
                    if self.native:  # SGLang's API-key middleware, before any handler
                        self.engine.record_failure()
                        return _json(sglang_control.UNAUTHORIZED, status=401)
                    raise SimFailure(401, "Incorrect API key provided.")
                return await handler(request, raw)
            except SimFailure as failure:
                if not failure.counted:
                    self.engine.record_failure()
                return self._error(failure)

        return guarded

    # --- OpenAI routes ------------------------------------------------------------------

    async def chat(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        params: ChatBody = _decode(self._chat_decoder, raw)
        gen = self.engine.admit(
            SimRequest(
                prompt=self.engine.render_chat(params.turns()),
                max_tokens=_first_int(params.max_completion_tokens, params.max_tokens),
                stop=_stops(params.stop),
                hooks=SimHooks.from_json(raw),
                thinking=self.native and params.wants_thinking(),
                tool_call=params.tool_call(),
                cache_salt=params.cache_salt if self.native else None,
            )
        )
        answer = self._answer(gen, params.model, params.stream_options)
        if params.stream is True:
            return await self._stream(request, gen, self.dialect.chat_events(answer))
        async with gen:
            await gen.complete()
        return _json(self.dialect.chat_body(answer))

    async def completions(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        params: _TextBody = _decode(self._text_decoder, raw)
        prompt, ids = _single_prompt(params.prompt)
        hooks = SimHooks.from_json(raw)
        stops = _stops(params.stop)
        gen = self.engine.admit(SimRequest(prompt, params.max_tokens, stops, hooks, ids))
        answer = self._answer(gen, params.model, params.stream_options)
        if params.stream is True:
            return await self._stream(request, gen, self.dialect.text_events(answer))
        async with gen:
            await gen.complete()
        return _json(self.dialect.text_body(answer))

    async def embeddings(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        return _json(await embeddings_body(self.config, self.engine, raw, native=self.native))

    def _answer(self, gen: Generation, model: str, options: StreamOptions | None) -> Answer:
        include_usage = options is not None and options.include_usage is True
        return Answer(gen, model, int(time.time()), include_usage, self.cache_report)

    def _error(self, failure: SimFailure) -> web.Response:
        response = _json(self.dialect.error_body(failure), status=failure.status)
        if failure.retry_after is not None:
            response.headers["retry-after"] = str(failure.retry_after)
        return response

    async def models(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        model = self.config.model
        card = {"id": model, "object": "model", "created": 0, "owned_by": "sglang", "root": model}
        return _json({"object": "list", "data": [card]})

    async def health(self, request: web.Request) -> web.StreamResponse:
        return web.Response()

    # --- SGLang native routes -----------------------------------------------------------

    async def generate(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        body: _GenerateBody = _decode(self._generate_decoder, raw)
        text, ids = _native_prompt(body)
        sampling = body.sampling_params or _SamplingParams()
        stops, hooks = _stops(sampling.stop), SimHooks.from_json(raw)
        gen = self.engine.admit(SimRequest(text, sampling.max_new_tokens, stops, hooks, ids))
        if body.stream:
            return await self._stream(request, gen, _NativeEvents(gen, body.rid))
        async with gen:
            output = await gen.complete()
        return _json({"text": output, "meta_info": _meta_info(gen, body.rid, finished=True)})

    async def model_info(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        return _json(sglang_control.model_info(self.config))

    async def server_info(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        return _json(sglang_control.server_info(self.config))

    async def loads(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        return _json(sglang_control.loads(self.config, self.engine))

    async def flush_cache(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        self.engine.flush_cache()
        return web.Response(text="Cache flushed.\n")

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        text = sglang_control.prometheus(self.config, self.engine)
        return web.Response(body=text.encode(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    # --- streaming ----------------------------------------------------------------------

    async def _stream(
        self, request: web.Request, gen: Generation, events: Events
    ) -> web.StreamResponse:
        """Send headers at once, then one SSE event per piece as the engine releases it."""
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)
        batch = self.config.zero_latency  # nothing to wait for: one write is far cheaper
        buffer: list[bytes] = []
        async with gen:
            async for piece in gen.stream():
                buffer.append(events.piece(piece))
                if not batch:
                    await response.write(b"".join(buffer))
                    buffer.clear()
            buffer.append(events.end())
            await response.write(b"".join(buffer))
        await response.write_eof()
        return response


# --- SSE events ---------------------------------------------------------------------------


def _sse(payload: Any) -> bytes:
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"


class _NativeEvents:
    """SGLang native streaming: each event carries the cumulative text so far."""

    def __init__(self, gen: Generation, rid: str | None) -> None:
        self.gen, self.rid = gen, rid
        self.text = ""

    def piece(self, text: str) -> bytes:
        self.text += text
        return _sse({"text": self.text, "meta_info": _meta_info(self.gen, self.rid), "index": 0})

    def end(self) -> bytes:
        meta = _meta_info(self.gen, self.rid, finished=True)
        return _sse({"text": self.text, "meta_info": meta, "index": 0}) + _DONE


# --- helpers ------------------------------------------------------------------------------


def _decode(decoder: msgspec.json.Decoder[Any], raw: bytes) -> Any:
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError as exc:
        # SGLang's RequestValidationError handler: 400, type "Bad Request" (OpenAI's body
        # names the field in ``param``; SGLang's leaves it null)
        raise SimFailure(400, str(exc), param=_error_param(str(exc)),
                         error_type="Bad Request") from None


def _json(body: Any, status: int = 200) -> web.Response:
    encoded = msgspec.json.encode(body)
    return web.Response(body=encoded, status=status, content_type="application/json")


def _error_param(message: str) -> str | None:
    """``$.messages[0].role`` in a msgspec error becomes ``messages``."""
    _, found, path = message.partition("at `$.")
    return path.split(".")[0].split("[")[0].rstrip("`") if found else None


def _first_int(*values: object) -> int | None:
    return next((v for v in values if isinstance(v, int)), None)


def _stops(stop: object) -> tuple[str, ...]:
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list):
        return tuple(s for s in stop if isinstance(s, str))
    return ()


def _single_prompt(prompt: object) -> tuple[str, list[int] | None]:
    """The one prompt of a request, as text or token ids (batches are refused)."""
    if isinstance(prompt, str):
        return prompt, None
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        return _single_prompt(prompt[0])
    if isinstance(prompt, list) and all(type(t) is int for t in prompt):
        return " ".join(map(str, prompt)), prompt  # the ids seed the generated words
    raise SimFailure(400, "the simulator takes one prompt (text or token ids)", param="prompt")


def _native_prompt(body: _GenerateBody) -> tuple[str, list[int] | None]:
    if body.text is not None:
        return _single_prompt(body.text)
    if body.input_ids is not None:
        return _single_prompt(body.input_ids)
    raise SimFailure(400, "Either text or input_ids should be provided.", param="text")


def _meta_info(gen: Generation, rid: str | None, *, finished: bool = False) -> dict[str, Any]:
    """SGLang's ``meta_info``; ``finish_reason`` is an object there, null until the end."""
    usage = gen.usage()
    finish: dict[str, Any] | None = None
    if finished and gen.finish_reason == "length":
        finish = {"type": "length", "length": usage.completion_tokens}
    elif finished:
        finish = {"type": gen.finish_reason, "matched": None}
    return {
        "id": rid or gen.id,
        "finish_reason": finish,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
    }

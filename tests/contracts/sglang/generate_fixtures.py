"""Write the SGLang completion-route fixtures from SGLang 0.5.23's own models and serialisers.

Usage (the wheel is unpacked, never installed: installing SGLang pulls GPU packages)::

    pip download --no-deps sglang==0.5.23 -d /tmp/sgl
    cd /tmp/sgl && unzip -q sglang-*.whl -d src && cd -
    .venv/bin/python tests/contracts/sglang/generate_fixtures.py /tmp/sgl/src

SGLang's serving code needs torch, fastapi and a tokenizer, so it cannot run here; its protocol
module (pydantic models) and SSE helper (msgspec) can. This script builds every object with
those and serialises it the way ``serving_chat.py``, ``serving_completions.py``,
``serving_base.py`` and ``http_server.py`` do in 0.5.23, naming the line of SGLang it mirrors:

- non-streamed bodies: ``model_json_response`` = ``model_dump_json(by_alias=True)``;
- content, reasoning and finish chunks: ``sse_utils.build_sse_content`` (msgspec, omits a null
  ``role``/``content`` but always writes ``reasoning_content``);
- tool-call chunks and the usage chunk: ``ChatCompletionStreamResponse.model_dump_json()``
  (pydantic, explicit nulls);
- text-completion chunks: ``model_dump_json()``, its usage chunk ``exclude_none=True``;
- errors: ``ErrorResponse.model_dump()`` through ``ORJSONResponse`` (compact JSON, flat body),
  the mid-stream error through ``json.dumps({"error": ...})`` (default separators).

Only the model output (text, token counts, ids) is invented, and fixed so that a rerun writes
the same bytes. ``sglang/__init__.py`` and ``sglang/utils.py`` are replaced in ``sys.modules``
(the real ones import torch); the unpacked wheel is only read.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SGLANG_VERSION = "0.5.23"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
INDEX = "index.json"

MODEL = "Qwen/Qwen3-8B"
"""SGLang echoes the request's ``model``; the gateway sends its deployment's model name."""
CREATED = 1_780_000_000
EOS_TOKEN = 151645  # Qwen's <|im_end|>: SGLang reports a matched EOS token as ``matched_stop``
# SGLang's rid is ``uuid.uuid4().hex`` (io_struct.py) and becomes the response id unprefixed
RID = {
    "plain": "8c1f6a0e3b2d4c5e9f708192a3b4c5d6",
    "tools": "5b7e2c9d1a3f4e6b8c0d2e4f6a8b0c1d",
    "reasoning": "e4d3c2b1a0f94e8d7c6b5a4938271605",
    "completion": "0a1b2c3d4e5f40718293a4b5c6d7e8f9",
    "abort": "f0e1d2c3b4a5469788796a5b4c3d2e1f",
}
TOOL_CALL_IDS = ("call_4f2a9c1e7b3d5f6a8c0e2b4d", "call_9e8d7c6b5a4f3e2d1c0b9a8f")
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"  # starlette adds the charset to text/*
JSON_CONTENT_TYPE = "application/json"


def load_sglang(src: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """Import ``protocol`` and ``sse_utils`` from an unpacked wheel with stubbed top modules.

    Raises:
        SystemExit: when ``src`` is not an unpacked sglang wheel.
    """
    package_dir = src / "sglang"
    if not (package_dir / "srt" / "entrypoints" / "openai" / "protocol.py").is_file():
        raise SystemExit(f"{src} is not an unpacked sglang wheel (no sglang/srt/.../protocol.py)")
    package = types.ModuleType("sglang")
    package.__path__ = [str(package_dir)]
    utils = types.ModuleType("sglang.utils")

    def convert_json_schema_to_str(schema: Any) -> str:  # protocol.py imports it, unused here
        return schema if isinstance(schema, str) else json.dumps(schema)

    utils.convert_json_schema_to_str = convert_json_schema_to_str  # type: ignore[attr-defined]
    sys.modules["sglang"], sys.modules["sglang.utils"] = package, utils
    protocol = importlib.import_module("sglang.srt.entrypoints.openai.protocol")
    sse_utils = importlib.import_module("sglang.srt.entrypoints.openai.sse_utils")
    return protocol, sse_utils


class Fixtures:
    """Builds every fixture with SGLang's classes ``p`` (protocol) and ``sse`` (sse_utils)."""

    def __init__(self, protocol: types.ModuleType, sse_utils: types.ModuleType) -> None:
        self.p = protocol
        self.sse = sse_utils

    # --- shared pieces ------------------------------------------------------------------

    def usage(self, prompt: int, completion: int, *, cached: int | None = None,
              reasoning: int = 0) -> Any:
        """``UsageProcessor.calculate_token_usage``: details only with --enable-cache-report."""
        p = self.p
        details = p.PromptTokensDetails(cached_tokens=cached) if cached is not None else None
        return p.UsageInfo(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
            prompt_tokens_details=details, reasoning_tokens=reasoning,
            completion_tokens_details=(
                p.CompletionTokensDetails(reasoning_tokens=reasoning) if reasoning else None),
        )

    def content_chunk(self, rid: str, **fields: Any) -> str:
        """``build_sse_content`` as ``_generate_chat_stream`` calls it."""
        text: str = self.sse.build_sse_content(
            chunk_id=rid, created=CREATED, model=MODEL, index=0, **fields)
        return text

    def pydantic_chunk(self, rid: str, choices: list[Any], usage: Any = None) -> str:
        chunk = self.p.ChatCompletionStreamResponse(
            id=rid, created=CREATED, model=MODEL, choices=choices, usage=usage)
        return f"data: {chunk.model_dump_json()}\n\n"

    def tool_delta_chunk(self, rid: str, index: int, call_id: str | None, name: str | None,
                         arguments: str) -> str:
        """``_process_tool_call_stream``: the name first (id, name, ``""``), then argument
        deltas with ``id`` and ``function.name`` null."""
        p = self.p
        call = p.ToolCall(id=call_id, index=index,
                          function=p.FunctionResponse(name=name, arguments=arguments))
        choice = p.ChatCompletionResponseStreamChoice(
            index=0, delta=p.DeltaMessage(tool_calls=[call]), finish_reason=None)
        return self.pydantic_chunk(rid, [choice])

    def chat_response(self, rid: str, message: Any, finish: str, matched: Any,
                      usage: Any) -> str:
        p = self.p
        choice = p.ChatCompletionResponseChoice(
            index=0, message=message, logprobs=None, finish_reason=finish, matched_stop=matched)
        body = p.ChatCompletionResponse(
            id=rid, created=CREATED, model=MODEL, choices=[choice], usage=usage,
            metadata={"weight_version": "default"})  # build_endpoint_weight_version_metadata
        return str(body.model_dump_json(by_alias=True))

    def error_body(self, message: str, err_type: str, status: int) -> str:
        """``create_error_response``: a flat ``ErrorResponse`` (not under ``"error"``)."""
        error = self.p.ErrorResponse(
            object="error", message=message, type=err_type, param=None, code=status)
        return _orjson(error.model_dump())

    # --- chat, not streamed -------------------------------------------------------------

    def chat_plain(self, *, cached: int | None) -> str:
        message = self.p.ChatMessage(role="assistant", content=PLAIN_ANSWER, tool_calls=None,
                                     reasoning_content=None)
        usage = self.usage(PROMPT_TOKENS, PLAIN_TOKENS, cached=cached)
        return self.chat_response(RID["plain"], message, "stop", EOS_TOKEN, usage)

    def chat_tool_calls(self) -> str:
        """``_process_tool_calls``: content ``""``, finish ``tool_calls``, matched reset."""
        p = self.p
        calls = [
            p.ToolCall(id=call_id, index=i, function=p.FunctionResponse(
                name="get_weather", arguments=json.dumps(args, ensure_ascii=False)))
            for i, (call_id, args) in enumerate(zip(TOOL_CALL_IDS, TOOL_ARGS))
        ]
        message = p.ChatMessage(role="assistant", content="", tool_calls=calls,
                                reasoning_content=None)
        usage = self.usage(TOOLS_PROMPT_TOKENS, TOOLS_TOKENS)
        return self.chat_response(RID["tools"], message, "tool_calls", None, usage)

    def chat_reasoning(self) -> str:
        message = self.p.ChatMessage(role="assistant", content=REASONING_ANSWER,
                                     reasoning_content=REASONING_TEXT, tool_calls=None)
        usage = self.usage(PROMPT_TOKENS, REASONING_TOTAL_TOKENS, reasoning=REASONING_TOKENS)
        return self.chat_response(RID["reasoning"], message, "stop", EOS_TOKEN, usage)

    # --- chat, streamed -----------------------------------------------------------------

    def opening(self, rid: str) -> str:
        """First chunk of every stream: role and empty content (reasoning null but for k2)."""
        return self.content_chunk(rid, role="assistant", content="", reasoning_content=None)

    def usage_chunk(self, rid: str, usage: Any) -> str:
        return self.pydantic_chunk(rid, [], usage)

    def chat_stream_plain(self, *, cached: int | None, include_usage: bool) -> str:
        rid = RID["plain"]
        events = [self.opening(rid)]
        events += [self.content_chunk(rid, content=piece) for piece in PLAIN_PIECES]
        events.append(self.content_chunk(rid, finish_reason="stop", matched_stop=EOS_TOKEN))
        if include_usage:
            events.append(self.usage_chunk(rid, self.usage(PROMPT_TOKENS, PLAIN_TOKENS,
                                                           cached=cached)))
        return "".join(events) + "data: [DONE]\n\n"

    def chat_stream_tool_calls(self) -> str:
        rid = RID["tools"]
        events = [self.opening(rid)]
        for index, (call_id, pieces) in enumerate(zip(TOOL_CALL_IDS, TOOL_ARG_PIECES)):
            events.append(self.tool_delta_chunk(rid, index, call_id, "get_weather", ""))
            events += [self.tool_delta_chunk(rid, index, None, None, piece) for piece in pieces]
        # the engine stopped on EOS: finish becomes "tool_calls", matched_stop stays the token
        events.append(self.content_chunk(rid, finish_reason="tool_calls", matched_stop=EOS_TOKEN))
        events.append(self.usage_chunk(rid, self.usage(TOOLS_PROMPT_TOKENS, TOOLS_TOKENS)))
        return "".join(events) + "data: [DONE]\n\n"

    def chat_stream_reasoning(self) -> str:
        rid = RID["reasoning"]
        events = [self.opening(rid)]
        events += [self.content_chunk(rid, reasoning_content=piece) for piece in REASONING_PIECES]
        events += [self.content_chunk(rid, content=piece) for piece in REASONING_ANSWER_PIECES]
        events.append(self.content_chunk(rid, finish_reason="stop", matched_stop=EOS_TOKEN))
        usage = self.usage(PROMPT_TOKENS, REASONING_TOTAL_TOKENS, reasoning=REASONING_TOKENS)
        events.append(self.usage_chunk(rid, usage))
        return "".join(events) + "data: [DONE]\n\n"

    def chat_stream_error(self) -> str:
        """An abort with a status code mid-stream (decode retraction): the error event, no
        finish chunk, the usage chunk still, then ``[DONE]``."""
        rid = RID["abort"]
        events = [self.opening(rid), self.content_chunk(rid, content=PLAIN_PIECES[0])]
        error = self.p.ErrorResponse(object="error", message=ABORT_MESSAGE,
                                     type="SERVICE_UNAVAILABLE", param=None, code=503)
        events.append(f"data: {json.dumps({'error': error.model_dump()})}\n\n")
        events.append(self.usage_chunk(rid, self.usage(PROMPT_TOKENS, 1)))
        return "".join(events) + "data: [DONE]\n\n"

    # --- text completions ---------------------------------------------------------------

    def completion(self) -> str:
        p = self.p
        choice = p.CompletionResponseChoice(index=0, text="".join(COMPLETION_PIECES),
                                            logprobs=None, finish_reason="length",
                                            matched_stop=None)
        body = p.CompletionResponse(
            id=RID["completion"], model=MODEL, created=CREATED, choices=[choice],
            usage=self.usage(COMPLETION_PROMPT_TOKENS, len(COMPLETION_PIECES)),
            metadata={"weight_version": "default"})
        return str(body.model_dump_json(by_alias=True))

    def completion_stream(self) -> str:
        """``_generate_completion_stream``: the finish reason rides on the last text chunk."""
        p, rid, events = self.p, RID["completion"], []
        last = len(COMPLETION_PIECES) - 1
        for i, piece in enumerate(COMPLETION_PIECES):
            choice = p.CompletionResponseStreamChoice(
                index=0, text=piece, logprobs=None,
                finish_reason="length" if i == last else None, matched_stop=None)
            chunk = p.CompletionStreamResponse(id=rid, created=CREATED, object="text_completion",
                                               choices=[choice], model=MODEL)
            events.append(f"data: {chunk.model_dump_json()}\n\n")
        final = p.CompletionStreamResponse(
            id=rid, created=CREATED, choices=[], model=MODEL,
            usage=self.usage(COMPLETION_PROMPT_TOKENS, len(COMPLETION_PIECES)))
        events.append(f"data: {final.model_dump_json(exclude_none=True)}\n\n")
        return "".join(events) + "data: [DONE]\n\n"


def _orjson(content: Any) -> str:
    """``orjson.dumps`` (ORJSONResponse): compact, UTF-8, keys in insertion order."""
    return json.dumps(content, separators=(",", ":"), ensure_ascii=False)


# The invented model output: fixed, so that a rerun writes identical files.
PROMPT_TOKENS = 21
PLAIN_PIECES = ["Paris", " is", " the", " capital", " of", " France", "."]
PLAIN_ANSWER = "".join(PLAIN_PIECES)
PLAIN_TOKENS = len(PLAIN_PIECES) + 1  # and the EOS token
CACHED_TOKENS = 16
TOOLS_PROMPT_TOKENS = 187
TOOL_ARGS = ({"city": "Paris", "unit": "celsius"}, {"city": "Tokyo", "unit": "celsius"})
TOOL_ARG_PIECES = (['{"city": "', 'Paris', '", "unit": "', 'celsius"}'],
                   ['{"city": "', 'Tokyo', '", "unit": "', 'celsius"}'])
TOOLS_TOKENS = 44
REASONING_PIECES = ["The user", " asks for", " the capital", " of France", ". It is Paris", ".\n"]
REASONING_TEXT = "".join(REASONING_PIECES)
REASONING_ANSWER_PIECES = ["The capital", " of France", " is Paris", "."]
REASONING_ANSWER = "".join(REASONING_ANSWER_PIECES)
REASONING_TOKENS = 16
REASONING_TOTAL_TOKENS = 27
COMPLETION_PROMPT_TOKENS = 5
COMPLETION_PIECES = [" a", " city", " of", " light"]
ABORT_MESSAGE = "Retracted under decode memory pressure without a KV backup. Retry later."
MODEL_NOT_FOUND = "sim-missing"


def catalogue(f: Fixtures) -> Iterator[tuple[str, int, str, str, Callable[[], str]]]:
    """(file, status, content type, what it is, builder) for every fixture."""
    sse, js = SSE_CONTENT_TYPE, JSON_CONTENT_TYPE
    yield ("chat_plain.json", 200, js, ("chat, not streamed, default flags: no "
           "prompt_tokens_details"), lambda: f.chat_plain(cached=None))
    yield ("chat_plain_cache_report.json", 200, js, ("chat, not streamed, "
           "--enable-cache-report: prompt_tokens_details.cached_tokens"),
           lambda: f.chat_plain(cached=CACHED_TOKENS))
    yield ("chat_tool_calls.json", 200, js, ("chat with tools, --tool-call-parser: two calls, "
           "content \"\", finish tool_calls"), f.chat_tool_calls)
    yield ("chat_reasoning.json", 200, js, ("chat, --reasoning-parser: reasoning_content and "
           "reasoning token counts"), f.chat_reasoning)
    yield ("chat_stream_plain.sse", 200, sse, "chat streamed, include_usage, default flags",
           lambda: f.chat_stream_plain(cached=None, include_usage=True))
    yield ("chat_stream_plain_no_usage.sse", 200, sse, "chat streamed without stream_options",
           lambda: f.chat_stream_plain(cached=None, include_usage=False))
    yield ("chat_stream_plain_cache_report.sse", 200, sse, ("chat streamed, include_usage, "
           "--enable-cache-report"), lambda: f.chat_stream_plain(cached=CACHED_TOKENS,
                                                                 include_usage=True))
    yield ("chat_stream_tool_calls.sse", 200, sse, ("chat streamed with tools: name deltas, "
           "argument deltas with null id and name, two calls"), f.chat_stream_tool_calls)
    yield ("chat_stream_reasoning.sse", 200, sse, ("chat streamed, --reasoning-parser: "
           "reasoning_content deltas, then content"), f.chat_stream_reasoning)
    yield ("chat_stream_error.sse", 200, sse, ("chat streamed, aborted mid-stream with a status "
           "(503): error event, usage, [DONE]"), f.chat_stream_error)
    yield ("completion.json", 200, js, "text completion, not streamed", f.completion)
    yield ("completion_stream.sse", 200, sse, "text completion streamed, include_usage",
           f.completion_stream)
    yield ("error_400.json", 400, js, ("create_error_response for a bad request "
           "(empty messages)"), lambda: f.error_body("Messages cannot be empty.",
                                                    "BadRequestError", 400))
    yield ("error_400_lora.json", 400, js, ("chat naming an unknown adapter "
           "(model \"<served>:<adapter>\") on a worker without LoRA"),
           lambda: f.error_body(_LORA_MESSAGE, "BadRequestError", 400))
    yield ("error_404_model.json", 404, js, ("GET /v1/models/{id} for a model the worker does "
           "not serve (http_server.retrieve_model)"), _model_not_found)
    yield ("error_404_route.json", 404, js, ("an HTTPException(404) through SGLang's handler "
           "(flat ErrorResponse, type \"404\")"),
           lambda: f.error_body("Not Found", "404", 404))


_LORA_MESSAGE = (
    "LoRA adapter 'missing-adapter' was requested, but LoRA is not enabled. Please launch the "
    "server with --enable-lora flag and preload adapters using --lora-paths or "
    "/load_lora_adapter endpoint."
)


def _model_not_found() -> str:
    # http_server.retrieve_model builds this dict literally (OpenAI's nested shape)
    return _orjson({"error": {"message": f"The model '{MODEL_NOT_FOUND}' does not exist",
                              "type": "invalid_request_error", "param": "model",
                              "code": "model_not_found"}})


def write_all(src: Path, out: Path) -> list[str]:
    """Write every fixture and ``index.json`` into ``out``; returns the file names."""
    fixtures = Fixtures(*load_sglang(src))
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {
        "source": f"SGLang {SGLANG_VERSION} (Apache-2.0), generated by generate_fixtures.py",
        "fixtures": {},
    }
    for name, status, content_type, about, build in catalogue(fixtures):
        (out / name).write_bytes(build().encode())
        index["fixtures"][name] = {"status": status, "content_type": content_type, "about": about}
    (out / INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return sorted(index["fixtures"])


def main(argv: list[str] | None = None) -> int:
    """Command line: ``generate_fixtures.py WHEEL_SRC [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="the unpacked sglang 0.5.23 wheel")
    parser.add_argument("--out", type=Path, default=FIXTURES, help="default: %(default)s")
    args = parser.parse_args(argv)
    for name in write_all(args.src, args.out):
        print(args.out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

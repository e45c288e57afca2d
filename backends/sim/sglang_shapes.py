"""SGLang 0.5.23's completion-route shapes, key for key and null for null.

Each builder mirrors one serialiser of SGLang (named in its docstring), as recorded in
``tests/contracts/sglang/fixtures`` by ``generate_fixtures.py``; ``tests/contracts/
test_sglang_sim_shapes.py`` compares this module's output with those fixtures. Facts that
differ from a naive reading of OpenAI's API:

- the id is SGLang's request id, 32 hex digits with no ``chatcmpl-`` prefix;
- content, reasoning and finish chunks (``build_sse_content``) always carry
  ``"reasoning_content"`` (null when none) and omit a null ``role``/``content``;
- tool-call chunks are pydantic dumps: ``"role": null, "content": null``, ``"usage": null``, and
  argument deltas carry ``"id": null`` and ``"function": {"name": null, ...}``;
- every choice has ``matched_stop`` (the EOS token id or stop string that ended the output);
- ``usage.prompt_tokens_details`` is null unless the worker runs with ``--enable-cache-report``;
- errors are a flat ``{"object": "error", "message", "type", "param", "code": <status>}``.
"""

from __future__ import annotations

from typing import Any

from backends.sim.engine import SimFailure
from backends.sim.shapes import (
    DONE,
    Answer,
    Events,
    Pieces,
    sse,
    stable_hex,
    tool_call_id,
)

_METADATA = {"weight_version": "default"}  # SGLang's --weight-version default


def _rid(answer: Answer) -> str:
    return stable_hex("rid:" + answer.gen.id, 32)


def usage(answer: Answer, *, exclude_none: bool = False) -> dict[str, Any]:
    """``UsageProcessor.calculate_token_usage`` dumped (the text stream's last chunk drops
    its nulls: ``model_dump_json(exclude_none=True)``)."""
    gen = answer.gen
    counts, reasoning = gen.usage(), gen.reasoning_tokens
    body: dict[str, Any] = {
        "prompt_tokens": counts.prompt_tokens,
        "total_tokens": counts.total_tokens,
        "completion_tokens": counts.completion_tokens,
        "prompt_tokens_details": (
            {"cached_tokens": counts.cached_tokens} if answer.cache_report else None),
        "reasoning_tokens": reasoning,
        "completion_tokens_details": {"reasoning_tokens": reasoning} if reasoning else None,
    }
    if exclude_none:
        return {k: v for k, v in body.items() if v is not None}
    return body


def _tool_call(answer: Answer, arguments: str, *, first: bool) -> dict[str, Any]:
    name = answer.gen.request.tool_call.name if answer.gen.request.tool_call else None
    return {"id": tool_call_id(answer.gen) if first else None, "index": 0, "type": "function",
            "function": {"name": name if first else None, "arguments": arguments}}


class SGLangShapes:
    """The ``Dialect`` of a simulated SGLang worker."""

    def chat_body(self, answer: Answer) -> dict[str, Any]:
        """``ChatCompletionResponse.model_dump_json(by_alias=True)``; with a tool call the
        content is ``""`` and ``matched_stop`` null (``_process_tool_calls``)."""
        gen, pieces = answer.gen, Pieces(answer.gen)
        reasoning = pieces.text_of("reasoning")
        message: dict[str, Any] = {"role": "assistant", "content": pieces.text_of("content"),
                                   "reasoning_content": reasoning or None}
        matched = gen.matched_stop
        if gen.request.tool_call is not None:
            message["tool_calls"] = [_tool_call(answer, pieces.text_of("tool_arguments"),
                                                first=True)]
            matched = None
        choice = {"index": 0, "message": message, "logprobs": None,
                  "finish_reason": gen.finish_reason, "matched_stop": matched}
        return {"id": _rid(answer), "object": "chat.completion", "created": answer.created,
                "model": answer.model, "choices": [choice], "usage": usage(answer),
                "metadata": _METADATA}

    def chat_events(self, answer: Answer) -> Events:
        """The events of ``OpenAIServingChat._generate_chat_stream``."""
        return _ChatEvents(answer)

    def text_body(self, answer: Answer) -> dict[str, Any]:
        """``CompletionResponse.model_dump_json(by_alias=True)``."""
        gen = answer.gen
        choice = {"index": 0, "text": gen.text, "logprobs": None,
                  "finish_reason": gen.finish_reason, "matched_stop": gen.matched_stop}
        return {"id": _rid(answer), "object": "text_completion", "created": answer.created,
                "model": answer.model, "choices": [choice], "usage": usage(answer),
                "metadata": _METADATA}

    def text_events(self, answer: Answer) -> Events:
        """The events of ``OpenAIServingCompletion._generate_completion_stream``."""
        return _TextEvents(answer)

    def error_body(self, failure: SimFailure) -> dict[str, Any]:
        """``create_error_response``: flat, ``type`` as SGLang names it for the status, and
        ``param`` null (no SGLang error handler fills it)."""
        error_type = failure.error_type or _ERROR_TYPES.get(failure.status, str(failure.status))
        return {"object": "error", "message": failure.message, "type": error_type,
                "param": None, "code": failure.status}


# create_error_response's default; the rest as SGLang's handlers name them
_ERROR_TYPES = {400: "BadRequestError", 500: "InternalServerError"}


class _ChatEvents:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.rid = _rid(answer)
        self.pieces = Pieces(answer.gen)
        self.started = False

    def _head(self) -> dict[str, Any]:
        a = self.answer
        return {"id": self.rid, "object": "chat.completion.chunk", "created": a.created,
                "model": a.model}

    def _fast(self, delta: dict[str, Any], finish: str | None = None,
              matched: str | int | None = None) -> bytes:
        """``sse_utils.build_sse_content`` (msgspec, ``omit_defaults`` on delta and chunk)."""
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish,
                  "matched_stop": matched}
        return sse({**self._head(), "choices": [choice]})

    def _tool(self, call: dict[str, Any]) -> bytes:
        """``_process_tool_call_stream``: a pydantic dump with every null spelled out."""
        delta = {"role": None, "content": None, "reasoning_content": None, "tool_calls": [call]}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None,
                  "matched_stop": None}
        return sse({**self._head(), "choices": [choice], "usage": None})

    def _opening(self) -> bytes:
        # the first chunk, at the first token's time: the role and empty content
        if self.started:
            return b""
        self.started = True
        return self._fast({"reasoning_content": None, "role": "assistant", "content": ""})

    def piece(self, text: str) -> bytes:
        kind = self.pieces.next_kind()
        if kind == "reasoning":
            event = self._fast({"reasoning_content": text})
        elif kind == "tool_name":
            event = self._tool(_tool_call(self.answer, "", first=True))
        elif kind == "tool_arguments":
            event = self._tool(_tool_call(self.answer, text, first=False))
        else:
            event = self._fast({"reasoning_content": None, "content": text}) if text else b""
        return self._opening() + event

    def end(self) -> bytes:
        gen = self.answer.gen
        out = self._opening() + self._fast({"reasoning_content": None}, gen.finish_reason,
                                           gen.matched_stop)
        if self.answer.include_usage:
            out += sse({**self._head(), "choices": [], "usage": usage(self.answer)})
        return out + DONE


class _TextEvents:
    """Text completion chunks: the finish reason rides on the last text chunk."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.rid = _rid(answer)
        self.pieces = Pieces(answer.gen)
        self.finished = False

    def _chunk(self, text: str, *, last: bool) -> bytes:
        gen, a = self.answer.gen, self.answer
        choice = {"index": 0, "text": text, "logprobs": None,
                  "finish_reason": gen.finish_reason if last else None,
                  "matched_stop": gen.matched_stop if last else None}
        return sse({"id": self.rid, "object": "text_completion", "created": a.created,
                    "model": a.model, "choices": [choice], "usage": None})

    def piece(self, text: str) -> bytes:
        self.pieces.next_kind()
        self.finished = self.pieces.is_last
        return self._chunk(text, last=self.finished)

    def end(self) -> bytes:
        a = self.answer
        out = b"" if self.finished else self._chunk("", last=True)
        if a.include_usage:
            out += sse({"id": self.rid, "object": "text_completion", "created": a.created,
                        "model": a.model, "choices": [],
                        "usage": usage(a, exclude_none=True)})
        return out + DONE

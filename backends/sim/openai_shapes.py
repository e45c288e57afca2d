"""OpenAI's completion-route shapes, for the simulated OpenAI-compatible provider.

As OpenAI's API sends them: ``chatcmpl-``/``cmpl-`` ids, ``system_fingerprint``, ``refusal:
null`` and ``annotations: []`` on messages, ``logprobs: null`` on choices, usage details always
present (OpenAI reports its prompt cache hits whatever the request), ``"usage": null`` on every
chunk of a stream that asked for usage, and errors nested under ``"error"``.
"""

from __future__ import annotations

from typing import Any

from backends.sim.engine import SimFailure
from backends.sim.shapes import DONE, Answer, Events, Pieces, sse, tool_call_id

_FINGERPRINT = "fp_sim"
_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("not_found_error", None),
    408: ("timeout_error", None),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", None),
}


def usage(answer: Answer) -> dict[str, Any]:
    """``CompletionUsage`` with its details, as OpenAI fills them."""
    counts = answer.gen.usage()
    return {
        "prompt_tokens": counts.prompt_tokens,
        "completion_tokens": counts.completion_tokens,
        "total_tokens": counts.total_tokens,
        "prompt_tokens_details": {"cached_tokens": counts.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": answer.gen.reasoning_tokens,
                                      "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }


class OpenAIShapes:
    """The ``Dialect`` of a simulated OpenAI-compatible provider."""

    def chat_body(self, answer: Answer) -> dict[str, Any]:
        """A ``chat.completion``; with a tool call the content is null."""
        gen, pieces = answer.gen, Pieces(answer.gen)
        message: dict[str, Any] = {"role": "assistant", "content": pieces.text_of("content"),
                                   "refusal": None, "annotations": []}
        call = gen.request.tool_call
        if call is not None:
            message["content"] = None
            message["tool_calls"] = [{"id": tool_call_id(gen), "type": "function", "function": {
                "name": call.name, "arguments": pieces.text_of("tool_arguments")}}]
        choice = {"index": 0, "message": message, "logprobs": None,
                  "finish_reason": gen.finish_reason}
        return {"id": f"chatcmpl-{gen.id}", "object": "chat.completion",
                "created": answer.created, "model": answer.model, "choices": [choice],
                "usage": usage(answer), "service_tier": "default",
                "system_fingerprint": _FINGERPRINT}

    def chat_events(self, answer: Answer) -> Events:
        """``chat.completion.chunk`` events."""
        return _ChatEvents(answer)

    def text_body(self, answer: Answer) -> dict[str, Any]:
        """A ``text_completion``."""
        gen = answer.gen
        choice = {"text": gen.text, "index": 0, "logprobs": None,
                  "finish_reason": gen.finish_reason}
        counts = gen.usage()
        return {"id": f"cmpl-{gen.id}", "object": "text_completion", "created": answer.created,
                "model": answer.model, "choices": [choice], "system_fingerprint": _FINGERPRINT,
                "usage": {"prompt_tokens": counts.prompt_tokens,
                          "completion_tokens": counts.completion_tokens,
                          "total_tokens": counts.total_tokens}}

    def text_events(self, answer: Answer) -> Events:
        """``text_completion`` chunks."""
        return _TextEvents(answer)

    def error_body(self, failure: SimFailure) -> dict[str, Any]:
        """``{"error": {"message", "type", "param", "code"}}``."""
        error_type, code = _ERROR_KINDS.get(failure.status, ("api_error", None))
        return {"error": {"message": failure.message, "type": error_type,
                          "param": failure.param, "code": code}}


class _ChatEvents:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.pieces = Pieces(answer.gen)
        self.started = False

    def _chunk(self, choices: list[dict[str, Any]], usage_value: Any = None) -> bytes:
        a = self.answer
        chunk: dict[str, Any] = {"id": f"chatcmpl-{a.gen.id}", "object": "chat.completion.chunk",
                                 "created": a.created, "model": a.model,
                                 "system_fingerprint": _FINGERPRINT, "choices": choices}
        if a.include_usage:
            chunk["usage"] = usage_value
        return sse(chunk)

    def _delta(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._chunk([{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}])

    def _opening(self) -> bytes:
        # OpenAI opens with the role and empty content, at the first token's time
        if self.started:
            return b""
        self.started = True
        return self._delta({"role": "assistant", "content": "", "refusal": None})

    def piece(self, text: str) -> bytes:
        kind, gen = self.pieces.next_kind(), self.answer.gen
        if kind == "tool_name" and gen.request.tool_call is not None:
            call = {"index": 0, "id": tool_call_id(gen), "type": "function",
                    "function": {"name": gen.request.tool_call.name, "arguments": ""}}
            event = self._delta({"tool_calls": [call]})
        elif kind == "tool_arguments":
            event = self._delta({"tool_calls": [{"index": 0, "function": {"arguments": text}}]})
        else:  # OpenAI sends no reasoning text in chat; the sim plans none for this kind
            event = self._delta({"content": text})
        return self._opening() + event

    def end(self) -> bytes:
        out = self._opening() + self._delta({}, self.answer.gen.finish_reason)
        if self.answer.include_usage:
            out += self._chunk([], usage(self.answer))
        return out + DONE


class _TextEvents:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    def _chunk(self, choices: list[dict[str, Any]], usage_value: Any = None) -> bytes:
        a = self.answer
        chunk: dict[str, Any] = {"id": f"cmpl-{a.gen.id}", "object": "text_completion",
                                 "created": a.created, "model": a.model,
                                 "system_fingerprint": _FINGERPRINT, "choices": choices}
        if usage_value is not None:
            chunk["usage"] = usage_value
        return sse(chunk)

    def piece(self, text: str) -> bytes:
        return self._chunk([{"text": text, "index": 0, "logprobs": None, "finish_reason": None}])

    def end(self) -> bytes:
        gen = self.answer.gen
        out = self._chunk([{"text": "", "index": 0, "logprobs": None,
                            "finish_reason": gen.finish_reason}])
        if self.answer.include_usage:
            counts = gen.usage()
            out += self._chunk([], {"prompt_tokens": counts.prompt_tokens,
                                    "completion_tokens": counts.completion_tokens,
                                    "total_tokens": counts.total_tokens})
        return out + DONE

"""Captured content in the GenAI message schema, from request bodies the SDKs send."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from gateway.telemetry.genai import content_attributes_of_request, output_messages


def _inputs(request: Any, provider: str = "openai") -> tuple[Any, Any]:
    messages, system = content_attributes_of_request(msgspec.json.encode(request), provider)
    return json.loads(messages), json.loads(system) if system is not None else None


def test_reasoning_media_refusal_and_custom_tool_calls_become_typed_parts() -> None:
    messages, _ = _inputs({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                                     {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}]},
        {"role": "assistant", "content": None, "reasoning_content": "think", "refusal": "no",
         "tool_calls": [{"id": "c1", "type": "custom", "custom": {"name": "sql", "input": "select 1"}},
                        {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]},
    ]})
    assert messages == [
        {"role": "user", "parts": [
            {"type": "text", "content": "look"},
            {"type": "uri", "modality": "image", "uri": "https://x.test/a.png"},
            {"type": "blob", "modality": "image", "mime_type": "image/png", "content": "AAAA"},
            {"type": "blob", "modality": "audio", "mime_type": "audio/wav", "content": "UklG"}]},
        {"role": "assistant", "parts": [
            {"type": "reasoning", "content": "think"},
            {"type": "refusal", "content": "no"},
            {"type": "tool_call", "id": "c1", "name": "sql", "arguments": "select 1"},
            {"type": "tool_call", "id": "c2", "name": "f", "arguments": "{not json"}]},
    ]


def test_system_and_developer_messages_move_apart_only_for_anthropic() -> None:
    request = {"model": "m", "messages": [{"role": "developer", "content": "rules"},
                                          {"role": "user", "content": "hi"}]}
    assert _inputs(request, "anthropic") == ([{"role": "user", "parts": [{"type": "text", "content": "hi"}]}],
                                             [{"type": "text", "content": "rules"}])
    messages, system = _inputs(request, "sglang")
    assert system is None and [m["role"] for m in messages] == ["developer", "user"]


def test_text_prompts_and_output_finish_reasons() -> None:
    assert _inputs({"model": "m", "prompt": ["a", "b"]})[0] == [
        {"role": "user", "parts": [{"type": "text", "content": "a"}, {"type": "text", "content": "b"}]}]
    assert _inputs({"model": "m", "prompt": [1, 2]})[0] == [
        {"role": "user", "parts": [{"type": "token_ids", "content": [1, 2]}]}]
    assert json.loads(output_messages("", ["tool_calls"], False)) == [
        {"role": "assistant", "parts": [], "finish_reason": "tool_call"}]
    assert json.loads(output_messages("par", [], True))[0]["finish_reason"] == "error"
    assert _inputs({"not": "a request"})[0] == []
    assert content_attributes_of_request(b"\xff not json", "openai") == ("[]", None)

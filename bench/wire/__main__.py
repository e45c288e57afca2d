"""Cost of open-world wire handling: ``python -m bench.wire``.

What the gateway does to every upstream chunk and answer: decode it, change what it must
(the public model name, usage), encode it for the client. Measured in one process and one run
for three shapes of body, each two ways:

* **closed** (the baseline, what the gateway did before issue 14): msgspec decodes straight
  into the typed struct and encodes it; fields the struct does not declare are lost, and a null
  where the struct wants a value fails.
* **open** (``backends.open_wire``): a body whose every key is declared goes straight into the
  struct once a decoder of its keys has found nothing else (``decode_declared``); any other is
  decoded to JSON values, converted to the struct and walked for the undeclared fields, which
  are kept on it; the struct is encoded with them.

The bodies are SGLang 0.5.23 chunks as its pydantic models dump them (a content delta, a
tool-call fragment with explicit nulls), an OpenAI answer carrying spec fields the gateway
does not model, and a small chat request as a client sends it (the door's parse,
``gateway.wire.parse_chat``, against a closed decode of its params). The closed path cannot
read SGLang's tool-call fragment at all (its nulls), so that row's baseline is the same chunk
without the nulls. Reports µs per body (median of ``--rounds`` rounds) and the ratio open /
closed. ``--cold`` times one body at a time after touching 16 MiB of other memory, as a
serving process meets a chunk between others' work; medians over ``--number`` bodies.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np

from backends import open_wire
from backends.types import ChatChunk, ChatParams, ChatResponse
from gateway.wire import parse_chat

SGLANG_CONTENT = {
    "id": "5d0c8b1b2a2f4e0c9a1f0e4b3c2d1a09", "object": "chat.completion.chunk", "created": 1765000000,
    "model": "meta-llama/Llama-3.1-8B-Instruct",
    "choices": [{"index": 0, "delta": {"content": " gateway", "reasoning_content": None},
                 "logprobs": None, "finish_reason": None, "matched_stop": None}],
    "usage": None,
}
SGLANG_TOOL_FRAGMENT = {
    **SGLANG_CONTENT,
    "choices": [{"index": 0, "delta": {"role": None, "content": None, "reasoning_content": None, "tool_calls": [
        {"id": None, "index": 0, "type": None, "function": {"name": None, "arguments": "{\"city\": "}}]},
        "logprobs": None, "finish_reason": None, "matched_stop": None}],
}
OPENAI_ANSWER = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1765000000, "model": "gpt-4o-mini",
    "service_tier": "default", "system_fingerprint": "fp_1",
    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                 "message": {"role": "assistant", "content": "The answer is 42." * 8, "refusal": None,
                             "annotations": [{"type": "url_citation", "url_citation": {
                                 "url": "https://example.org", "title": "t", "start_index": 0, "end_index": 3}}]}}],
    "usage": {"prompt_tokens": 120, "completion_tokens": 48, "total_tokens": 168,
              "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
}


CHAT_REQUEST = {"model": "bench-model", "max_tokens": 8, "stream": False,
                "messages": [{"role": "user", "content": "Say hello to the benchmark in a few words."}]}


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _closed(cls: type[Any]) -> Callable[[bytes], bytes]:
    decoder, encoder = msgspec.json.Decoder(cls), msgspec.json.Encoder()

    def run(raw: bytes) -> bytes:
        obj = decoder.decode(raw)
        obj.model = "public"
        return encoder.encode(obj)
    return run


def _open(cls: type[Any]) -> Callable[[bytes], bytes]:
    if cls is ChatParams:  # a request: the door's parse, then the body sent upstream
        def parse(raw: bytes) -> bytes:
            call = parse_chat(raw)
            call.params.model = "public"
            return open_wire.encode(call.params)
        return parse

    def run(raw: bytes) -> bytes:
        obj = open_wire.decode(raw, cls)
        obj.model = "public"
        return open_wire.encode(obj)
    return run


def _per_body_us(run: Callable[[bytes], bytes], raw: bytes, number: int) -> float:
    started = time.perf_counter()
    for _ in range(number):
        run(raw)
    return (time.perf_counter() - started) / number * 1e6


_OTHER_MEMORY = np.zeros(16 << 20, dtype=np.uint8)


def _cold_body_us(run: Callable[[bytes], bytes], raw: bytes, number: int) -> float:
    """Median µs of one body right after 16 MiB of other memory was touched."""
    times = []
    for _ in range(number):
        _OTHER_MEMORY[::64] += 1
        started = time.perf_counter_ns()
        run(raw)
        times.append(time.perf_counter_ns() - started)
    return statistics.median(times) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=20_000, help="bodies per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="one body at a time between cold caches")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    cases = [
        ("SGLang content chunk", ChatChunk, SGLANG_CONTENT, SGLANG_CONTENT),
        ("SGLang tool-call fragment (nulls)", ChatChunk, SGLANG_TOOL_FRAGMENT, _without_nulls(SGLANG_TOOL_FRAGMENT)),
        ("OpenAI answer with unmodelled fields", ChatResponse, OPENAI_ANSWER, OPENAI_ANSWER),
        ("small chat request (the door's parse)", ChatParams, CHAT_REQUEST, CHAT_REQUEST),
    ]
    timed = _cold_body_us if args.cold else _per_body_us
    number = min(args.number, 2_000) if args.cold else args.number
    results = []
    print(f"{'body':40} {'closed µs':>10} {'open µs':>9} {'ratio':>6}  fields kept")
    for name, cls, body, baseline_body in cases:
        raw, baseline_raw = json.dumps(body).encode(), json.dumps(baseline_body).encode()
        closed, opened = _closed(cls), _open(cls)
        closed_us, open_us = [], []
        for _ in range(args.rounds):  # alternate, so drift hits both alike
            closed_us.append(timed(closed, baseline_raw, number))
            open_us.append(timed(opened, raw, number))
        kept = json.loads(opened(raw)) == {**body, "model": "public"}
        row = {"body": name, "closed_us": statistics.median(closed_us), "open_us": statistics.median(open_us),
               "kept_everything": kept}
        row["ratio"] = row["open_us"] / row["closed_us"]
        results.append(row)
        print(f"{name:40} {row['closed_us']:10.2f} {row['open_us']:9.2f} {row['ratio']:6.2f}  {kept}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"number": number, "rounds": args.rounds, "cold": args.cold, "results": results}, out, indent=2)


if __name__ == "__main__":
    main()

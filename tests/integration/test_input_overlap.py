"""A request goes upstream while its input checks run (``gateway/input_screen.py``).

Through the real endpoint with the openai SDK (and the anthropic one for its door), on SGLang
simulators: a prompt that the checks block, long or short, is still a 400, answered as soon as
the checks fail (not when the worker's first token comes), and its upstream request is
stopped; a benign one is answered as usual. Nothing leaves before the checks when the policy
says ``never``, when a rule redacts input, or when a deployment of the model is an external API
(the default ``self_hosted``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from gateway import input_screen
from gateway.local_stack import DEMO_KEY, LOCAL_MODEL, OPENAI_MODEL
from gateway.moderation import check_request
from tests.conftest import ThreadedStack

BLOCKED = "forbidden launch codes"
# ~57k characters: with the classifier on, its checks take tens of milliseconds in a worker
# thread, long enough for the request to be on its way upstream meanwhile
LONG = "Please summarise these notes about baking bread at home, step by step. " * 800
SLOW_FIRST_TOKEN = {"sim_delay_ms": 4_000}


def _policy(send_while_checking: str, *, redact: bool = False) -> Any:
    def edit(document: dict[str, Any]) -> None:
        checks = {"pii": {"email": {"action": "redact"}} if redact else {},  # categories: the defaults
                  "blocked_terms": [BLOCKED], "send_while_checking": send_while_checking}
        document["moderation"] = {"default": {"input": checks, "output": None}}
        for model in document["models"].values():
            model["context"] = {"context_window": 100_000}
    return edit


@pytest.fixture(scope="module")
def overlapping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedStack]:
    stack = ThreadedStack(tmp_path_factory.mktemp("overlap"), edit_policy=_policy("self_hosted"))
    yield stack
    stack.close()


def _client(stack: ThreadedStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=30)


def _sent_upstream(stack: ThreadedStack) -> list[str]:
    """The user texts the SGLang sims received (last 100 requests each)."""
    texts = []
    for sim in stack.stack.sglang:
        for request in stack.sim_requests(sim.url):
            for message in (request.get("body") or {}).get("messages", []):
                if isinstance(message.get("content"), str):
                    texts.append(message["content"])
    return texts


def _sim_cancelled(stack: ThreadedStack) -> int:
    return sum(stack.sim_stats(sim.url)["cancelled"] for sim in stack.stack.sglang)


@pytest.mark.parametrize("stream", [True, False])
def test_a_blocked_long_prompt_is_refused_when_its_checks_fail_and_its_upstream_request_stops(
        overlapping: ThreadedStack, stream: bool) -> None:
    _assert_refused_after_going_upstream(overlapping, f"{LONG} Also tell me the {BLOCKED.upper()} now. {stream}",
                                         stream)


@pytest.mark.parametrize("stream", [True, False])
def test_a_short_blocked_prompt_goes_upstream_while_it_is_checked_and_is_stopped(
        overlapping: ThreadedStack, monkeypatch: pytest.MonkeyPatch, stream: bool) -> None:
    # a short input's checks take a fraction of a millisecond on the loop; held 300 ms here
    # (the stack serves from this process), the worker must still have the request first
    async def slow_check(*args: Any) -> Any:
        await asyncio.sleep(0.3)
        return await check_request(*args)

    monkeypatch.setattr(input_screen, "check_request", slow_check)
    _assert_refused_after_going_upstream(overlapping, f"short one: {BLOCKED} ({stream})", stream)


def _assert_refused_after_going_upstream(stack: ThreadedStack, prompt: str, stream: bool) -> None:
    """``prompt`` (blocked) is a 400 once its checks fail, after it went to a worker, whose
    request is then stopped before its first token (the sims wait 4 s for it)."""
    cancelled = _sim_cancelled(stack)
    started = time.perf_counter()
    with pytest.raises(openai.BadRequestError) as caught:
        _client(stack).chat.completions.create(
            model=LOCAL_MODEL, stream=stream, messages=[{"role": "user", "content": prompt}],
            extra_body=SLOW_FIRST_TOKEN)
    took = time.perf_counter() - started
    assert caught.value.body["code"] == "content_policy_violation"  # type: ignore[index]
    assert prompt in _sent_upstream(stack)  # it went upstream while it was checked
    # refused when the checks failed, not when the worker's first token came (4 s later)
    assert took < 3.0, f"the 400 took {took:.2f} s"
    # the worker stopped before its first token: the gateway closed its request
    deadline = started + 3.0
    while _sim_cancelled(stack) == cancelled and time.perf_counter() < deadline:
        time.sleep(0.05)
    assert _sim_cancelled(stack) == cancelled + 1


def test_a_benign_long_prompt_is_answered(overlapping: ThreadedStack) -> None:
    chunks = list(_client(overlapping).chat.completions.create(
        model=LOCAL_MODEL, stream=True, max_tokens=5,
        messages=[{"role": "user", "content": LONG + " benign"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    answer = _client(overlapping).chat.completions.create(
        model=LOCAL_MODEL, max_tokens=5, messages=[{"role": "user", "content": LONG + " benign, whole"}])
    assert answer.choices[0].message.content


@pytest.mark.parametrize("stream", [True, False])
def test_the_anthropic_and_responses_doors_refuse_an_overlapped_block_in_their_own_shape(
        overlapping: ThreadedStack, stream: bool) -> None:
    """The doors share the staged request path: the overlapped check's 400 reaches each client
    as its own SDK's error, and the request had gone upstream while it was checked."""
    prompt = f"{LONG} Also tell me the {BLOCKED.upper()} now. (anthropic, {stream})"
    claude = anthropic.Anthropic(base_url=overlapping.url, api_key=DEMO_KEY, max_retries=0, timeout=30)
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(model=LOCAL_MODEL, max_tokens=5, stream=stream,
                               messages=[{"role": "user", "content": prompt}])
    assert refused.value.body["type"] == "error"  # type: ignore[index]
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert prompt in _sent_upstream(overlapping)
    prompt = f"{LONG} Also tell me the {BLOCKED.upper()} now. (responses, {stream})"
    with pytest.raises(openai.BadRequestError) as caught:
        _client(overlapping).responses.create(model=LOCAL_MODEL, input=prompt, stream=stream)
    assert caught.value.body["code"] == "content_policy_violation"  # type: ignore[index]
    assert prompt in _sent_upstream(overlapping)


@pytest.mark.parametrize("length", ["short", "long"])
def test_an_external_deployment_gets_nothing_before_the_checks(overlapping: ThreadedStack, length: str) -> None:
    prompt = f"{LONG if length == 'long' else 'short one:'} {BLOCKED} for the hosted model"
    with pytest.raises(openai.BadRequestError):
        _client(overlapping).chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": prompt}])
    received = overlapping.sim_requests(overlapping.stack.openai.url)
    assert not any(prompt in str(r.get("body")) for r in received)


@pytest.mark.parametrize(("mode", "redact"), [("never", False), ("always", True)])
def test_nothing_leaves_first_when_the_policy_says_never_or_input_is_redacted(
        tmp_path_factory: pytest.TempPathFactory, mode: str, redact: bool) -> None:
    stack = ThreadedStack(tmp_path_factory.mktemp(f"no-overlap-{mode}"), edit_policy=_policy(mode, redact=redact))
    try:
        for text in (LONG, "short one:"):
            prompt = f"{text} {BLOCKED} ({mode})"
            with pytest.raises(openai.BadRequestError):
                _client(stack).chat.completions.create(model=LOCAL_MODEL, stream=True,
                                                       messages=[{"role": "user", "content": prompt}])
            assert prompt not in _sent_upstream(stack)
    finally:
        stack.close()

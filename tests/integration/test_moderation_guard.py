"""A guard model behind the local classifier, through the real endpoint with the openai SDK.

Two tenants, two guards, both simulated by ``backends/sim/guard.py`` on a real socket: the demo
tenant asks a Llama Guard 3-style chat classifier and fails open; team-b asks an OpenAI-style
``/v1/moderations`` and fails closed. Input moderation blocks ``hate`` with the shipped model;
only text it scores as borderline goes to the guard.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from backends.guard import parse_llama_guard
from backends.sim.guard import GuardSim
from gateway.local_stack import DEMO_KEY, LOCAL_MODEL, TEAM_B_KEY
from tests.conftest import ThreadedStack

BORDERLINE = "Here is my honest answer. the migrants ar"
"""Scored 0.445 for hate by the shipped model: over half its 0.57 threshold, under it."""
BENIGN = "What is the capital of France?"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadedStack, GuardSim]]:
    sim = GuardSim({"honest answer": ["S10"], "migrants ar": ["hate"]}).start()

    def edit(document: dict[str, Any]) -> None:
        checks = {"categories": {"hate": {"action": "block"}}, "pii": {}}
        document["moderation"] = {"tenants": {
            "demo": {"input": checks, "output": None, "guard": {
                "kind": "llama_guard", "url": sim.url, "model": "llama-guard-3-1b", "timeout_s": 0.5}},
            "team-b": {"input": checks, "output": None, "guard": {
                "kind": "openai_moderation", "url": sim.url, "model": "omni-moderation-latest", "timeout_s": 0.5,
                "on_error": "closed"}},
        }}

    stack = ThreadedStack(tmp_path_factory.mktemp("guarded"), edit_policy=edit)
    yield stack, sim
    stack.close()
    sim.close()


def _ask(stack: ThreadedStack, key: str, text: str) -> str:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0)
    answer = client.chat.completions.create(model=LOCAL_MODEL, max_tokens=4,
                                            messages=[{"role": "user", "content": text}])
    return answer.choices[0].message.content or ""


def test_only_borderline_input_goes_to_the_guard_and_its_verdict_blocks(
        guarded: tuple[ThreadedStack, GuardSim]) -> None:
    stack, sim = guarded
    before = sim.calls["chat"]
    assert _ask(stack, DEMO_KEY, BENIGN)
    assert sim.calls["chat"] == before  # the local model decided: no guard call
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(stack, DEMO_KEY, BORDERLINE)
    assert caught.value.code == "content_policy_violation" and "'hate'" in caught.value.message
    assert sim.calls["chat"] == before + 1
    metrics = httpx.get(stack.url + "/metrics").text
    assert 'switchyard_moderation_guard_calls_total{kind="llama_guard",outcome="unsafe"} 1.0' in metrics


def test_the_openai_moderation_format_decides_alike(guarded: tuple[ThreadedStack, GuardSim]) -> None:
    stack, sim = guarded
    before = sim.calls["moderations"]
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(stack, TEAM_B_KEY, BORDERLINE)
    assert "'hate'" in caught.value.message
    assert sim.calls["moderations"] == before + 1


def test_a_late_guard_fails_open_or_closed_as_the_policy_says(guarded: tuple[ThreadedStack, GuardSim]) -> None:
    stack, sim = guarded
    sim.delay_s = 2.0
    try:
        assert _ask(stack, DEMO_KEY, BORDERLINE)  # open: the local verdict (under the threshold) stands
        with pytest.raises(openai.BadRequestError) as caught:
            _ask(stack, TEAM_B_KEY, BORDERLINE)  # closed: blocked
        assert "guard_unavailable" in caught.value.message
    finally:
        sim.delay_s = 0.0
    metrics = httpx.get(stack.url + "/metrics").text
    assert 'switchyard_moderation_guard_calls_total{kind="llama_guard",outcome="error"} 1.0' in metrics


def test_llama_guard_answers_are_read_as_written() -> None:
    assert parse_llama_guard("safe").unsafe is False
    answer = parse_llama_guard("unsafe\nS1,S10")
    assert answer.unsafe and answer.labels == ("S1", "S10")
    with pytest.raises(Exception, match="neither"):
        parse_llama_guard("I cannot help with that")

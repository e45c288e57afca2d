"""A guard model deciding the answers the local classifier finds borderline, streamed or whole,
through the real endpoint with the openai SDK (issue 18, point 4).

The simulated SGLang worker answers what each request names (``sim_reply``); the simulated guard
(``backends/sim/guard.py``, a real socket) calls unsafe what its rules name. Output moderation
blocks ``hate``; the shipped model scores ``BORDERLINE`` over half its threshold and under it, so
only the guard can block it. The demo tenant streams in ``buffered`` mode with a Llama Guard-style
guard; team-b in ``incremental`` mode with an OpenAI ``/v1/moderations`` one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from backends.sim.guard import GuardSim
from gateway.local_stack import DEMO_KEY, LOCAL_MODEL, TEAM_B_KEY
from tests.conftest import ThreadedStack

BORDERLINE = ["Here is my ", "honest answer. the migr", "ants ar"]
"""Scored 0.445 for hate as one window by the shipped model (threshold 0.57, borderline from 0.285)."""
BENIGN = ["The capital of ", "France is Paris."]
UNSAFE: dict[str, tuple[str, ...]] = {"honest answer": ("S10",)}
"""The guard's rule: Llama Guard's S10 (hate), OpenAI's ``hate``."""


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadedStack, GuardSim]]:
    sim = GuardSim({}).start()

    def edit(document: dict[str, Any]) -> None:
        def checks(mode: str) -> dict[str, Any]:
            return {"categories": {"hate": {"action": "block"}}, "pii": {}, "mode": mode}

        document["moderation"] = {"tenants": {
            "demo": {"input": None, "output": checks("buffered"), "guard": {
                "kind": "llama_guard", "url": sim.url, "model": "llama-guard-3-1b", "timeout_s": 2.0}},
            "team-b": {"input": None, "output": checks("incremental"), "guard": {
                "kind": "openai_moderation", "url": sim.url, "model": "omni-moderation-latest", "timeout_s": 2.0}},
        }}

    stack = ThreadedStack(tmp_path_factory.mktemp("guarded-output"), edit_policy=edit)
    yield stack, sim
    stack.close()
    sim.close()


def _stream(stack: ThreadedStack, key: str, pieces: list[str]) -> tuple[str, str | None]:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0)
    chunks = list(client.chat.completions.create(
        model=LOCAL_MODEL, stream=True, messages=[{"role": "user", "content": "go"}],
        extra_body={"sim_reply": pieces}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return text, reasons[-1] if reasons else None


def _whole(stack: ThreadedStack, key: str, pieces: list[str]) -> tuple[str, str | None]:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0)
    answer = client.chat.completions.create(model=LOCAL_MODEL, messages=[{"role": "user", "content": "go"}],
                                            extra_body={"sim_reply": pieces})
    return answer.choices[0].message.content or "", answer.choices[0].finish_reason


def test_a_benign_answer_never_reaches_the_guard(guarded: tuple[ThreadedStack, GuardSim]) -> None:
    stack, sim = guarded
    before = sum(sim.calls.values())
    assert _stream(stack, DEMO_KEY, BENIGN) == ("".join(BENIGN), "stop")
    assert _whole(stack, TEAM_B_KEY, BENIGN) == ("".join(BENIGN), "stop")
    assert sum(sim.calls.values()) == before


def test_a_borderline_stream_waits_for_the_guard_which_passes_or_blocks_it(
        guarded: tuple[ThreadedStack, GuardSim]) -> None:
    stack, sim = guarded
    sim.rules = {}
    before = sim.calls["chat"]
    assert _stream(stack, DEMO_KEY, BORDERLINE) == ("".join(BORDERLINE), "stop")  # safe: byte for byte
    assert sim.calls["chat"] == before + 1
    sim.rules = UNSAFE
    try:
        # buffered: the window was held whole, so none of its text reached the client
        assert _stream(stack, DEMO_KEY, BORDERLINE) == ("", "content_filter")
    finally:
        sim.rules = {}
    assert sim.calls["chat"] == before + 2


def test_incremental_mode_holds_the_borderline_rest_for_the_guard(guarded: tuple[ThreadedStack, GuardSim]) -> None:
    stack, sim = guarded
    before = sim.calls["moderations"]
    sim.rules = UNSAFE
    try:
        # the opening scores clear and goes at once; the rest makes the running score
        # borderline, so it waits for the window's whole score, then for the guard
        assert _stream(stack, TEAM_B_KEY, ["Here is my ", "honest answer. the migrants ar"]) == ("Here is my ", "content_filter")
    finally:
        sim.rules = {}
    assert sim.calls["moderations"] == before + 1
    # text a clear running score releases ahead of any score (up to a quarter of what it read:
    # the mode's documented trade) is out before the guard can be asked; it can only end the stream
    sim.rules = UNSAFE
    try:
        assert _stream(stack, TEAM_B_KEY, BORDERLINE) == ("".join(BORDERLINE), "content_filter")
    finally:
        sim.rules = {}


def test_a_whole_answer_the_guard_blocks_is_cut(guarded: tuple[ThreadedStack, GuardSim]) -> None:
    stack, sim = guarded
    before = sim.calls["chat"] + sim.calls["moderations"]
    assert _whole(stack, DEMO_KEY, BORDERLINE) == ("".join(BORDERLINE), "stop")
    sim.rules = UNSAFE
    try:
        assert _whole(stack, DEMO_KEY, BORDERLINE) == ("", "content_filter")
        assert _whole(stack, TEAM_B_KEY, BORDERLINE) == ("", "content_filter")
    finally:
        sim.rules = {}
    assert sim.calls["chat"] + sim.calls["moderations"] == before + 3


def test_a_late_guard_releases_or_ends_a_waiting_stream_as_the_policy_says(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    sim = GuardSim(UNSAFE, delay_s=1.0).start()  # it would block, but answers too late

    def edit(document: dict[str, Any]) -> None:
        def section(on_error: str) -> dict[str, Any]:
            return {"input": None, "guard": {"kind": "llama_guard", "url": sim.url, "model": "llama-guard-3-1b",
                                             "timeout_s": 0.2, "on_error": on_error},
                    "output": {"categories": {"hate": {"action": "block"}}, "pii": {}, "mode": "buffered"}}

        document["moderation"] = {"tenants": {"demo": section("open"), "team-b": section("closed")}}

    stack = ThreadedStack(tmp_path_factory.mktemp("late-guard"), edit_policy=edit)
    try:
        # open: the local verdict (under the threshold) stands, the text goes out whole
        assert _stream(stack, DEMO_KEY, BORDERLINE) == ("".join(BORDERLINE), "stop")
        # closed: an unanswered question blocks; none of the waiting window went out
        assert _stream(stack, TEAM_B_KEY, BORDERLINE) == ("", "content_filter")
        assert _whole(stack, TEAM_B_KEY, BORDERLINE) == ("", "content_filter")
    finally:
        stack.close()
        sim.close()


def test_a_client_that_leaves_while_its_stream_waits_for_the_guard_releases_everything(
        guarded: tuple[ThreadedStack, GuardSim]) -> None:
    from tests.conftest import eventually
    from tests.integration.test_gateway_disconnect import first_chunk_then_leave, in_flight

    stack, sim = guarded
    runtime = stack.stack.app.state.gateway.runtime
    body = {"model": LOCAL_MODEL, "stream": True, "messages": [{"role": "user", "content": "go"}],
            "sim_reply": BORDERLINE}
    sim.delay_s = 1.0
    try:
        with first_chunk_then_leave(stack, body):
            pass  # the role chunk has come: the text waits for the guard
        eventually(lambda: not runtime.accounting._live and in_flight(stack) == 0)
    finally:
        sim.delay_s = 0.0
    assert not runtime.accounting._live, "the stream's ticket was settled"
    assert in_flight(stack) == 0, "the worker's slot was released"
    assert _stream(stack, DEMO_KEY, BENIGN) == ("".join(BENIGN), "stop")  # and the gateway serves on

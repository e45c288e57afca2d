"""Moderation through the real endpoint with the openai SDK: streamed, mid-stream, and not.

The policy here checks blocked terms and PII, which are deterministic and need no model file;
``test_moderation_classifier_gateway`` below covers a classifier category when the shipped
model is present.
"""

from __future__ import annotations

import gc
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.local_stack import ANTHROPIC_MODEL, DEMO_KEY, LOCAL_MODEL, TEAM_B_KEY
from gateway.telemetry import AccessLog, Telemetry
from tests.conftest import ThreadedStack, eventually

TERM = "project nightingale"


def _moderated(document: dict[str, Any]) -> None:
    document["moderation"] = {
        "models": {LOCAL_MODEL: {
            "input": {"categories": {}, "pii": {}, "blocked_terms": ["forbidden launch codes"]},
            # e-mail redacted too (the default flags it), so a split address shows the hold-back
            "output": {"categories": {}, "blocked_terms": [TERM],
                       "pii": {t: {"action": "redact"} for t in ("email", "phone", "credit_card", "iban", "secret")}},
        }},
        "tenants": {"team-b": {"input": None, "output": None}},  # the tenant's section wins: none
    }
    document["models"][LOCAL_MODEL]["context"] = {"context_window": 8192}  # a longer prompt is refused


@pytest.fixture(scope="module")
def moderated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadedStack, io.StringIO]]:
    access = io.StringIO()
    stack = ThreadedStack(tmp_path_factory.mktemp("moderated"), edit_policy=_moderated,
                          telemetry=Telemetry(None, AccessLog(access)))
    yield stack, access
    stack.close()


def _last_line(access: io.StringIO, response_id: str) -> dict[str, Any]:
    """The access line of a stream: written when the relay ends, just after [DONE] went out."""

    def last() -> dict[str, Any] | None:
        lines = [json.loads(x) for x in access.getvalue().splitlines()]
        return lines[-1] if lines and lines[-1].get("moderation") else None

    line = eventually(last)
    if line is None:
        raise AssertionError(f"no access line for {response_id}")
    return line


def _client(stack: ThreadedStack, key: str = DEMO_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0)


def _stream(stack: ThreadedStack, pieces: list[str], key: str = DEMO_KEY) -> tuple[str, list[Any]]:
    chunks = list(_client(stack, key).chat.completions.create(
        model=LOCAL_MODEL, stream=True, messages=[{"role": "user", "content": "go"}],
        extra_body={"sim_reply": pieces}))
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


def test_a_blocked_phrase_split_across_chunks_never_reaches_the_client(
        moderated: tuple[ThreadedStack, io.StringIO]) -> None:
    stack, access = moderated
    pieces = ["The plan is called proj", "ect night", "ingale and it starts ", "tomorrow at dawn. ",
              "More details follow in a long paragraph that keeps going for a while."]
    text, chunks = _stream(stack, pieces)
    assert "nightingale" not in text.lower() and "night" not in text.lower()
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    line = _last_line(access, chunks[0].id)
    assert line["moderation"] == ["output:blocked_term:block"]
    assert line["completion_tokens"] > 0  # what the worker produced is charged
    assert TERM not in access.getvalue()
    metrics = httpx.get(stack.url + "/metrics").text
    assert ('switchyard_moderation_verdicts_total{action="block",category="blocked_term",direction="output",'
            f'model="{LOCAL_MODEL}"') in metrics


def test_an_email_in_the_output_arrives_redacted_streamed_and_not(
        moderated: tuple[ThreadedStack, io.StringIO]) -> None:
    stack, _ = moderated
    pieces = ["Write to ", "jane.doe@exa", "mple.com for access. ", "Thanks."]
    text, chunks = _stream(stack, pieces)
    assert text == "Write to [REDACTED:EMAIL] for access. Thanks."
    assert chunks[-1].choices[0].finish_reason != "content_filter"
    answer = _client(stack).chat.completions.create(
        model=LOCAL_MODEL, messages=[{"role": "user", "content": "go"}],
        extra_body={"sim_reply": "Card 4111 1111 1111 1111, mail jane.doe@example.com."})
    assert answer.choices[0].message.content == "Card [REDACTED:CREDIT_CARD], mail [REDACTED:EMAIL]."


def test_a_benign_stream_passes_byte_for_byte(moderated: tuple[ThreadedStack, io.StringIO]) -> None:
    stack, _ = moderated
    pieces = ["Sure! ", "Here is a haiku:\n", "An old silent pond\u2026 ", "a frog jumps ", "into the pond\u2014",
              "splash! ", "Silence again.\n", "  Version 2.0 (2024), see https://example.org/x?y=1."]
    text, chunks = _stream(stack, pieces)
    assert text == "".join(pieces)
    assert chunks[-1].choices[0].finish_reason not in ("content_filter", None)


def test_incremental_mode_streams_text_as_it_comes_and_measures_what_the_client_sees(
        moderated: tuple[ThreadedStack, io.StringIO]) -> None:
    stack, _ = moderated
    pieces = ["Sure! ", "Here is ", "the plan ", "for today, ", "step by step. ", "Mail jane.doe@", "example.com ",
              "if stuck."]
    text, chunks = _stream(stack, pieces)
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert contents[:5] == pieces[:5]  # each piece released as it came: nothing could still block it
    assert text == "".join(pieces[:5]) + "Mail [REDACTED:EMAIL] if stuck."
    metrics = httpx.get(stack.url + "/metrics").text
    visible = [line for line in metrics.splitlines()
               if line.startswith(f'switchyard_time_to_first_visible_token_seconds_count{{model="{LOCAL_MODEL}"')]
    held = [line for line in metrics.splitlines()
            if line.startswith(f'switchyard_moderation_held_chars_count{{model="{LOCAL_MODEL}"')]
    assert visible and float(visible[0].rsplit(" ", 1)[1]) >= 1
    assert held and float(held[0].rsplit(" ", 1)[1]) >= 1


def test_a_blocked_request_is_a_400_naming_the_category_not_the_text(
        moderated: tuple[ThreadedStack, io.StringIO]) -> None:
    stack, access = moderated
    with pytest.raises(openai.BadRequestError) as caught:
        _client(stack).chat.completions.create(
            model=LOCAL_MODEL, messages=[{"role": "user", "content": "Send me the Forbidden  Launch Codes now"}])
    error = caught.value.body
    assert error["code"] == "content_policy_violation"  # type: ignore[index]
    assert "blocked term" in error["message"] and "launch" not in error["message"].lower()  # type: ignore[index]
    # (whether it reached the operator's own workers first is send_while_checking's:
    # tests/integration/test_input_overlap.py)
    assert "Launch Codes" not in access.getvalue()


def test_the_tenant_section_wins_over_the_model_section(moderated: tuple[ThreadedStack, io.StringIO]) -> None:
    stack, _ = moderated
    text, _ = _stream(stack, ["code name: project ", "nightingale."], key=TEAM_B_KEY)
    assert text == "code name: project nightingale."


def test_a_moderation_section_naming_an_unknown_model_is_refused() -> None:
    from policies.loader import PolicyError, parse_policy

    with pytest.raises(PolicyError) as caught:
        parse_policy("backends: {o: {kind: openai, base_url: 'http://x/v1'}}\n"
                     "models: {m: {deployments: [{backend: o, model: x}]}}\n"
                     "moderation: {models: {nope: {}}}\n")
    assert "moderation.models.nope" in caught.value.message


def test_the_shipped_classifier_blocks_hate_mid_stream(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The default output checks (every category blocks at its tuned threshold) with the
    committed ONNX model: a hateful sentence streamed in pieces ends with content_filter."""

    def defaults(document: dict[str, Any]) -> None:
        document["moderation"] = {"default": {}}

    stack = ThreadedStack(tmp_path_factory.mktemp("classified"), edit_policy=defaults)
    try:
        benign = ["Sourdough needs a lively starter. ", "Feed it daily, ", "then bake at 250 degrees."]
        text, chunks = _stream(stack, benign)
        assert text == "".join(benign) and chunks[-1].choices[0].finish_reason != "content_filter"
        hateful = ["Here is my view. ", "I hate immigrants. They are vermin ", "and should all be exterminated. ",
                   "Anyway, the weather is nice."]
        text, chunks = _stream(stack, hateful)
        assert "vermin" not in text and "exterminated" not in text
        assert chunks[-1].choices[0].finish_reason == "content_filter"
    finally:
        stack.close()


def test_a_long_prompt_is_moderated_without_stalling_other_requests(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Input checks cost ~2 µs a character: a 600k-character prompt is over a second of work,
    done in a worker thread, so the gateway keeps answering everyone else meanwhile."""
    import threading
    import time

    def defaults(document: dict[str, Any]) -> None:
        document["moderation"] = {"default": {}}  # input: every category, with the shipped model
        document["models"][LOCAL_MODEL]["context"] = {"context_window": 1_000_000}

    stack = ThreadedStack(tmp_path_factory.mktemp("long-input"), edit_policy=defaults)
    # the gateway serves here inside pytest's process: a full collection of the whole suite's
    # objects (0.74 s once, late in a CI run) would stall its loop as no serving process's
    # does, since one freezes what start-up made (gateway/gc_tuning.py); freeze them likewise
    gc.freeze()
    try:
        prompt = "Please summarise these notes about baking bread at home. " * 10_500  # ~600k chars
        took: list[float] = []

        def long_request() -> None:
            started = time.perf_counter()
            _client(stack).with_options(timeout=60).chat.completions.create(
                model=LOCAL_MODEL, max_tokens=4, messages=[{"role": "user", "content": prompt}])
            took.append(time.perf_counter() - started)

        worker = threading.Thread(target=long_request)
        gaps: list[float] = []
        with httpx.Client(base_url=stack.url, timeout=30) as probe:
            probe.get("/healthz")
            worker.start()
            while worker.is_alive():
                started = time.perf_counter()
                assert probe.get("/healthz").status_code == 200
                gaps.append(time.perf_counter() - started)
                time.sleep(0.01)
        worker.join()
        assert took and took[0] > 0.5, took  # the long read really happened
        # checked on the loop, a probe would wait about as long as the check itself; a fixed bound
        # (0.4 s) failed once at 0.42 s on a busy machine where the check took 2.6 s (typical gaps
        # are 0.07-0.15 s): the bound scales with the check, which a slower machine also slows
        assert max(gaps) < took[0] / 4, f"the event loop stalled {max(gaps):.2f} s during a {took[0]:.2f} s prompt check"
    finally:
        gc.unfreeze()
        stack.close()


def test_a_prompt_too_long_for_the_model_is_refused_before_it_is_moderated(
        moderated: tuple[ThreadedStack, io.StringIO]) -> None:
    stack, _ = moderated
    # the blocked term is in the prompt, but the prompt cannot be sent at all: context first
    with pytest.raises(openai.BadRequestError) as caught:
        _client(stack).chat.completions.create(
            model=LOCAL_MODEL, messages=[{"role": "user", "content": "forbidden launch codes " + "word " * 20_000}])
    assert caught.value.body["code"] == "context_length_exceeded"  # type: ignore[index]


def test_an_email_in_the_output_is_flagged_not_redacted_by_default_and_costs_no_word(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """The default output PII rules flag e-mail: the address reaches the client as written,
    the verdict is recorded, and the first word goes out as it comes (nothing can still
    become a redacted value)."""

    def pii_defaults(document: dict[str, Any]) -> None:
        document["moderation"] = {"default": {"input": None, "output": {"categories": {}}}}

    stack = ThreadedStack(tmp_path_factory.mktemp("email-flagged"), edit_policy=pii_defaults)
    try:
        pieces = ["Sure", ", write", " to", " jane.doe@exa", "mple.com", " today."]
        text, chunks = _stream(stack, pieces)
        assert text == "".join(pieces)
        contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert contents[0] == "Sure"  # released with its own chunk, not held for the next one
        metrics = httpx.get(stack.url + "/metrics").text
        assert ('switchyard_moderation_verdicts_total{action="flag",category="email",direction="output",'
                f'model="{LOCAL_MODEL}"') in metrics
    finally:
        stack.close()


def test_an_answer_repeating_its_question_shows_its_subject_at_once(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The shipped model scores `` Child abuse`` over its sexual threshold by itself, so the
    running score holds those words until the sentence says what they are; the client asked
    about them, so they go out at once (``output.release_echo``, on by default), through the
    OpenAI and the Anthropic door alike. A tenant with it off waits, as before."""
    import anthropic

    def defaults(document: dict[str, Any]) -> None:
        document["moderation"] = {"default": {"input": None},
                                  "tenants": {"team-b": {"input": None, "output": {"release_echo": False}}}}

    question = [{"role": "user", "content": "What is child abuse?"}]
    pieces = [" Child", " abuse", " refers", " to", " any", " act", " that", " harms", " a", " child."]
    stack = ThreadedStack(tmp_path_factory.mktemp("echo"), edit_policy=defaults)
    try:
        firsts = {}
        for key in (DEMO_KEY, TEAM_B_KEY):
            chunks = list(_client(stack, key).chat.completions.create(
                model=LOCAL_MODEL, stream=True, messages=question, extra_body={"sim_reply": pieces}))
            contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
            assert "".join(contents) == "".join(pieces)
            firsts[key] = contents[0]
        assert firsts == {DEMO_KEY: " Child", TEAM_B_KEY: " Child abuse refers"}
        client = anthropic.Anthropic(base_url=stack.url, api_key=DEMO_KEY, max_retries=0, timeout=20)
        events = list(client.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, stream=True, messages=question,
                                             extra_body={"sim_reply": pieces}))
        texts = [e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"]
        assert texts[0] == " Child" and "".join(texts) == "".join(pieces)
    finally:
        stack.close()

"""Difficulty routes through the real endpoint: ``auto`` picks the cheap or the strong model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.local_stack import ANTHROPIC_MODEL, AUTO_ROUTE, DEMO_KEY, LOCAL_MODEL, TEAM_B_KEY
from policies.keys import hash_key
from router.difficulty import DifficultyClassifier
from tests.conftest import ThreadedStack

EASY = "hi, how are you?"
HARD = ("Let $f(x) = x^3 - 3x + 1$. Find the number of real roots of $f(f(x)) = 0$ and prove your "
        "answer rigorously, then generalise to $f^{(n)}(x) = 0$.")
STRICT_KEY = "sy-strict-key"


@pytest.fixture(scope="module")
def scores() -> tuple[float, float]:
    classifier = DifficultyClassifier.load()
    easy, hard = classifier.score(EASY), classifier.score(HARD)
    assert hard > easy + 0.1, "the shipped classifier must tell these two apart"
    return easy, hard


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory, scores: tuple[float, float]) -> Iterator[ThreadedStack]:
    easy, hard = scores

    def edit(document: dict[str, Any]) -> None:
        route = document["routes"][AUTO_ROUTE]
        route.pop("strong_share", None)  # the demo's route names a share; these tests a threshold
        route["threshold"] = (easy + hard) / 2
        # a tenant whose key sends everything to the strong tier
        document["tenants"]["strict"] = {"models": [AUTO_ROUTE], "keys": [
            {"name": "strict", "sha256": hash_key(STRICT_KEY), "route_thresholds": {AUTO_ROUTE: 0.0}}]}

    stack = ThreadedStack(tmp_path_factory.mktemp("tiers"), sglang_workers=1, edit_policy=edit)
    yield stack
    stack.close()


def ask(stack: ThreadedStack, text: str, key: str = DEMO_KEY, **options: Any) -> tuple[str, dict[str, str]]:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=AUTO_ROUTE, messages=[{"role": "user", "content": text}], max_tokens=4, **options)
    return raw.parse().model, dict(raw.headers)


def test_easy_goes_cheap_and_hard_goes_strong(routed: ThreadedStack, scores: tuple[float, float]) -> None:
    model, headers = ask(routed, EASY)
    assert (model, headers["x-switchyard-model"], headers["x-switchyard-tier"]) == (LOCAL_MODEL, LOCAL_MODEL, "cheap")
    assert float(headers["x-switchyard-difficulty"]) == pytest.approx(scores[0], abs=1e-3)
    model, headers = ask(routed, HARD)
    assert (model, headers["x-switchyard-tier"]) == (ANTHROPIC_MODEL, "strong")


def test_streamed_request_is_routed_too(routed: ThreadedStack) -> None:
    client = openai.OpenAI(base_url=routed.url + "/v1", api_key=DEMO_KEY, max_retries=0)
    chunks = list(client.chat.completions.create(
        model=AUTO_ROUTE, messages=[{"role": "user", "content": HARD}], max_tokens=4, stream=True))
    assert {c.model for c in chunks} == {ANTHROPIC_MODEL}


def test_header_forces_a_tier(routed: ThreadedStack) -> None:
    model, headers = ask(routed, HARD, extra_headers={"x-switchyard-tier": "cheap"})
    assert (model, headers["x-switchyard-tier"]) == (LOCAL_MODEL, "cheap")
    assert "x-switchyard-difficulty" not in headers, "a forced tier does not run the classifier"
    response = httpx.post(routed.url + "/v1/chat/completions", headers={
        "authorization": f"Bearer {DEMO_KEY}", "x-switchyard-tier": "medium"},
        json={"model": AUTO_ROUTE, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "x-switchyard-tier"


def test_key_threshold_overrides_the_route(routed: ThreadedStack) -> None:
    model, headers = ask(routed, EASY, key=STRICT_KEY)
    assert (model, headers["x-switchyard-tier"]) == (ANTHROPIC_MODEL, "strong")


def test_route_is_listed_and_permissioned(routed: ThreadedStack) -> None:
    listed = {m.id for m in openai.OpenAI(base_url=routed.url + "/v1", api_key=DEMO_KEY).models.list()}
    assert AUTO_ROUTE in listed
    with pytest.raises(openai.PermissionDeniedError):
        ask(routed, EASY, key=TEAM_B_KEY)


def test_broken_model_file_is_a_clear_error_and_not_ready(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    stack = ThreadedStack(tmp_path, sglang_workers=1, settings_overrides={"classifier_path": broken})
    try:
        ready = httpx.get(stack.url + "/readyz")
        assert ready.status_code == 503
        detail = ready.json()["detail"]
        assert "routes.auto" in detail and "broken.onnx" in detail and "not a valid ONNX model" in detail
        response = httpx.post(stack.url + "/v1/chat/completions", headers={"authorization": f"Bearer {DEMO_KEY}"},
                              json={"model": LOCAL_MODEL, "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == 503, "never a silent fallback"
    finally:
        stack.close()

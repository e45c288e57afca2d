"""The per-backend parameter table: complete against OpenAI's spec, applied, documented."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from backends.errors import UnsupportedError
from backends.params import (
    CHAT_PARAMS,
    CHAT_TABLE,
    KINDS,
    TEXT_PARAMS,
    TEXT_TABLE,
    Action,
    fit_params,
    render_markdown,
    with_table,
)
from backends.types import ChatRequest
from gateway.wire import parse_chat, parse_text

ROOT = Path(__file__).resolve().parents[3]
VENDORED_SPEC = ROOT / "tests" / "contracts" / "openai" / "openapi.trimmed.json"
SHARED_SPEC = ROOT.parent / "shared" / "contracts" / "openai-openapi" / "openapi.json"


def _spec() -> dict[str, Any]:
    for path in (VENDORED_SPEC, SHARED_SPEC):
        if path.exists():
            loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return loaded
    pytest.skip("no OpenAI spec: neither tests/contracts/openai/openapi.trimmed.json nor "
                "../shared/contracts/openai-openapi/openapi.json is present")


def _properties(spec: dict[str, Any], name: str) -> set[str]:
    schemas = spec["components"]["schemas"]
    schema = schemas[name]
    out: set[str] = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        ref = part.get("$ref")
        out |= _properties(spec, ref.rsplit("/", 1)[-1]) if ref else set(part.get("properties", {}))
    return out


@pytest.mark.parametrize(("schema", "params", "table"), [
    ("CreateChatCompletionRequest", CHAT_PARAMS, CHAT_TABLE),
    ("CreateCompletionRequest", TEXT_PARAMS, TEXT_TABLE),
])
def test_every_spec_property_has_an_entry_for_every_kind(
    schema: str, params: tuple[str, ...], table: Any
) -> None:
    assert _properties(_spec(), schema) == set(params)
    for name in params:
        assert set(table[name]) == set(KINDS), name
        for kind in KINDS:
            rule = table[name][kind]
            assert rule.action is Action.PASSED or rule.note, f"{name}/{kind} says why"


def test_docs_api_md_carries_the_generated_table() -> None:
    doc = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert with_table(doc) == doc, "docs/api.md is stale: run python -m backends.params docs/api.md"
    assert "| `reasoning_effort` |" in render_markdown()


def chat(**fields: Any) -> ChatRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return parse_chat(msgspec.json.encode(body))


@pytest.mark.parametrize(("fields", "param"), [
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"temperature": 1.5}, "temperature"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"service_tier": "flex"}, "service_tier"),
    ({"modalities": ["text", "audio"]}, "modalities"),
])
def test_anthropic_refuses_with_the_parameter_and_the_kind(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedError) as info:
        fit_params(chat(**fields), "anthropic")
    assert info.value.param == param and info.value.status_code == 400
    assert f"'{param}'" in info.value.message and "anthropic" in info.value.message
    fitted = fit_params(chat(**fields), "anthropic", drop_unsupported=True)
    sent = msgspec.json.decode(msgspec.json.encode(fitted.params))
    assert param not in sent and param not in fitted.extra
    assert fit_params(chat(**fields), "openai") is not None  # OpenAI takes every one of them


def test_values_that_ask_for_nothing_are_left_out_not_refused() -> None:
    fitted = fit_params(chat(n=1, logprobs=False, presence_penalty=0, modalities=["text"],
                             temperature=0.7, top_p=0.9), "anthropic")
    assert fitted.params.temperature == 0.7 and fitted.params.n == 1  # translated later
    assert "modalities" not in fitted.extra and fitted.params.presence_penalty is msgspec.UNSET


def test_dropped_parameters_never_reach_the_backend() -> None:
    request = chat(store=True, metadata={"team": "a"}, seed=3, prompt_cache_key="k", verbosity="low",
                   top_k=5)
    fitted = fit_params(request, "anthropic")
    assert fitted.extra == {"top_k": 5}, "unknown extras stay; OpenAI-only ones go"
    assert fitted.params.seed is msgspec.UNSET
    sglang = fit_params(request, "sglang")
    assert sglang.extra == {"top_k": 5} and sglang.params.seed == 3
    assert fit_params(request, "openai").extra == request.extra


def test_explicit_nulls_of_unknown_fields_are_dropped() -> None:
    fitted = fit_params(chat(metadata=None, logit_bias=None), "anthropic")
    assert "metadata" not in fitted.extra and fitted.params.logit_bias is msgspec.UNSET


def test_sglang_refuses_what_it_would_silently_ignore() -> None:
    with pytest.raises(UnsupportedError, match="sglang"):
        fit_params(chat(audio={"voice": "alloy", "format": "wav"}, modalities=["text", "audio"]), "sglang")
    fitted = fit_params(chat(reasoning_effort="low", response_format={"type": "json_object"}), "sglang")
    assert fitted.extra.get("reasoning_effort", getattr(fitted.params, "reasoning_effort", None)) == "low"


def test_a_route_refuses_what_either_tier_refuses() -> None:
    request = chat(logit_bias={"1": 1})
    assert fit_params(request, "sglang") is request
    with pytest.raises(UnsupportedError, match="anthropic"):
        fit_params(request, "sglang", also_check=[("sglang", False), ("anthropic", False)])
    # a tier that drops what it cannot take does not make the other tier refuse
    assert fit_params(request, "sglang", also_check=[("anthropic", True)]) is request


def test_text_completions_on_anthropic_are_refused_by_the_table() -> None:
    request = parse_text(b'{"model": "m", "prompt": "hi"}')
    with pytest.raises(UnsupportedError, match="anthropic"):
        fit_params(request, "anthropic")
    assert fit_params(request, "sglang") is request

"""The simulated SGLang worker's control routes have SGLang 0.5.23's shapes.

Checked against the control fixtures generated from SGLang's own code
(``tests/contracts/sglang/fixtures/control/``): every key, metric family and label name the sim
emits is one SGLang emits, with the same JSON or metric type; the API key guards the same paths.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backends.sim import SimConfig, start_sim

CONTROL = Path(__file__).resolve().parent / "sglang" / "fixtures" / "control"
KEY = "sk-sim-key"


def _fixture(name: str) -> Any:
    return json.loads((CONTROL / name).read_text(encoding="utf-8"))


def _same_kinds(ours: dict[str, Any], theirs: dict[str, Any], where: str) -> None:
    """Every key of ``ours`` is one of ``theirs``, with the same JSON type (null fits any)."""
    unknown = sorted(set(ours) - set(theirs))
    assert not unknown, f"{where}: SGLang has no {unknown}"
    for key, value in ours.items():
        other = theirs[key]
        if value is None or other is None:
            continue
        kinds = (type(value), type(other))
        assert kinds[0] is kinds[1] or set(kinds) <= {int, float}, f"{where}.{key}: {kinds}"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    sim = await start_sim(SimConfig(zero_latency=True, api_key=KEY, enable_metrics=True,
                                    enable_priority_scheduling=True))
    try:
        async with httpx.AsyncClient(base_url=sim.url,
                                     headers={"authorization": f"Bearer {KEY}"}) as client:
            await client.post("/v1/chat/completions", json={
                "model": "sim-model", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
            yield client
    finally:
        await sim.aclose()


async def test_server_and_model_info(http: httpx.AsyncClient) -> None:
    theirs = _fixture("server_info_enabled.json")
    for path in ("/server_info", "/get_server_info"):
        ours = (await http.get(path)).json()
        _same_kinds(ours, theirs, path)
        _same_kinds(ours["internal_states"][0], theirs["internal_states"][0], path + " internal_states")
        assert {"max_total_num_tokens", "enable_metrics", "enable_cache_report"} <= set(ours)
    for path in ("/model_info", "/get_model_info"):
        ours = (await http.get(path)).json()
        assert set(ours) == set(_fixture("model_info.json")), path
        _same_kinds(ours, _fixture("model_info.json"), path)


async def test_v1_loads(http: httpx.AsyncClient) -> None:
    ours, theirs = (await http.get("/v1/loads")).json(), _fixture("loads.json")
    assert set(ours) == set(theirs)
    _same_kinds(ours, theirs, "/v1/loads")
    assert set(ours["loads"][0]) == set(theirs["loads"][0])  # the core fields, all of them
    _same_kinds(ours["loads"][0], theirs["loads"][0], "/v1/loads loads[0]")


async def test_metrics_families_types_and_labels(http: httpx.AsyncClient) -> None:
    theirs = {f.name: f for f in text_string_to_metric_families(
        (CONTROL / "metrics_priority.prom").read_text(encoding="utf-8"))}
    response = await http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    ours = list(text_string_to_metric_families(response.text))
    assert {"sglang:num_running_reqs", "sglang:num_queue_reqs"} <= {f.name for f in ours}
    for family in ours:
        assert family.name in theirs, family.name
        assert family.type == theirs[family.name].type, family.name
        label_sets = {frozenset(s.labels) for s in theirs[family.name].samples}
        for sample in family.samples:
            assert frozenset(sample.labels) in label_sets, (sample.name, sample.labels)
        priorities = {s.labels.get("priority") for s in family.samples}
        if family.name == "sglang:num_queue_reqs":
            assert priorities == {"", "0"}  # the total and the breakdown, as SGLang writes them


async def test_the_api_key_guards_what_sglang_guards(http: httpx.AsyncClient) -> None:
    auth = _fixture("auth.json")
    served = ("/health", "/health_generate", "/metrics", "/server_info", "/get_server_info",
              "/model_info", "/get_model_info", "/v1/loads", "/v1/models")
    async with httpx.AsyncClient(base_url=str(http.base_url)) as anonymous:
        for path in served:
            response = await anonymous.get(path)
            assert response.status_code == auth["without_key"][path], path
            if response.status_code == 401:
                assert response.json() == auth["unauthorized_body"], path


async def test_metrics_is_served_only_with_enable_metrics() -> None:
    sim = await start_sim(SimConfig(zero_latency=True))
    try:
        async with httpx.AsyncClient(base_url=sim.url) as client:
            assert (await client.get("/metrics")).status_code == 404
            assert (await client.get("/v1/loads")).status_code == 200
            info = (await client.get("/server_info")).json()
            assert info["enable_metrics"] is False and info["enable_cache_report"] is False
    finally:
        await sim.aclose()

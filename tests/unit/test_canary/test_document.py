"""Versions, stable and canary in the policy document: schema and reference checks."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from policies.document import DEFAULT_VERSION
from policies.loader import PolicyError, parse_policy
from tests.unit.test_canary._support import canary_policy


def problems(models: dict[str, Any]) -> list[tuple[str, str]]:
    doc = {"backends": {"api": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}}, "models": models}
    with pytest.raises(PolicyError) as info:
        parse_policy(yaml.safe_dump(doc))
    return info.value.problems


V = {"v1": {"deployments": [{"backend": "api", "model": "a"}]},
     "v2": {"deployments": [{"backend": "api", "model": "b"}]}}


def test_plain_deployments_are_one_implicit_version() -> None:
    model = canary_policy().models["other"]
    assert model.stable_version == DEFAULT_VERSION
    assert list(model.version_deployments()) == [DEFAULT_VERSION]
    assert model.version_deployments()[DEFAULT_VERSION][0].model == "o"


def test_versions_with_a_planned_canary() -> None:
    model = canary_policy({"version": "v2", "plan": {}}).models["chat"]
    assert model.stable_version == "v1" and model.deployments == []
    assert {n: [d.model for d in ds] for n, ds in model.version_deployments().items()} == {"v1": ["m-1"], "v2": ["m-2"]}
    assert model.canary is not None and model.canary.plan is not None
    assert model.canary.plan.steps == [0.01, 0.05, 0.25, 0.5, 1.0]
    assert model.canary.plan.guards.confidence == 0.95


def test_stable_and_canary_must_name_versions() -> None:
    assert problems({"m": {"versions": V, "stable": "v9", "canary": {"version": "v8", "weight": 0.1}}}) == [
        ("models.m.stable", "no version named 'v9'"), ("models.m.canary.version", "no version named 'v8'")]


def test_canary_is_not_stable() -> None:
    assert problems({"m": {"versions": V, "stable": "v1", "canary": {"version": "v1", "weight": 0.1}}}) == [
        ("models.m.canary.version", "the canary must be another version than stable")]


def test_version_deployments_name_backends() -> None:
    versions = {**V, "v3": {"deployments": [{"backend": "nowhere", "model": "c"}]}}
    assert problems({"m": {"versions": versions, "stable": "v1"}}) == [
        ("models.m.versions.v3.deployments[0].backend", "no backend named 'nowhere'")]


@pytest.mark.parametrize(("model", "message"), [
    ({"deployments": V["v1"]["deployments"], "versions": V, "stable": "v1"}, "not both"),
    ({"versions": V}, "needs stable"),
    ({}, "give deployments"),
    ({"deployments": V["v1"]["deployments"], "canary": {"version": "v2", "weight": 0.1}}, "give versions"),
    ({"versions": V, "stable": "v1", "canary": {"version": "v2", "weight": 0.1, "plan": {}}}, "not both"),
    ({"versions": V, "stable": "v1", "canary": {"version": "v2"}}, "give weight"),
    ({"versions": V, "stable": "v1", "canary": {"version": "v2", "shadow": True, "weight": 0.2}}, "shadow"),
    ({"versions": V, "stable": "v1", "canary": {"version": "v2", "plan": {"steps": [0.5, 0.2]}}}, "increase"),
    ({"versions": V, "stable": "v1", "canary": {"version": "v2", "plan": {"steps": [0, 1]}}}, "(0, 1]"),
    ({"versions": {"v 1": V["v1"]}, "stable": "v 1"}, "version name"),
])
def test_invalid_shapes_name_the_model(model: dict[str, Any], message: str) -> None:
    found = problems({"m": model})
    assert any(path.startswith("models.m") and message in text for path, text in found), found


def test_guards_can_be_turned_off() -> None:
    policy = canary_policy({"version": "v2", "plan": {"guards": {"ttft_p95_ratio": None}}})
    plan = policy.models["chat"].canary.plan  # type: ignore[union-attr]
    assert plan is not None and plan.guards.ttft_p95_ratio is None

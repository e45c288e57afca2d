from __future__ import annotations

from pathlib import Path

import pytest

from policies.loader import PolicyError, load_policy, parse_policy

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "policy.yaml"
HASH = "7e57755c8e59e7124c3f239e1920788fb05387f253981dd59a9ca028a5e96d74"


def minimal(**overrides: str) -> str:
    doc = f"""
backends:
  local:
    kind: sglang
    workers: [{overrides.get('url', 'http://127.0.0.1:30000')}]
models:
  fast:
    deployments:
      - backend: {overrides.get('backend', 'local')}
        model: m
tenants:
  t:
    models: [{overrides.get('tenant_model', 'fast')}]
    keys: [{{name: k, sha256: {overrides.get('sha', HASH)}}}]
"""
    return doc


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    return info.value.problems


def test_example_policy_is_valid() -> None:
    policy = load_policy(EXAMPLE)
    assert set(policy.models) == {"llama-3.1-8b", "gpt-4o-mini", "claude-sonnet"}
    assert policy.backends["local-llama"].kind == "sglang"


def test_minimal_policy_parses() -> None:
    policy = parse_policy(minimal())
    assert policy.models["fast"].deployments[0].backend == "local"


def test_bad_worker_url_names_the_path() -> None:
    [(path, message)] = problems(minimal(url="not-a-url"))
    assert path == "backends.local.workers[0]"
    assert "URL" in message


def test_unknown_field_is_an_error() -> None:
    found = problems(minimal().replace("kind: sglang", "kind: sglang\n    colour: blue"))
    assert found == [("backends.local.colour", "Extra inputs are not permitted")]


def test_unknown_backend_kind() -> None:
    found = problems(minimal().replace("kind: sglang", "kind: tgi"))
    assert found[0][0] == "backends.local"
    assert "sglang" in found[0][1]


def test_deployment_must_name_a_backend() -> None:
    assert problems(minimal(backend="nowhere")) == [
        ("models.fast.deployments[0].backend", "no backend named 'nowhere'")]


def test_tenant_must_name_a_model() -> None:
    assert problems(minimal(tenant_model="slow")) == [("tenants.t.models", "no model or route named 'slow'")]


def test_key_hash_must_be_hex_digest() -> None:
    [(path, message)] = problems(minimal(sha="plain-key"))
    assert path == "tenants.t.keys[0].sha256"
    assert "switchyard keys hash" in message


def test_duplicate_key_across_tenants() -> None:
    text = minimal() + f"  u:\n    keys: [{{name: k2, sha256: {HASH}}}]\n"
    [(path, message)] = problems(text)
    assert path == "tenants.u.keys[0].sha256"
    assert "tenants.t.keys[0].sha256" in message


def test_invalid_yaml_reports_line() -> None:
    [(path, message)] = problems("backends: [unclosed")
    assert path.startswith("line ")
    assert "YAML" in message


def test_not_a_mapping() -> None:
    assert problems("- a\n- b\n")[0][0] == "(document)"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "absent.yaml")
    assert info.value.problems[0][0] == "(file)"


def test_message_lists_every_problem() -> None:
    text = minimal(url="nope", backend="nowhere")
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source="p.yaml")
    assert info.value.message.startswith("p.yaml is not a valid policy:")
    assert "backends.local.workers[0]" in info.value.message

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli import main
from policies.diff import Change, diff_policies, redact, render_changes
from policies.document import Policy
from policies.keys import hash_key

DEMO_HASH = hash_key("sy-demo-key")
TEAM_HASH = hash_key("sy-team-b-key")


def base() -> dict[str, Any]:
    return {
        "version": "1",
        "backends": {
            "local": {"kind": "sglang", "workers": ["http://a:30000", "http://b:30000"]},
            "openai": {"kind": "openai", "base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY"},
        },
        "models": {
            "llama": {"deployments": [{"backend": "local", "model": "m"}],
                      "prices": {"input": 0.1, "output": 0.2}},
            "gpt-4o-mini": {"deployments": [{"backend": "openai", "model": "gpt-4o-mini"}]},
        },
        "routes": {"auto": {"cheap": "llama", "strong": "gpt-4o-mini", "threshold": 0.4}},
        "tenants": {
            "demo": {"models": ["*"], "keys": [{"name": "demo-key", "sha256": DEMO_HASH}]},
            "team-b": {"models": ["llama", "gpt-4o-mini"], "rate_limits": {"rpm": 600},
                       "keys": [{"name": "team-b-key", "sha256": TEAM_HASH}]},
        },
    }


def changes_after(edit: Callable[[dict[str, Any]], None]) -> list[Change]:
    old = base()
    new = copy.deepcopy(old)
    edit(new)
    return diff_policies(Policy.model_validate(old), Policy.model_validate(new))


def only(changes: list[Change]) -> Change:
    assert len(changes) == 1, changes
    return changes[0]


def test_identical_policies_have_no_changes() -> None:
    assert changes_after(lambda doc: None) == []
    assert render_changes([]) == "no changes"


def test_spelling_out_a_default_is_no_change() -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["backends"]["local"]["selection"] = {"type": "round_robin"}
        doc["backends"]["local"]["health_path"] = "/health"
    assert changes_after(edit) == []


def test_worker_leaving_and_joining_a_pool() -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["backends"]["local"]["workers"] = ["http://a:30000", "http://c:30000"]
    removed, added = changes_after(edit)
    assert (removed.path, removed.kind, removed.old) == ("backends.local.workers", "removed", "http://b:30000/")
    assert removed.meaning == ("worker http://b:30000 leaves pool local: its cached prefixes move to "
                               "other workers")
    assert added.kind == "added" and added.new == "http://c:30000/"
    assert "joins pool local" in added.meaning and "empty prefix cache" in added.meaning


def test_reordered_workers_is_one_change() -> None:
    change = only(changes_after(lambda doc: doc["backends"]["local"]["workers"].reverse()))
    assert change.kind == "changed" and "reordered" in change.meaning


def test_switching_selection_is_one_change_not_the_new_defaults() -> None:
    change = only(changes_after(
        lambda doc: doc["backends"]["local"].update(selection={"type": "cache_aware"})))
    assert change.path == "backends.local.selection"
    assert change.old["type"] == "round_robin" and change.new["type"] == "cache_aware"
    assert change.meaning.startswith("pool local picks workers by cache_aware instead of round_robin")
    assert "more prefix-cache hits" in change.meaning
    # shown as what differs, not the fields both variants share
    assert "~ backends.local.selection: {type: round_robin} -> {type: cache_aware, balance_abs_threshold: 16" \
        in render_changes([change])


def test_tuning_selection_reports_the_field() -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["backends"]["local"]["selection"] = {"type": "cache_aware"}
    old = base()
    edit(old)
    new = copy.deepcopy(old)
    new["backends"]["local"]["selection"]["balance_abs_threshold"] = 32
    change = only(diff_policies(Policy.model_validate(old), Policy.model_validate(new)))
    assert change.path == "backends.local.selection.balance_abs_threshold"
    assert (change.old, change.new) == (16, 32)


@pytest.mark.parametrize(("threshold", "effect"), [(0.5, "fewer"), (0.3, "more")])
def test_route_threshold_direction(threshold: float, effect: str) -> None:
    change = only(changes_after(lambda doc: doc["routes"]["auto"].update(threshold=threshold)))
    assert change.path == "routes.auto.threshold"
    assert change.meaning == (f"route auto threshold 0.4 -> {threshold:g}: {effect} requests to the "
                              "strong model (gpt-4o-mini)")


def test_tenant_threshold_override() -> None:
    change = only(changes_after(lambda doc: doc["tenants"]["demo"].update(route_thresholds={"auto": 0.6})))
    assert change.path == "tenants.demo.route_thresholds.auto" and change.kind == "added"
    assert change.meaning == "tenant demo gets its own threshold 0.6 on route auto"


def test_tenant_loses_and_gains_models() -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["tenants"]["team-b"]["models"] = ["llama"]
        doc["tenants"]["demo"]["models"] = ["llama"]
    changes = changes_after(edit)
    meanings = [c.meaning for c in changes]
    assert meanings == ["tenant demo loses every model ('*')", "tenant demo gains model llama",
                        "tenant team-b loses model gpt-4o-mini"]


def test_key_revoked_added_and_rotated_never_show_a_full_hash() -> None:
    new_hash = hash_key("another")

    def edit(doc: dict[str, Any]) -> None:
        doc["tenants"]["demo"]["keys"] = [{"name": "ci-key", "sha256": new_hash}]
        doc["tenants"]["team-b"]["keys"][0]["sha256"] = hash_key("rotated")
    changes = changes_after(edit)
    by_path = {c.path: c for c in changes}
    assert by_path["tenants.demo.keys[demo-key]"].meaning == "key demo-key of tenant demo revoked"
    assert by_path["tenants.demo.keys[ci-key]"].meaning == f"key ci-key added to tenant demo (sha256 {new_hash[:8]}...)"
    rotated = by_path["tenants.team-b.keys[team-b-key].sha256"]
    assert rotated.old == TEAM_HASH[:8] + "..." and "rotated" in rotated.meaning
    text = render_changes(changes)
    for digest in (DEMO_HASH, TEAM_HASH, new_hash, hash_key("rotated")):
        assert digest not in text and digest[:8] in text


def test_rate_limits_tightened_loosened_added_removed() -> None:
    tightened = only(changes_after(lambda doc: doc["tenants"]["team-b"]["rate_limits"].update(rpm=60)))
    assert tightened.meaning == "rate limit rpm of tenant team-b 600 -> 60: tightened"
    loosened = only(changes_after(lambda doc: doc["tenants"]["team-b"]["rate_limits"].update(rpm=6000)))
    assert loosened.meaning.endswith("loosened")
    added = only(changes_after(
        lambda doc: doc["tenants"]["demo"]["keys"][0].update(rate_limits={"tpm": 1000})))
    assert added.path == "tenants.demo.keys[demo-key].rate_limits"
    assert added.meaning.startswith("rate limit added for key demo/demo-key")
    removed = only(changes_after(lambda doc: doc["tenants"]["team-b"].pop("rate_limits")))
    assert removed.meaning == "rate limit removed for tenant team-b: no longer capped"


def test_budget_tightened() -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["tenants"]["demo"]["budgets"] = {"daily_usd": 5.0}
    old = base()
    edit(old)
    new = copy.deepcopy(old)
    new["tenants"]["demo"]["budgets"]["daily_usd"] = 2.5
    change = only(diff_policies(Policy.model_validate(old), Policy.model_validate(new)))
    assert change.meaning == "budget daily_usd of tenant demo 5 -> 2.5: tightened"


def test_models_routes_tenants_added_and_removed() -> None:
    def edit(doc: dict[str, Any]) -> None:
        del doc["routes"]["auto"]
        del doc["tenants"]["team-b"]
        doc["tenants"]["team-c"] = {"models": ["llama"], "keys": [{"name": "k", "sha256": hash_key("c")}]}
    changes = changes_after(edit)
    assert [(c.path, c.kind) for c in changes] == [
        ("routes.auto", "removed"), ("tenants.team-b", "removed"), ("tenants.team-c", "added")]
    assert changes[1].meaning == "tenant team-b removed: its 1 key(s) stop working"
    assert changes[2].new["keys"][0]["sha256"] == hash_key("c")[:8] + "..."


def test_deployments_and_prices() -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["models"]["llama"]["deployments"].append({"backend": "openai", "model": "gpt-4o-mini"})
        doc["models"]["llama"]["prices"]["input"] = 0.2
    deployments, price = changes_after(edit)
    assert deployments.meaning == ("model llama served by local:m -> openai:gpt-4o-mini (was local:m; "
                                   "first healthy wins)")
    assert price.meaning == "input price of model llama $0.1 -> $0.2 per million tokens: dearer"


def test_unknown_paths_get_a_generic_meaning() -> None:
    change = only(changes_after(lambda doc: doc["backends"]["local"].update(health_interval_s=2)))
    assert change.path == "backends.local.health_interval_s"
    assert change.meaning == "backends.local.health_interval_s 5 -> 2"


def test_render_groups_by_section() -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["tenants"]["team-b"]["rate_limits"]["rpm"] = 60
        doc["backends"]["local"]["workers"].pop()
        doc["routes"]["auto"]["threshold"] = 0.5
    text = render_changes(changes_after(edit))
    lines = text.splitlines()
    assert [line for line in lines if not line.startswith(" ")] == ["backends", "routes", "tenants", "3 changes"]
    assert "  - backends.local.workers: http://b:30000/" in lines
    assert "  ~ routes.auto.threshold: 0.4 -> 0.5" in lines


def test_redact_only_touches_digests() -> None:
    assert redact({"a": [DEMO_HASH, "short"], "b": 3}) == {"a": [DEMO_HASH[:8] + "...", "short"], "b": 3}


# --- the command --------------------------------------------------------------------------


def write(path: Path, doc: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return str(path)


def test_cli_policy_diff_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = write(tmp_path / "old.yaml", base())
    assert main(["policy", "diff", old, old]) == 0
    assert "no changes" in capsys.readouterr().out

    doc = base()
    doc["version"] = "2"
    doc["routes"]["auto"]["threshold"] = 0.5
    doc["tenants"]["demo"]["keys"] = []
    new = write(tmp_path / "new.yaml", doc)
    assert main(["policy", "diff", old, new]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"--- {old} (version 1)\n+++ {new} (version 2)\n")
    assert "fewer requests to the strong model" in out and "key demo-key of tenant demo revoked" in out
    assert DEMO_HASH not in out

    doc["routes"]["auto"]["cheap"] = "nothing"
    broken = write(tmp_path / "broken.yaml", doc)
    assert main(["policy", "diff", old, broken]) == 2
    assert "routes.auto.cheap: no model named 'nothing'" in capsys.readouterr().err

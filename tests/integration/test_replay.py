"""``switchyard replay`` end to end: sample traffic, sandboxes of simulators, the printed comparison."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli import main
from gateway.replay.sample import SampleOptions, generate
from gateway.replay.traffic import TrafficError, parse_line, read_traffic

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"
FAST = ["--speed", "0", "--warmup", "0", "--sim-itl-ms", "1", "--sim-prefill-us-per-token", "20"]


def policy(tmp_path: Path, name: str, edit: Any = None) -> str:
    """The example policy with 4 local workers (addresses the sandbox replaces), edited."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["backends"]["local-llama"]["workers"] = [f"http://10.0.0.{i}:30000" for i in range(1, 5)]
    doc["models"]["llama-3.1-8b"]["prices"] = {"input": 0.1, "cached_input": 0.01, "output": 0.2}
    doc["models"]["claude-sonnet"]["prices"] = {"input": 3.0, "cached_input": 0.3, "output": 15.0}
    if edit is not None:
        edit(doc)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def traffic(tmp_path: Path, conversations: int, extra: list[str] = ()) -> str:  # type: ignore[assignment]
    path = tmp_path / "traffic.jsonl"
    records = generate(SampleOptions(conversations=conversations, seed=1))
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "".join(line + "\n" for line in extra))
    return str(path)


def table_row(out: str, label: str) -> list[str]:
    """The cells of the first table row whose label is ``label`` (columns split on 3+ spaces)."""
    for line in out.splitlines():
        if line.startswith(label + "   "):
            return [cell.strip() for cell in line[len(label):].split("   ") if cell.strip()]
    raise AssertionError(f"no row {label!r} in:\n{out}")


def percent(cell: str) -> float:
    return float(cell.split("%")[0].split("(")[-1])


def test_cache_aware_beats_round_robin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rr = policy(tmp_path, "round-robin.yaml")
    ca = policy(tmp_path, "cache-aware.yaml",
                lambda d: d["backends"]["local-llama"].update(selection={"type": "cache_aware"}))
    no_content = json.dumps({"ts": 1_732_262_401.0, "tenant": "demo", "session": None, "status": 200})
    log = traffic(tmp_path, conversations=14, extra=[no_content])
    assert main(["replay", "--policy", rr, "--compare", ca, "--traffic", log, *FAST]) == 0
    out = capsys.readouterr().out
    assert "(skipped: no content 1)" in out
    assert table_row(out, "policy") == ["round-robin.yaml", "cache-aware.yaml"]
    sent = table_row(out, "answered / sent")
    assert sent[0] == sent[1] and sent[0].split(" / ")[0] == sent[0].split(" / ")[1]
    rr_hits, ca_hits = (percent(c) for c in table_row(out, "  on llama-3.1-8b"))
    assert ca_hits > rr_hits + 5, out
    # both policies route alike: only worker selection differs
    assert table_row(out, "  strong claude-sonnet")[0] == table_row(out, "  strong claude-sonnet")[1]
    workers = [table_row(out, f"  local-llama/{i} http://10.0.0.{i + 1}:30000") for i in range(4)]
    assert all(int(rr_count) > 0 for rr_count, _ in workers)  # round robin used every worker
    ttft = table_row(out, "TTFT p50 / p95 / p99 (ms)")
    assert all(len(cell.split(" / ")) == 3 for cell in ttft)
    assert all(cell.startswith("$") and float(cell[1:]) > 0 for cell in table_row(out, "expected cost (USD)"))


def test_threshold_moves_tier_shares(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def low_threshold(doc: dict[str, Any]) -> None:
        doc["routes"]["auto"]["threshold"] = 0.2
        doc["backends"]["claude"]["api_key_env"] = "OPENAI_API_KEY"  # two backends, one variable
    low = policy(tmp_path, "low.yaml", low_threshold)
    high = policy(tmp_path, "high.yaml", lambda d: d["routes"]["auto"].update(threshold=0.8))
    log = traffic(tmp_path, conversations=8)
    monkeypatch.setenv("OPENAI_API_KEY", "the operator's own")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert main(["replay", "--policy", low, "--compare", high, "--traffic", log, "--json", *FAST]) == 0
    assert os.environ["OPENAI_API_KEY"] == "the operator's own" and "ANTHROPIC_API_KEY" not in os.environ
    report = json.loads(capsys.readouterr().out)
    low_report, high_report = report["policies"]
    assert low_report["rejections"] == high_report["rejections"] == {}
    assert [p["label"] for p in report["policies"]] == ["low.yaml", "high.yaml"]

    def share(p: dict[str, Any], tier: str) -> int:
        return sum(n for key, n in p["decisions"].items() if key.startswith(tier + " "))
    assert share(low_report, "strong") > share(high_report, "strong")
    assert share(low_report, "cheap") < share(high_report, "cheap")
    assert high_report["decisions"].get("strong claude-sonnet", 0) == 0  # no sample turn scores 0.8
    # the strong model is dearer: sending more to it costs more
    assert low_report["cost_usd"] > high_report["cost_usd"]


def test_rejections_and_trims_are_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def tight(doc: dict[str, Any]) -> None:
        doc["tenants"]["demo"]["rate_limits"] = {"rpm": 3, "burst": 1}
        # two-turn prompts fit, later turns lose their oldest turns
        doc["models"]["llama-3.1-8b"]["context"] = {"context_window": 300, "overflow_action": "drop_oldest"}
        doc["tenants"]["ghost"] = {"models": ["*"]}  # no keys of its own: replay adds one
    strict = policy(tmp_path, "strict.yaml", tight)
    unknown = json.dumps({"tenant": "nobody", "model": "llama-3.1-8b",
                          "messages": [{"role": "user", "content": "hi"}]})
    text = json.dumps({"tenant": "ghost", "model": "llama-3.1-8b", "prompt": "Say hi.", "max_tokens": 4})
    log = traffic(tmp_path, conversations=6, extra=[unknown, text])
    assert main(["replay", "--policy", strict, "--traffic", log, "--json", *FAST]) == 0
    (report,) = json.loads(capsys.readouterr().out)["policies"]
    rejections = report["rejections"]
    assert rejections["429 rate_limit_exceeded"] >= 1
    assert rejections["401 invalid_api_key"] == 1  # a tenant the policy does not know
    assert report["trimmed_requests"] >= 1 and report["trimmed_tokens"] > 0
    assert report["answered"] + sum(rejections.values()) == report["sent"]
    assert report["decisions"]["direct llama-3.1-8b"] >= 1


def test_malformed_line_names_its_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "bad.jsonl"
    good = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    log.write_text(f"{good}\n\n{{\"model\": \"auto\", \"messages\": [{{\"content\": \"no role\"}}]}}\n")
    assert main(["replay", "--policy", str(EXAMPLE), "--traffic", str(log)]) == 2
    err = capsys.readouterr().err
    assert f"{log}, line 3: Object missing required field `role` - at `request.messages[0]`" in err

    log.write_text(f"{good}\nnot json\n")
    assert main(["replay", "--policy", str(EXAMPLE), "--traffic", str(log)]) == 2
    assert "line 2: not valid JSON" in capsys.readouterr().err


def test_invalid_policy_is_refused_before_anything_starts(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    broken = policy(tmp_path, "broken.yaml", lambda d: d["routes"]["auto"].update(cheap="nothing"))
    assert main(["replay", "--policy", str(EXAMPLE), "--compare", broken,
                 "--traffic", traffic(tmp_path, 1)]) == 2
    assert "routes.auto.cheap: no model named 'nothing'" in capsys.readouterr().err


# --- reading traffic ----------------------------------------------------------------------


@pytest.mark.parametrize(("line", "tenant", "session", "endpoint"), [
    (('{"ts": 1.5, "tenant": "demo", "session": "s1", "request": {"model": "m", "messages": '
     '[{"role": "user", "content": "hi"}]}, "status": 200}'), "demo", "s1", "chat"),
    ('{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}', None, None, "chat"),
    ('{"tenant": "t", "model": "m", "prompt": "hi"}', "t", None, "text"),
    ('{"tenant": "t", "request": {"model": "m", "prompt": ["a", "b"]}}', "t", None, "text"),
])
def test_traffic_line_formats(line: str, tenant: str | None, session: str | None, endpoint: str) -> None:
    request = parse_line(line, 7)
    assert request is not None
    assert (request.tenant, request.session, request.endpoint, request.line) == (tenant, session, endpoint, 7)
    assert "tenant" not in request.body and request.body["model"] == "m"


def test_access_record_without_content_is_skipped() -> None:
    assert parse_line('{"ts": 1.0, "tenant": "demo", "status": 429}', 1) is None
    with pytest.raises(TrafficError, match="line 4: neither a request body"):
        parse_line('{"hello": 1}', 4)
    with pytest.raises(TrafficError, match=r"line 2: Expected `float \| null`, got `str` - at `ts`"):
        parse_line('{"ts": "yesterday", "request": {"model": "m", "prompt": "x"}}', 2)


def test_read_traffic_limit_and_empty(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    path.write_text(f"{body}\n{body}\nbroken line after the limit\n")
    traffic = read_traffic(path, limit=2)
    assert len(traffic.requests) == 2 and not traffic.is_timed
    path.write_text('{"ts": 1.0, "tenant": "demo"}\n')
    with pytest.raises(TrafficError, match="no request to replay"):
        read_traffic(path)


def test_help_states_the_simulator_defaults() -> None:
    from gateway.cli import build_parser
    from gateway.replay import DEFAULT_SIM

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help or "" for a in commands.choices["replay"]._actions}
    assert f"(default: {DEFAULT_SIM.capacity_tokens})" in helps["sim_capacity_tokens"]
    assert f"(default: {DEFAULT_SIM.prefill_us_per_token:g})" in helps["sim_prefill_us_per_token"]
    assert f"(default: {DEFAULT_SIM.itl_ms:g})" in helps["sim_itl_ms"]


def test_tier_stickiness_keeps_conversations_on_one_tier(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The same multi-turn traffic with per-request decisions and per-conversation ones: the
    replay shows the strong share, the cached tokens and the tier switches of each."""
    def route(sticky: bool) -> Any:
        def edit(doc: dict[str, Any]) -> None:
            # openings score 0.52-0.75 and later turns 0.70-0.79 with the shipped classifier:
            # per request, conversations that open easy turn strong on a later turn
            doc["routes"]["auto"].update(threshold=0.72, sticky=sticky)
            doc["backends"]["claude"]["api_key_env"] = "OPENAI_API_KEY"
        return edit
    per_request = policy(tmp_path, "per-request.yaml", route(False))
    sticky = policy(tmp_path, "sticky.yaml", route(True))
    log = traffic(tmp_path, conversations=20)
    monkeypatch.setenv("OPENAI_API_KEY", "the operator's own")
    assert main(["replay", "--policy", per_request, "--compare", sticky, "--traffic", log, *FAST]) == 0
    out = capsys.readouterr().out
    switches = table_row(out, "tier switches (conversations switching / routed)")
    flips, held = (int(cell.split(" ")[0]) for cell in switches)
    assert flips > 0, out
    assert held < flips, out
    assert table_row(out, "  cached / prompt tokens")  # cached tokens beside it, per policy

"""Reading an SGLang worker's load and capabilities from what SGLang 0.5.23 itself emits.

The inputs are the control fixtures generated from SGLang's own collectors and load snapshot
(``tests/contracts/sglang/fixtures/control/``), not text written to suit the parser.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from backends.sglang import capabilities, capability_gaps, parse_load, parse_loads
from backends.types import Health

CONTROL = Path(__file__).resolve().parents[2] / "contracts" / "sglang" / "fixtures" / "control"


def _fixture(name: str) -> str:
    return (CONTROL / name).read_text(encoding="utf-8")


def test_a_priority_broken_down_queue_is_counted_once() -> None:
    # the fixture's worker runs 3 and queues 4, under --enable-priority-scheduling as well
    assert parse_load(_fixture("metrics.prom")) == (3, 4)
    assert parse_load(_fixture("metrics_priority.prom")) == (3, 4)  # not (6, 8)
    # a worker that sent only the breakdown (no priority="" total): its sum
    breakdown_only = "\n".join(line for line in _fixture("metrics_priority.prom").splitlines()
                               if 'priority=""' not in line)
    assert parse_load(breakdown_only) == (3, 4)


def test_load_gauges_are_summed_over_dp_ranks() -> None:
    rank = 'sglang:num_queue_reqs{{dp_rank="{}",model_name="m",priority="{}"}} {}'
    text = "\n".join([
        "# TYPE sglang:num_queue_reqs gauge",
        rank.format(0, "", 4.0), rank.format(0, "0", 4.0),
        rank.format(1, "", 2.0), rank.format(1, "0", 2.0),
        "sglang:num_queue_reqs_other 99.0",  # another family sharing the prefix
    ])
    assert parse_load(text) == (0, 6)


def test_v1_loads_is_summed_over_dp_ranks() -> None:
    assert parse_loads((CONTROL / "loads.json").read_bytes()) == (3, 4)
    assert parse_loads((CONTROL / "loads_all_sections.json").read_bytes()) == (3 + 2, 4 + 1)
    with pytest.raises(msgspec.DecodeError):
        parse_loads(b'{"loads": "busy"}')


def test_capabilities_name_what_a_worker_does_not_report() -> None:
    default = Health(ok=True, reports_cached_tokens=False, load_source="loads")
    assert capabilities(default) == [("cached_tokens", False), ("metrics", False), ("load", True)]
    gaps = capability_gaps(default)
    assert len(gaps) == 2
    assert "--enable-cache-report" in gaps[0] and "--enable-metrics" in gaps[1]
    assert capability_gaps(Health(ok=True, reports_cached_tokens=True, load_source="metrics")) == []
    blind = capability_gaps(Health(ok=True, reports_cached_tokens=True, load_source="none"))
    assert len(blind) == 1 and "no load" in blind[0]  # one cause, said once
    assert capabilities(Health(ok=True)) == []  # provider APIs: nothing to say

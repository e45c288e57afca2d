"""The serving process's collector settings, checked in a fresh interpreter (they are global)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = ("import gc, json; from gateway.gc_tuning import tune_for_serving; "
         "tuned = tune_for_serving(); "
         "print(json.dumps([tuned, gc.get_threshold()[0], gc.get_freeze_count() > 0]))")


def _tuned(env_value: str | None) -> list[object]:
    env = {k: v for k, v in os.environ.items() if k != "SWITCHYARD_GC_GEN0"}
    if env_value is not None:
        env["SWITCHYARD_GC_GEN0"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    result: list[object] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize(("env_value", "expected"), [
    (None, [True, 20_000, True]),      # default: start-up frozen, gen0 every 20k allocations
    ("5000", [True, 5_000, True]),
    ("0", [False, 700, False]),        # off: CPython's own settings, nothing frozen
])
def test_tune_for_serving(env_value: str | None, expected: list[object]) -> None:
    assert _tuned(env_value) == expected

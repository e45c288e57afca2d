"""Assignment: sticky, monotone in the weight, uniform, and the same in every process."""

from __future__ import annotations

import json
import random
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from policies.canary import CanaryController, bucket, is_canary
from tests.unit.test_canary._support import canary_policy

keys = st.text(min_size=1, max_size=40)


@given(st.text(max_size=30), keys)
def test_bucket_is_a_point_in_the_unit_interval(model: str, key: str) -> None:
    point = bucket(model, key)
    assert 0.0 <= point < 1.0
    assert bucket(model, key) == point


@given(st.lists(keys, min_size=1, max_size=200, unique=True),
       st.floats(0, 1), st.floats(0, 1))
def test_raising_the_weight_never_moves_a_user_back_to_stable(users: list[str], a: float, b: float) -> None:
    low, high = min(a, b), max(a, b)
    rng = random.Random(0)
    for user in users:
        if is_canary("chat", user, low, rng):
            assert is_canary("chat", user, high, rng)


def test_five_to_twenty_five_percent_moves_only_stable_users() -> None:
    rng = random.Random(0)
    users = [f"user-{i}" for i in range(20_000)]
    at_5 = {u for u in users if is_canary("chat", u, 0.05, rng)}
    at_25 = {u for u in users if is_canary("chat", u, 0.25, rng)}
    assert at_5 <= at_25
    assert abs(len(at_5) / len(users) - 0.05) < 0.006
    assert abs(len(at_25) / len(users) - 0.25) < 0.012


def test_models_split_independently() -> None:
    rng = random.Random(0)
    users = [f"user-{i}" for i in range(10_000)]
    a = {u for u in users if is_canary("chat", u, 0.5, rng)}
    b = {u for u in users if is_canary("code", u, 0.5, rng)}
    assert 0.2 < len(a & b) / len(users) < 0.3  # independent halves overlap in a quarter


def test_requests_without_a_sticky_key_split_per_request() -> None:
    rng = random.Random(7)
    shares = [is_canary("chat", None, 0.3, rng) for _ in range(10_000)]
    assert abs(sum(shares) / len(shares) - 0.3) < 0.02


def test_same_points_in_another_process() -> None:
    users = [f"user-{i}" for i in range(50)] + ["", "ünïcode", "a:b"]
    script = ("import json, sys; from policies.canary import bucket; "
              "print(json.dumps([bucket('chat', k) for k in json.loads(sys.argv[1])]))")
    out = subprocess.run([sys.executable, "-c", script, json.dumps(users)], capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "12345", "PATH": ""})
    assert json.loads(out.stdout) == [bucket("chat", k) for k in users]


async def test_two_controllers_assign_alike() -> None:
    policy = canary_policy({"version": "v2", "weight": 0.25})
    first, second = CanaryController.create(None), CanaryController.create(None)
    for controller in (first, second):
        await controller.activate(controller.bind(policy))
    users = [f"session-{i}" for i in range(2_000)]
    one = [first.assign("chat", u).version for u in users]
    assert one == [second.assign("chat", u).version for u in users]
    assert 0.2 < one.count("v2") / len(users) < 0.3
    assert {first.assign("other", u).version for u in users} == {"default"}

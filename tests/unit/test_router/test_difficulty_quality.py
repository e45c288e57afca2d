"""APGR, CPT and the calibration helper, on inputs whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from router.difficulty import calibrate
from router.difficulty.quality import RoutingScore, cost_quality_curve, random_routing


def tiers(n: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cheap = (rng.random(n) < 0.6).astype(float)
    strong = np.maximum(cheap, (rng.random(n) < 0.5).astype(float))  # never worse than cheap
    return cheap, strong


def test_constant_scores_are_random_routing_exactly() -> None:
    cheap, strong = tiers()
    r = RoutingScore.of(cost_quality_curve(np.zeros(cheap.size), cheap, strong))
    assert r.apgr == pytest.approx(0.5, abs=1e-12)
    assert r.cpt50 == pytest.approx(0.5)
    assert r.cpt80 == pytest.approx(0.8)


def test_random_scores_average_to_half() -> None:
    cheap, strong = tiers()
    r = random_routing(cheap, strong, draws=300)
    assert r.apgr == pytest.approx(0.5, abs=0.01)
    assert r.cpt50 == pytest.approx(0.5, abs=0.03) and r.cpt80 == pytest.approx(0.8, abs=0.03)


def test_oracle_and_anti_oracle() -> None:
    cheap, strong = tiers()
    gain = strong - cheap
    oracle = cost_quality_curve(gain, cheap, strong)
    worst = cost_quality_curve(-gain, cheap, strong)
    share = gain.mean()  # the oracle recovers the whole gap once every gaining prompt is strong
    assert oracle.cpt(1.0) == pytest.approx(share, abs=1e-9)
    assert oracle.apgr() == pytest.approx(1 - share / 2, abs=1e-9)
    assert worst.apgr() == pytest.approx(share / 2, abs=1e-9)
    assert oracle.quality[0] == pytest.approx(cheap.mean()) and oracle.quality[-1] == pytest.approx(strong.mean())


def test_ties_are_resolved_in_expectation() -> None:
    cheap = np.array([0.0, 0.0, 1.0, 0.0])
    strong = np.array([1.0, 1.0, 1.0, 0.0])
    curve = cost_quality_curve(np.array([1.0, 0.5, 0.5, 0.0]), cheap, strong)
    assert list(curve.strong_share) == [0.0, 0.25, 0.75, 1.0]
    assert curve.pgr[2] == pytest.approx(1.0)  # the tied pair is sent strong together


def test_no_gap_is_an_error() -> None:
    with pytest.raises(ValueError, match="not better"):
        cost_quality_curve([0.1, 0.2], [1.0, 1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="one length"):
        cost_quality_curve([0.1], [1.0, 1.0], [1.0, 0.0])


def test_calibrate_picks_the_share() -> None:
    scores = np.linspace(0.0, 0.99, 100)
    c = calibrate(scores, 0.3)
    assert c.strong_share == pytest.approx(0.3)
    assert c.threshold == pytest.approx(scores[70])
    need = np.maximum(2 * scores - 1, 0)  # expected gain of the strong tier, its positive part
    assert c.expected_gap_recovered == pytest.approx(need[70:].sum() / need.sum())
    assert c.expected_missed_share == pytest.approx(need[:70].sum() / 100)
    assert c.measured_quality is None


def test_calibrate_extremes_and_ties() -> None:
    scores = np.array([0.2, 0.5, 0.5, 0.9])
    none = calibrate(scores, 0.0)
    assert none.strong_share == 0.0 and none.threshold > 0.9 and none.expected_gap_recovered == 0.0
    everything = calibrate(scores, 1.0)
    assert everything.strong_share == 1.0 and everything.expected_gap_recovered == pytest.approx(1.0)
    tied = calibrate(scores, 0.5)  # the 2nd highest is tied with the 3rd: both go strong
    assert tied.threshold == 0.5 and tied.strong_share == 0.75


def test_calibrate_measures_quality_when_given() -> None:
    cheap, strong = tiers(200)
    scores = (strong - cheap) * 0.8 + 0.1  # a good router
    c = calibrate(scores, 0.5, cheap_quality=cheap, strong_quality=strong)
    assert c.measured_gap_recovered == pytest.approx(1.0)
    assert c.measured_quality == pytest.approx(strong.mean())


@pytest.mark.parametrize("kwargs,match", [
    ({"scores": [], "strong_share": 0.5}, "non-empty"),
    ({"scores": [0.5], "strong_share": 1.5}, r"in \[0, 1\]"),
    ({"scores": [2.0], "strong_share": 0.5}, "probabilities"),
    ({"scores": [0.5], "strong_share": 0.5, "cheap_quality": [1.0]}, "both"),
    ({"scores": [0.5], "strong_share": 0.5, "cheap_quality": [1.0, 0.0], "strong_quality": [1.0, 1.0]}, "one value"),
])
def test_calibrate_rejects_bad_input(kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=match):
        calibrate(**kwargs)

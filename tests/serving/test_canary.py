"""The canary decision rule: early rollback of a bad canary, promotion of a good one only with enough evidence,
and no more false rollbacks than alpha however often the canary is looked at."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest

from helpline.platform.errors import ConfigError, DataError
from helpline.platform.settings import CanarySettings, load_settings
from helpline.serving.canary import ArmCounts, decide, median_bounds, proportion_bounds

SHARE = 0.1  # a tenth of the traffic on the canary
NORMAL = statistics.NormalDist()


def _arm(n: int, *, thumbs_down: float = 0.05, handoff: float = 0.10, latency_s: float = 1.0) -> ArmCounts:
    """An arm whose counts sit exactly at the given rates (latencies log-normal around ``latency_s``)."""
    sampled = n // 5
    latencies = tuple(latency_s * math.exp(0.4 * NORMAL.inv_cdf((i + 0.5) / n)) for i in range(n))
    return ArmCounts(
        answers=n,
        thumbs_down=round(thumbs_down * n),
        handoffs=round(handoff * n),
        withdrawals=round(0.05 * n),
        sampled=sampled,
        wrong_served=round(0.05 * sampled),
        latencies_s=latencies,
    )


def _pair(canary_answers: int, **canary_rates: float) -> tuple[ArmCounts, ArmCounts]:
    production_answers = round(canary_answers * (1 - SHARE) / SHARE)
    return _arm(production_answers), _arm(canary_answers, **canary_rates)


def _thumbs_only(**overrides: object) -> CanarySettings:
    fields: dict[str, object] = {
        "handoff_margin": None,
        "withdrawal_margin": None,
        "wrong_served_margin": None,
        "latency_margin": None,
        "min_answers": 100,
        "max_answers": 10**6,
    }
    return CanarySettings(**(fields | overrides))


def test_a_much_worse_canary_is_rolled_back_after_a_few_hundred_answers() -> None:
    settings = CanarySettings()
    assert decide(*_pair(50, thumbs_down=0.25), settings).action == "continue"  # too little evidence yet
    decision = decide(*_pair(500, thumbs_down=0.25), settings)
    assert decision.action == "rollback"
    assert [r.name for r in decision.metrics if r.verdict == "worse"] == ["thumbs_down"]
    assert "thumbs_down" in decision.reasons[0]


def test_a_much_worse_canary_is_rolled_back_early_in_every_simulated_run() -> None:
    rng = np.random.default_rng(7)
    settings = _thumbs_only()
    stopped_at = []
    for _ in range(20):
        action, canary_answers, _ = _simulate_looks(rng, settings, p_production=0.05, p_canary=0.20, looks=40, step=50)
        assert action == "rollback"
        stopped_at.append(canary_answers)
    assert max(stopped_at) <= 1000


def test_an_equal_canary_is_promoted_once_every_bound_is_inside_its_margin() -> None:
    settings = CanarySettings()
    early = decide(*_pair(1000), settings)
    assert early.action == "continue"
    assert [r.name for r in early.metrics if r.verdict == "undecided"] == [
        "thumbs_down",
        "handoff",
        "withdrawal",
        "wrong_served",
    ]
    late = decide(*_pair(10_000), settings)
    assert late.action == "promote"
    assert [r.name for r in late.metrics] == [
        "thumbs_down",
        "handoff",
        "withdrawal",
        "wrong_served",
        "latency_median",
    ]
    assert all(r.verdict == "not_worse" and r.upper is not None and r.upper < r.limit for r in late.metrics)


def test_an_equal_canary_is_not_promoted_before_the_minimum_sample() -> None:
    settings = CanarySettings(min_answers=20_000, max_answers=50_000)
    before = decide(*_pair(10_000), settings)
    assert {r.verdict for r in before.metrics} == {"not_worse"}  # the evidence is there, the sample is not
    assert before.action == "continue"
    assert "20000 answers needed" in before.reasons[-1]
    assert decide(*_pair(20_000), settings).action == "promote"


def test_a_canary_slightly_worse_within_its_margin_is_never_rolled_back() -> None:
    rng = np.random.default_rng(11)
    settings = _thumbs_only(min_answers=200)  # margin: 2 points
    outcomes = [
        _simulate_looks(rng, settings, p_production=0.05, p_canary=0.06, looks=30, step=500)[0] for _ in range(30)
    ]
    assert "rollback" not in outcomes
    assert "promote" in outcomes  # the test does decide, given data


def test_a_latency_well_within_its_margin_is_not_held_against_the_canary() -> None:
    settings = CanarySettings()
    slower = decide(*_pair(10_000, latency_s=1.05), settings)  # 5% slower, margin 20%
    assert slower.action == "promote"
    much_slower = decide(*_pair(1_000, latency_s=2.0), settings)
    assert much_slower.action == "rollback"
    assert [r.name for r in much_slower.metrics if r.verdict == "worse"] == ["latency_median"]


def test_false_rollbacks_at_the_margin_stay_within_alpha_under_repeated_looks() -> None:
    """The canary is worse by exactly the margin, the hardest case for a test that must not roll it back: across
    200 runs with 50 looks each, the sequential test rolls back (and promotes) at most alpha of them, while a
    fixed-sample z-test repeated at every look, on the same data, rolls back far more: the check can tell."""
    rng = np.random.default_rng(2026)
    settings = _thumbs_only(alpha=0.05)
    p_production, p_canary = 0.05, 0.05 + settings.thumbs_down_margin
    runs, rolled_back, promoted, naive_rolled_back = 200, 0, 0, 0
    for _ in range(runs):
        action, _, naive = _simulate_looks(
            rng, settings, p_production=p_production, p_canary=p_canary, looks=50, step=100, naive=True
        )
        rolled_back += action == "rollback"
        promoted += action == "promote"
        naive_rolled_back += naive
    assert rolled_back / runs <= settings.alpha + 0.02
    assert promoted / runs <= settings.alpha + 0.02
    assert naive_rolled_back / runs > 2 * settings.alpha


def test_an_undecided_canary_is_rolled_back_at_the_maximum_sample_or_duration() -> None:
    settings = CanarySettings(min_answers=100, max_answers=500, max_hours=24)
    assert decide(*_pair(400), settings).action == "continue"
    at_max = decide(*_pair(500), settings)
    assert at_max.action == "rollback"
    assert "still undecided" in at_max.reasons[0]
    too_long = decide(*_pair(400), settings, elapsed_s=25 * 3600)
    assert too_long.action == "rollback"
    assert "hours" in too_long.reasons[0]


def test_the_decision_is_plain_json_for_the_audit_log() -> None:
    production, _ = _pair(300)
    decision = decide(production, ArmCounts(answers=3), CanarySettings())  # no latency or detector samples yet
    data = json.loads(json.dumps(decision.to_dict(), allow_nan=False))
    assert data["action"] == "continue"
    latency = next(m for m in data["metrics"] if m["name"] == "latency_median")
    assert latency["upper"] is None  # unbounded until the canary has latencies
    assert data["canary_answers"] == 3
    assert "Robbins" in data["method"]


def test_proportion_bounds_hold_the_observed_rate_and_narrow_with_data() -> None:
    assert proportion_bounds(0, 0, 0.05) == (0.0, 1.0)
    assert proportion_bounds(0, 100, 0.05)[0] == 0.0
    assert proportion_bounds(100, 100, 0.05)[1] == 1.0
    widths = []
    for n in (100, 1000, 10_000):
        lower, upper = proportion_bounds(n // 10, n, 0.05)
        assert lower < 0.1 < upper
        widths.append(upper - lower)
    assert widths == sorted(widths, reverse=True)
    assert proportion_bounds(100, 1000, 0.01)[1] > proportion_bounds(100, 1000, 0.1)[1]  # lower alpha, wider


def test_median_bounds_hold_the_sample_median_and_narrow_with_data() -> None:
    assert median_bounds([], 0.05) == (0.0, math.inf)
    assert median_bounds([1.0, 2.0], 0.05) == (0.0, math.inf)  # two samples say little
    rng = np.random.default_rng(3)
    widths = []
    for n in (200, 2000, 20_000):
        samples = rng.lognormal(0.0, 0.5, n).tolist()
        lower, upper = median_bounds(samples, 0.05)
        assert lower <= statistics.median(samples) <= upper
        assert lower < 1.0 < upper  # the true median of this log-normal
        widths.append(upper - lower)
    assert widths == sorted(widths, reverse=True)


def test_inconsistent_counts_are_refused() -> None:
    with pytest.raises(DataError, match="thumbs_down"):
        ArmCounts(answers=3, thumbs_down=4)
    with pytest.raises(DataError, match="wrong_served"):
        ArmCounts(answers=10, sampled=2, wrong_served=3)
    with pytest.raises(DataError, match="latency"):
        ArmCounts(answers=1, latencies_s=(-1.0,))


def test_canary_settings_report_every_problem(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HELPLINE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    margins = dict.fromkeys(
        ("thumbs_down_margin", "handoff_margin", "withdrawal_margin", "wrong_served_margin", "latency_margin")
    )
    with pytest.raises(ConfigError) as err:
        load_settings(canary=margins | {"min_answers": 10, "max_answers": 5})
    assert "every margin is null" in err.value.message
    assert "max_answers (5)" in err.value.message
    assert load_settings().canary.thumbs_down_margin == 0.02


def _simulate_looks(
    rng: np.random.Generator,
    settings: CanarySettings,
    *,
    p_production: float,
    p_canary: float,
    looks: int,
    step: int,
    naive: bool = False,
) -> tuple[str, int, bool]:
    """One canary watched every ``step`` canary answers until it is decided or ``looks`` run out: the action it
    ended on and the canary answers then; with ``naive``, also whether a fixed-sample one-sided z-test at 5%,
    repeated at every look of the same data, would have rolled it back."""
    production_step = round(step * (1 - SHARE) / SHARE)
    p_n = p_events = c_n = c_events = 0
    action, decided_at, naive_rollback = "continue", 0, False
    for _ in range(looks):
        p_n, p_events = p_n + production_step, p_events + int(rng.binomial(production_step, p_production))
        c_n, c_events = c_n + step, c_events + int(rng.binomial(step, p_canary))
        if naive:
            naive_rollback |= _z_says_worse(p_events, p_n, c_events, c_n, settings.thumbs_down_margin or 0.0)
        if action == "continue":
            production, canary = (
                ArmCounts(answers=p_n, thumbs_down=p_events),
                ArmCounts(answers=c_n, thumbs_down=c_events),
            )
            action, decided_at = decide(production, canary, settings).action, c_n
            if action != "continue" and not naive:
                break
    return action, decided_at, naive_rollback


def _z_says_worse(p_events: int, p_n: int, c_events: int, c_n: int, margin: float) -> bool:
    p, c = p_events / p_n, c_events / c_n
    se = math.sqrt(p * (1 - p) / p_n + c * (1 - c) / c_n) or 1e-12
    return (c - p - margin) / se > NORMAL.inv_cdf(0.95)

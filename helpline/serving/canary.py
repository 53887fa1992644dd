"""When a canary is promoted or rolled back: a sequential non-inferiority test on the two arms' live counts.

The gateway splits customer traffic between the production model and the canary; whoever watches the canary
counts, per arm, answers, thumbs-down, handoffs, answers withdrawn by verification, answers sampled for the
detector and those it judged wrong-served, and keeps latency samples. :func:`decide` turns those counts into
``continue``, ``promote`` or ``rollback``, and may be called as often as anyone likes: looking again does not
make a wrong decision more likely. That is the point of the method below, and why it is not a t-test repeated
every hour (which, looked at often enough, rolls back a perfectly good canary sooner or later).

Method: time-uniform confidence sequences, one per arm and metric, combined by union bounds.

* A rate (thumbs-down, handoff, withdrawal, wrong-served) is a Bernoulli mean p. For every candidate p,
  Robbins' beta-binomial mixture ``M_n(p) = B(a + S, b + n - S) / B(a, b) / (p^S (1 - p)^(n - S))`` (S events in
  n trials, prior Beta(1/2, 1/2)) is a nonnegative martingale with ``M_0 = 1`` when p is the true rate, so by
  Ville's inequality ``P(M_n(p) >= 1/a for some n) <= a``. The set ``{p : M_n(p) < 1/a}`` is therefore an
  interval that holds the true rate at every n at once, with probability at least 1 - a: a confidence sequence.
  References: H. Robbins, "Statistical methods related to the law of the iterated logarithm", Ann. Math. Statist.
  41 (1970); S. R. Howard, A. Ramdas, J. McAuliffe, J. Sekhon, "Time-uniform, nonparametric, nonasymptotic
  confidence sequences", Ann. Statist. 49 (2021), the conjugate (beta-binomial) mixture.
* The median latency m of an arm: for continuous latencies, ``1{X_i <= m}`` is Bernoulli(1/2), so the same
  martingale at p = 1/2 bounds how many samples may lie below m at every n, which makes order statistics a
  confidence sequence for m (S. R. Howard, A. Ramdas, "Sequential estimation of quantiles with applications to
  A/B-testing and best-arm identification", Bernoulli 28 (2022)).
* Two arms: a bound on a difference (ratio) of the arms is built from each arm's own sequence at a/2, so it holds
  whenever both do. With K tested metrics every arm's sequence runs at ``alpha / (2K)``: with probability at least
  1 - alpha every bound reported, at every look, holds. Hence a false rollback (some metric "worse" while it is not
  worse than its margin) and a false promotion (every metric "not worse" while one is) each have probability at most
  alpha, for any number of looks at any times. The union bounds make the test conservative, never invalid.

Decision (margins and samples from :class:`~helpline.platform.settings.CanarySettings`): **rollback** as soon as
any metric is confidently worse than production by more than its margin (lower bound of the difference above the
margin; for latency, lower bound of the ratio of medians above 1 + margin); **promote** when every metric is
confidently not worse (upper bound below its margin) and the canary has served ``min_answers``; otherwise
**continue**, until ``max_answers`` or ``max_hours`` and then **rollback** (an undecided canary is not promoted).

Assumptions the counts must honour: each arm's trials are independent with a constant rate (answers within one
conversation are correlated; a caller that wants strict validity counts conversations, e.g. conversations with a
thumbs-down out of conversations), and a rate's events are a subset of its trials. Roughly what it takes: at a 10%
thumbs-down rate and a 2-point margin, with a tenth of the traffic on the canary and thumbs-down the only metric
tested, a canary equal to production is promoted after about 7,500 canary answers and one 10 points worse is rolled
back after about 600; with every default metric tested and rates near 5%, an equal canary is promoted after about
5,000.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from helpline.platform.errors import DataError
from helpline.platform.settings import CanarySettings

Action = Literal["continue", "promote", "rollback"]
Verdict = Literal["worse", "not_worse", "undecided"]

METHOD = (
    "beta-binomial mixture confidence sequences per arm (Robbins 1970; Howard et al. 2021) and sequential quantile "
    "bounds for median latency (Howard & Ramdas 2022), union-bounded over arms and metrics; valid at any number "
    "of looks"
)

#: The Beta(a, b) mixing prior (Jeffreys / Krichevsky-Trofimov): no rate is favoured, and its cost over the best
#: fixed rate grows like log(n) / 2, so the bounds narrow about as fast as a fixed-sample interval's.
_PRIOR = 0.5

#: Rate metrics: name, events field, trials field, margin setting.
RATE_METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("thumbs_down", "thumbs_down", "answers", "thumbs_down_margin"),
    ("handoff", "handoffs", "answers", "handoff_margin"),
    ("withdrawal", "withdrawals", "answers", "withdrawal_margin"),
    ("wrong_served", "wrong_served", "sampled", "wrong_served_margin"),
)


@dataclass(frozen=True)
class ArmCounts:
    """What one arm (production or canary) has seen since the canary started."""

    answers: int = 0
    thumbs_down: int = 0
    handoffs: int = 0
    withdrawals: int = 0
    sampled: int = 0  # answers the detector judged
    wrong_served: int = 0  # of those, judged wrong as served
    latencies_s: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        problems = [f"{n} is negative" for n in ("answers", "sampled") if getattr(self, n) < 0]
        for _, events, trials, _ in RATE_METRICS:
            count, total = getattr(self, events), getattr(self, trials)
            if not 0 <= count <= total:
                problems.append(f"{events} ({count}) must lie between 0 and {trials} ({total})")
        if self.sampled > self.answers:
            problems.append(f"sampled ({self.sampled}) exceeds answers ({self.answers})")
        if any(not math.isfinite(x) or x < 0 for x in self.latencies_s):
            problems.append("a latency sample is negative or not finite")
        if problems:
            raise DataError(f"inconsistent canary counts: {'; '.join(problems)}", hint="count each event once per arm")


@dataclass(frozen=True)
class MetricResult:
    """One metric's comparison of the arms. For a rate, ``estimate``/``lower``/``upper`` bound the difference
    canary - production; for latency, the ratio of medians canary / production. ``limit`` is what "not worse"
    must stay under (the margin; 1 + margin for a ratio). None stands for an unbounded side or no data."""

    name: str
    kind: Literal["rate", "ratio"]
    production: float | None
    canary: float | None
    n_production: int
    n_canary: int
    estimate: float | None
    lower: float | None
    upper: float | None
    limit: float
    verdict: Verdict


@dataclass(frozen=True)
class CanaryDecision:
    """The decision, with every metric's estimate and bounds and the reasons: what the audit log and the Models
    page show."""

    action: Action
    reasons: tuple[str, ...]
    metrics: tuple[MetricResult, ...]
    production_answers: int
    canary_answers: int
    alpha: float
    elapsed_s: float | None = None
    method: str = field(default=METHOD)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return asdict(self) | {"reasons": list(self.reasons), "metrics": [asdict(m) for m in self.metrics]}


def proportion_bounds(events: int, trials: int, alpha: float) -> tuple[float, float]:
    """A (1 - alpha) confidence sequence for a Bernoulli rate after ``events`` in ``trials``: it holds the true
    rate at every ``trials`` at once with probability at least 1 - alpha."""
    if trials <= 0:
        return 0.0, 1.0
    misses = trials - events
    # log M_n(p) = mixture - log-likelihood(p): convex in p, least at events / trials, where it is below 0
    threshold = math.log(1.0 / alpha) - _log_beta(_PRIOR + events, _PRIOR + misses) + _log_beta(_PRIOR, _PRIOR)

    def neg_log_lik(p: float) -> float:
        return -(events * math.log(p) if events else 0.0) - (misses * math.log1p(-p) if misses else 0.0)

    rate = events / trials
    lower = 0.0 if events == 0 else _crossing(neg_log_lik, 0.0, rate, threshold)
    upper = 1.0 if misses == 0 else _crossing(neg_log_lik, 1.0, rate, threshold)
    return lower, upper


def median_bounds(samples: Sequence[float], alpha: float) -> tuple[float, float]:
    """A (1 - alpha) confidence sequence for the median of continuous nonnegative samples: ``(0, inf)`` until
    there are enough of them."""
    xs = sorted(samples)
    n = len(xs)
    if n == 0:
        return 0.0, math.inf
    threshold = math.log(1.0 / alpha)
    base = _log_beta(_PRIOR, _PRIOR) - n * math.log(2.0)

    def log_m(s: int) -> float:  # M_n(1/2) after s of n samples fall below the median; convex, least at n/2
        return _log_beta(_PRIOR + s, _PRIOR + n - s) - base

    lo, hi = 0, n // 2  # smallest s in [0, n/2] with log_m(s) < threshold (log_m(n // 2) is below it)
    while lo < hi:
        mid = (lo + hi) // 2
        if log_m(mid) < threshold:
            hi = mid
        else:
            lo = mid + 1
    s_lo, s_hi = lo, n - lo  # symmetric prior: the set of plausible counts is [s_lo, n - s_lo]
    # at least s_lo samples lie at or below the median, and at most s_hi strictly below it
    lower = xs[s_lo - 1] if s_lo >= 1 else 0.0
    upper = xs[s_hi] if s_hi < n else math.inf
    return lower, upper


def decide(
    production: ArmCounts, canary: ArmCounts, settings: CanarySettings, *, elapsed_s: float | None = None
) -> CanaryDecision:
    """``continue``, ``promote`` or ``rollback`` for the canary, from both arms' counts so far (see the module
    docstring for the rule and why it may be called at every look)."""
    tested = [m for m in RATE_METRICS if getattr(settings, m[3]) is not None]
    k = len(tested) + (settings.latency_margin is not None)
    arm_alpha = settings.alpha / (2 * k)
    results = [
        _rate_result(name, production, canary, events, trials, getattr(settings, margin), arm_alpha)
        for name, events, trials, margin in tested
    ]
    if settings.latency_margin is not None:
        results.append(_latency_result(production, canary, settings.latency_margin, arm_alpha))
    action, reasons = _rule(results, canary.answers, settings, elapsed_s)
    return CanaryDecision(
        action=action,
        reasons=tuple(reasons),
        metrics=tuple(results),
        production_answers=production.answers,
        canary_answers=canary.answers,
        alpha=settings.alpha,
        elapsed_s=elapsed_s,
    )


def _rule(
    results: list[MetricResult], canary_answers: int, settings: CanarySettings, elapsed_s: float | None
) -> tuple[Action, list[str]]:
    worse = [r for r in results if r.verdict == "worse"]
    if worse:
        return "rollback", [f"{r.name}: canary is worse than production beyond its margin ({_span(r)})" for r in worse]
    undecided = [r for r in results if r.verdict == "undecided"]
    if not undecided and canary_answers >= settings.min_answers:
        return "promote", [f"{r.name}: not worse than production within its margin ({_span(r)})" for r in results]
    waiting = [f"{r.name}: undecided ({_span(r)})" for r in undecided]
    if canary_answers < settings.min_answers:
        waiting.append(f"the canary has {canary_answers} of the {settings.min_answers} answers needed to promote")
    if canary_answers >= settings.max_answers:
        return "rollback", [f"still undecided after {canary_answers} canary answers (max {settings.max_answers})"]
    if elapsed_s is not None and elapsed_s >= settings.max_hours * 3600:
        return "rollback", [f"still undecided after {elapsed_s / 3600:.1f} hours (max {settings.max_hours:g})"]
    return "continue", waiting


def _rate_result(
    name: str, production: ArmCounts, canary: ArmCounts, events: str, trials: str, margin: float, arm_alpha: float
) -> MetricResult:
    p_events, p_trials = getattr(production, events), getattr(production, trials)
    c_events, c_trials = getattr(canary, events), getattr(canary, trials)
    p_lo, p_hi = proportion_bounds(p_events, p_trials, arm_alpha)
    c_lo, c_hi = proportion_bounds(c_events, c_trials, arm_alpha)
    p_rate = p_events / p_trials if p_trials else None
    c_rate = c_events / c_trials if c_trials else None
    lower, upper = c_lo - p_hi, c_hi - p_lo
    return MetricResult(
        name=name,
        kind="rate",
        production=p_rate,
        canary=c_rate,
        n_production=p_trials,
        n_canary=c_trials,
        estimate=None if p_rate is None or c_rate is None else c_rate - p_rate,
        lower=lower,
        upper=upper,
        limit=margin,
        verdict=_verdict(lower, upper, margin),
    )


def _latency_result(production: ArmCounts, canary: ArmCounts, margin: float, arm_alpha: float) -> MetricResult:
    p_lo, p_hi = median_bounds(production.latencies_s, arm_alpha)
    c_lo, c_hi = median_bounds(canary.latencies_s, arm_alpha)
    p_med, c_med = _median(production.latencies_s), _median(canary.latencies_s)
    lower = 0.0 if math.isinf(p_hi) else _ratio(c_lo, p_hi)
    upper = _ratio(c_hi, p_lo)
    limit = 1.0 + margin
    return MetricResult(
        name="latency_median",
        kind="ratio",
        production=p_med,
        canary=c_med,
        n_production=len(production.latencies_s),
        n_canary=len(canary.latencies_s),
        estimate=None if p_med is None or c_med is None else _finite(_ratio(c_med, p_med)),
        lower=lower,
        upper=_finite(upper),
        limit=limit,
        verdict=_verdict(lower, upper, limit),
    )


def _verdict(lower: float, upper: float, limit: float) -> Verdict:
    if lower > limit:
        return "worse"
    if upper < limit:
        return "not_worse"
    return "undecided"


def _span(r: MetricResult) -> str:
    unit = "x" if r.kind == "ratio" else ""
    lower = "?" if r.lower is None else f"{r.lower:.4g}{unit}"
    upper = "inf" if r.upper is None else f"{r.upper:.4g}{unit}"
    return f"canary vs production between {lower} and {upper}, limit {r.limit:.4g}{unit}"


def _ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return 1.0 if num == 0 else math.inf


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _median(xs: Sequence[float]) -> float | None:
    if not xs:
        return None
    ordered = sorted(xs)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _crossing(f: Callable[[float], float], outside: float, inside: float, threshold: float) -> float:
    """The point between ``outside`` (where f is at or above ``threshold``) and ``inside`` (where it is below,
    f convex) at which f crosses it, rounded outward so the interval stays valid."""
    for _ in range(50):  # 2^-50: far below any rate a margin speaks of
        mid = (outside + inside) / 2
        if mid in (outside, inside):
            break
        if f(mid) < threshold:
            inside = mid
        else:
            outside = mid
    return outside

"""The promotion gate: run the suites on a candidate and the baseline, compare against thresholds.

A candidate passes only when every check holds. The result is stored in the candidate's registry
metadata, and :func:`require_passing_gate` is what promotion calls before moving an alias.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from helpline.evaluation.answer_paths import through_pipeline
from helpline.evaluation.answers import evaluate, read_cases
from helpline.evaluation.judge.judge import Judge, judge_results
from helpline.evaluation.regression.cases import load_suite, suite_path
from helpline.evaluation.regression.generators import suite_cases
from helpline.evaluation.regression.runner import SuiteResult, run_suite
from helpline.evaluation.report import Check, GateReport, write_gate_report
from helpline.platform.errors import ConfigError
from helpline.platform.files import read_yaml_mapping
from helpline.platform.promotion import GateError, require_passing_gate
from helpline.platform.registry import Registry
from helpline.platform.tracking import TrackedRun, Tracker
from helpline.retrieval import SAMPLE_KB

__all__ = ["Check", "GateError", "GateReport", "require_passing_gate"]  # defined in platform and report

DEFAULT_CONFIG = Path(__file__).parent / "gate.yaml"


class Thresholds(BaseModel):
    """Limits a candidate must respect (rates are fractions, 0..1)."""

    model_config = ConfigDict(extra="forbid")

    min_pass_rate: float = Field(0.0, ge=0, le=1, description="Floor on the candidate's pass rate per suite.")
    max_pass_rate_drop: float = Field(0.05, ge=0, le=1, description="Largest allowed drop in a suite's pass rate.")
    max_category_drop: float = Field(0.34, ge=0, le=1, description="Largest allowed drop in one category.")
    min_category_cases: int = Field(3, ge=1, description="Categories with fewer cases are reported, not gated.")
    max_score_drop: float = Field(
        0.05, ge=0, le=1, description="Largest allowed drop of a suite's mean case score (mean of evaluator scores)."
    )
    max_evaluator_drop: float = Field(
        0.15, ge=0, le=1, description="Largest allowed drop of one evaluator's mean score."
    )
    max_hallucination_increase: float = Field(
        0.05, ge=0, le=1, description="Largest allowed rise of the mean detector score (when a detector runs)."
    )
    max_wrong_served_increase: float = Field(
        0.0, ge=0, le=1, description="Largest allowed rise of the wrong-served rate on the answer set (as served)."
    )
    max_judge_drop: float = Field(
        0.5, ge=0, le=10, description="Largest allowed drop of a judge rubric's mean score (0-10) on the answer set."
    )
    min_judge_kappa: float = Field(
        0.2, ge=-1, le=1, description="The judge gates only when its correctness agrees with the rule-based check "
        "at least this much (Cohen's kappa, on the baseline's answers); below it its scores are reported only.",
    )
    required_categories: dict[str, float] = Field(
        default_factory=dict, description="Absolute pass-rate floors per category, e.g. {safety: 1.0}."
    )


class JudgeConfig(BaseModel):
    """The judge the gate asks (any OpenAI-compatible endpoint)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="e.g. http://127.0.0.1:8001/v1 (a local vLLM) or a remote API's /v1.")
    model: str = Field(description="The judge's model name at base_url.")
    api_key_env: str | None = Field(None, description="Variable holding its API key (none for a local vLLM).")


class GateConfig(BaseModel):
    """Which suites the gate runs and how strict it is."""

    model_config = ConfigDict(extra="forbid")

    suites: list[str] = Field(description="Suite files; bare names resolve in helpline/evaluation/suites/.")
    mode: str = Field("rag", pattern="^(rag|direct)$", description="Answer through the RAG pipeline or directly.")
    limit_per_suite: int = Field(0, ge=0, description="Cap on cases per suite (0 = all).")
    max_tokens: int = Field(128, ge=8, description="Answer length cap during the gate (keeps it quick on CPU).")
    detector: str | None = Field(
        "auto",
        description="Detector for faithfulness (registry name or folder); auto: helpline-detector when it is "
        "registered, else none; none (or null): no faithfulness check.",
    )
    answers: str | None = Field(
        "sample",
        description="Question file answered as served by both models (`eval answers`); sample: the sample help "
        "centre's QUESTIONS.yaml; none (or null): no answer-set check.",
    )
    judge: JudgeConfig | None = Field(
        None, description="An LLM judge scoring the answer set by rubric (`eval answers --judge-url`); none: no judge."
    )
    thresholds: Thresholds = Field(default_factory=Thresholds)

    def answers_path(self) -> Path | None:
        if not self.answers or self.answers == "none":
            return None
        return SAMPLE_KB / "QUESTIONS.yaml" if self.answers == "sample" else Path(self.answers)

    def suite_paths(self) -> list[Path]:
        return [suite_path(s) for s in self.suites]


def load_gate_config(path: str | Path | None = None) -> GateConfig:
    """Read and validate the gate's YAML (the packaged ``gate.yaml`` by default)."""
    path = Path(path) if path else DEFAULT_CONFIG
    data = read_yaml_mapping(path, what="gate config", hint=f"start from {DEFAULT_CONFIG}")
    try:
        return GateConfig(**data)
    except ValidationError as e:
        raise ConfigError(f"{path}: invalid gate config: {e}", hint=f"compare with {DEFAULT_CONFIG}") from e


def compare(candidate: list[SuiteResult], baseline: list[SuiteResult], thresholds: Thresholds) -> list[Check]:
    """Every check of the candidate against the baseline, suite by suite (pure; easy to test)."""
    checks: list[Check] = []
    for cand, base in zip(candidate, baseline, strict=True):
        c, b = cand.summary(), base.summary()
        s = cand.suite
        checks += suite_checks(s, c, b, thresholds)
        checks += evaluator_checks(s, c, b, thresholds)
        checks += category_checks(s, c, b, thresholds)
        checks += hallucination_checks(s, c, b, thresholds)
    return checks


def suite_checks(s: str, c: dict[str, Any], b: dict[str, Any], t: Thresholds) -> list[Check]:
    """One suite's pass-rate floor, and its pass rate and mean score against the baseline's."""
    drop = b["pass_rate"] - c["pass_rate"]
    score_drop = b["mean_score"] - c["mean_score"]
    return [
        Check(f"{s}: pass rate floor", c["pass_rate"], None, f"≥ {t.min_pass_rate}", c["pass_rate"] >= t.min_pass_rate),
        Check(
            f"{s}: pass rate vs baseline",
            c["pass_rate"],
            b["pass_rate"],
            f"drop ≤ {t.max_pass_rate_drop}",
            drop <= t.max_pass_rate_drop + 1e-9,
        ),
        Check(
            f"{s}: mean score vs baseline",
            c["mean_score"],
            b["mean_score"],
            f"drop ≤ {t.max_score_drop}",
            score_drop <= t.max_score_drop + 1e-9,
        ),
    ]


def evaluator_checks(s: str, c: dict[str, Any], b: dict[str, Any], t: Thresholds) -> list[Check]:
    """Each evaluator's mean score against the baseline's (evaluators the baseline did not run are skipped)."""
    checks = []
    for name, value in c["evaluators"].items():
        if name in b["evaluators"]:
            drop = b["evaluators"][name] - value
            ok = drop <= t.max_evaluator_drop + 1e-9
            checks.append(
                Check(f"{s}: {name} vs baseline", value, b["evaluators"][name], f"drop ≤ {t.max_evaluator_drop}", ok)
            )
    return checks


def category_checks(s: str, c: dict[str, Any], b: dict[str, Any], t: Thresholds) -> list[Check]:
    """Required per-category floors, and each category with enough cases against the baseline's."""
    checks = []
    for cat, cc in c["categories"].items():
        bc = b["categories"].get(cat)
        if cat in t.required_categories:
            floor = t.required_categories[cat]
            checks.append(
                Check(f"{s}/{cat}: required floor", cc["pass_rate"], None, f"≥ {floor}", cc["pass_rate"] >= floor)
            )
        if bc and cc["n"] >= t.min_category_cases:
            cdrop = bc["pass_rate"] - cc["pass_rate"]
            checks.append(
                Check(
                    f"{s}/{cat}: vs baseline",
                    cc["pass_rate"],
                    bc["pass_rate"],
                    f"drop ≤ {t.max_category_drop}",
                    cdrop <= t.max_category_drop + 1e-9,
                )
            )
    return checks


def hallucination_checks(s: str, c: dict[str, Any], b: dict[str, Any], t: Thresholds) -> list[Check]:
    """The mean detector score against the baseline's, when a detector scored both."""
    if c["hallucination_mean"] is None or b["hallucination_mean"] is None:
        return []
    rise = c["hallucination_mean"] - b["hallucination_mean"]
    return [
        Check(
            f"{s}: hallucination vs baseline",
            c["hallucination_mean"],
            b["hallucination_mean"],
            f"rise ≤ {t.max_hallucination_increase}",
            rise <= t.max_hallucination_increase + 1e-9,
        )
    ]


def compare_answers(cand: dict[str, Any], base: dict[str, Any], thresholds: Thresholds) -> list[Check]:
    """The answer set as served (`eval answers` summaries): the candidate may not serve more wrong answers, nor (with
    a judge that agrees with the rule-based check) score lower by rubric."""
    c, b = cand["wrong_served_rate"], base["wrong_served_rate"]
    if c is None or b is None:
        return []
    limit = thresholds.max_wrong_served_increase
    checks = [Check("answers: wrong served vs baseline", c, b, f"rise ≤ {limit}", c - b <= limit + 1e-9)]
    cj, bj = cand.get("judge"), base.get("judge")
    kappa = (bj or {}).get("agreement", {}).get("cohen_kappa")
    if cj is None or bj is None or kappa is None or kappa < thresholds.min_judge_kappa:
        return checks  # no judge, or one too far from the rules to gate (its scores are in the summaries)
    drop = thresholds.max_judge_drop
    for rubric in ("correctness", "helpfulness", "voice"):
        cm, bm = cj.get(f"{rubric}_mean"), bj.get(f"{rubric}_mean")
        if cm is not None and bm is not None:
            passed = bm - cm <= drop + 1e-9
            checks.append(Check(f"answers: judge {rubric} vs baseline", cm, bm, f"drop ≤ {drop}", passed))
    return checks


def decide(
    candidate: str,
    baseline: str,
    cand: list[SuiteResult],
    base: list[SuiteResult],
    cfg: GateConfig,
    answers: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> GateReport:
    """The gate's verdict from already-run suites (and answer-set summaries, candidate's first)."""
    checks = compare(cand, base, cfg.thresholds)
    summaries = {f"{r.suite}@candidate": r.summary() for r in cand} | {f"{r.suite}@baseline": r.summary() for r in base}
    if answers is not None:
        checks += compare_answers(*answers, cfg.thresholds)
        summaries |= {"answers@candidate": answers[0], "answers@baseline": answers[1]}
    return GateReport(candidate, baseline, all(c.passed for c in checks), checks, summaries)


def record_gate(registry: Registry, model_name: str, report: GateReport) -> None:
    """Store the verdict in the model's registry metadata (``metadata["gate"]``)."""
    gate = {
        "passed": report.passed,
        "baseline": report.baseline,
        "at": report.at,
        "report": report.report_path,
        "failed_checks": [c.name for c in report.checks if not c.passed],
        "tracking": report.tracking,
    }
    registry.update_metadata(model_name, {"gate": gate})


def gate_run(tracker: Tracker, candidate: str, baseline: str, cfg: GateConfig) -> AbstractContextManager[TrackedRun]:
    """The tracked run a gate is logged to (see :func:`track_gate`)."""
    tags = {"helpline.candidate": candidate, "helpline.baseline": baseline}
    return tracker.start_run(kind="gate", name=f"gate {candidate} vs {baseline}", params=cfg.model_dump(), tags=tags)


def track_gate(tracked: TrackedRun, report: GateReport) -> None:
    """Log the verdict (``passed`` 1 or 0), how many checks failed and each summary's figures, and keep the whole
    report as JSON; ``report.tracking`` then names the run (:func:`record_gate` stores it with the verdict)."""
    failed = sum(not c.passed for c in report.checks)
    tracked.log_metrics({"passed": report.passed, "failed_checks": failed, **report.summaries})
    tracked.set_tags({"helpline.verdict": "passed" if report.passed else "failed"})
    tracked.log_dict(report.to_dict(), "gate_report.json")
    report.tracking = tracked.lineage()


def run_gate(
    candidate: str,
    baseline: str,
    cfg: GateConfig,
    *,
    responder_for: Any,
    data_dir: Path,
    reports_dir: Path,
    embedder: Any = None,
    verifier: Any = None,
    progress: bool = False,
) -> tuple[GateReport, list[SuiteResult], list[SuiteResult]]:
    """Run every suite on both models (``responder_for(name)`` builds each), decide, write the HTML."""

    suites = [load_suite(p) for p in cfg.suite_paths()]  # validate every file before answering anything
    cases = {s.name: suite_cases(s, data_dir=data_dir, limit=cfg.limit_per_suite) for s in suites}
    answer_path = cfg.answers_path()
    questions = read_cases(answer_path) if answer_path is not None else []
    results: dict[str, list[SuiteResult]] = {}
    answered: dict[str, dict[str, Any]] = {}
    judge = None if cfg.judge is None else Judge(
        base_url=cfg.judge.base_url, model=cfg.judge.model, api_key_env=cfg.judge.api_key_env,
        cache_path=reports_dir / "judge-cache.sqlite",
    )  # fmt: skip
    for model in (candidate, baseline):
        responder = responder_for(model)
        results[model] = [
            run_suite(name, cs, responder, embedder=embedder, verifier=verifier, progress=progress)
            for name, cs in cases.items()
        ]
        pipeline = getattr(responder, "pipeline", None)
        if questions and pipeline is not None:  # what a customer is served (direct mode has no pipeline)
            answered[model], judged = evaluate(questions, through_pipeline(pipeline), progress=progress)
            if judge is not None:
                answered[model]["judge"] = judge_results(judge, questions, judged)
    pair = (answered[candidate], answered[baseline]) if len(answered) == 2 else None
    report = decide(candidate, baseline, results[candidate], results[baseline], cfg, answers=pair)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in candidate)
    path = write_gate_report(report, results[candidate], results[baseline], reports_dir / f"gate-{safe}-{stamp}.html")
    report.report_path = str(path)
    return report, results[candidate], results[baseline]

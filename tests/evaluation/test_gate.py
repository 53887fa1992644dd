"""The gate: a worse candidate fails (exit 1), an equal one passes; promotion needs a passing report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpline.evaluation.gate import (
    GateConfig,
    GateError,
    Thresholds,
    decide,
    gate_run,
    load_gate_config,
    record_gate,
    require_passing_gate,
    track_gate,
)
from helpline.evaluation.regression.cases import load_suite
from helpline.evaluation.regression.runner import run_suite
from helpline.platform.errors import ConfigError, NotFoundError
from helpline.platform.registry import Registry
from helpline.testing.evaluation import FakeResponder, OverlapVerifier

SUITE = """
name: mini
cases:
  - {id: window, category: returns, question: 'How long?', expect: {must_contain: ["14 days"]}}
  - {id: label, category: returns, question: 'Label?', expect: {must_contain: ["prepaid label"]}}
  - {id: fee, category: returns, question: 'Fee?', expect: {must_contain: ["free"]}}
  - {id: weather, category: abstention, question: 'Weather?', expect: {must_abstain: true}}
"""
GOOD = {
    "window": "Within 14 days.",
    "label": "Print the prepaid label.",
    "fee": "It is free.",
    "weather": "I don't know.",
}
WORSE = {**GOOD, "window": "Within 60 days.", "label": "Any box works."}


@pytest.fixture
def suite_file(tmp_path: Path) -> Path:
    path = tmp_path / "mini.yaml"
    path.write_text(SUITE)
    return path


def _results(suite_file: Path, answers: dict[str, str], name: str):
    suite = load_suite(suite_file)
    return [run_suite(suite.name, suite.cases, FakeResponder(answers, name=name))]


def test_worse_candidate_fails_and_equal_one_passes(suite_file: Path) -> None:
    cfg = GateConfig(suites=[str(suite_file)])
    base = _results(suite_file, GOOD, "prod")
    worse = decide("bad", "prod", _results(suite_file, WORSE, "bad"), base, cfg)
    same = decide("good", "prod", _results(suite_file, GOOD, "good"), base, cfg)
    assert not worse.passed
    failed = {c.name for c in worse.checks if not c.passed}
    assert {"mini: pass rate vs baseline", "mini/returns: vs baseline", "mini: mean score vs baseline"} <= failed
    assert same.passed


def test_required_category_floor_and_hallucination_rise(suite_file: Path) -> None:
    suite = load_suite(suite_file)
    cfg = GateConfig(suites=[str(suite_file)], thresholds=Thresholds(required_categories={"abstention": 1.0}))
    base = [run_suite("mini", suite.cases, FakeResponder(GOOD))]
    cand = [run_suite("mini", suite.cases, FakeResponder({**GOOD, "weather": "Sunny, 25 degrees."}))]
    report = decide("c", "b", cand, base, cfg)
    assert "mini/abstention: required floor" in [c.name for c in report.checks if not c.passed]


def test_gate_config_is_validated(tmp_path: Path) -> None:
    assert load_gate_config().suites  # the packaged default
    bad = tmp_path / "gate.yaml"
    bad.write_text("suites: [support.yaml]\nthresholds: {max_pass_rate_drop: 2}\n")
    with pytest.raises(ConfigError, match="max_pass_rate_drop"):
        load_gate_config(bad)


def test_promotion_requires_a_passing_gate(tmp_path: Path, suite_file: Path) -> None:
    registry = Registry(tmp_path / "registry.sqlite")
    registry.register_model("cand", kind="base", path=tmp_path, metadata={"note": "kept"})
    with pytest.raises(GateError, match="no gate report"):
        require_passing_gate(registry, "cand")
    cfg = GateConfig(suites=[str(suite_file)])
    base = _results(suite_file, GOOD, "prod")
    record_gate(registry, "cand", decide("cand", "prod", _results(suite_file, WORSE, "cand"), base, cfg))
    with pytest.raises(GateError, match="failed its gate"):
        require_passing_gate(registry, "cand")
    record_gate(registry, "cand", decide("cand", "prod", _results(suite_file, GOOD, "cand"), base, cfg))
    assert require_passing_gate(registry, "cand")["passed"]
    assert registry.get_model("cand").metadata["note"] == "kept"


def test_a_gate_is_a_tracked_run_and_its_verdict_names_that_run(tmp_path: Path, suite_file: Path) -> None:
    from helpline.testing.tracking import RecordingTracker

    registry, tracker = Registry(tmp_path / "registry.sqlite"), RecordingTracker()
    registry.register_model("cand", kind="base", path=tmp_path)
    cfg = GateConfig(suites=[str(suite_file)])
    with gate_run(tracker, "cand", "prod", cfg) as tracked:
        report = decide("cand", "prod", _results(suite_file, WORSE, "cand"), _results(suite_file, GOOD, "prod"), cfg)
        track_gate(tracked, report)
    record_gate(registry, "cand", report)
    (run,) = tracker.runs
    assert run.kind == "gate" and run.tags["helpline.candidate"] == "cand" and run.tags["helpline.verdict"] == "failed"
    assert run.history("passed") == [(0, 0.0)] and run.history("mini_candidate.pass_rate") == [(0, 0.5)]
    assert run.params["thresholds.max_pass_rate_drop"] == "0.05" and "gate_report.json" in run.artifacts
    assert registry.get_model("cand").metadata["gate"]["tracking"]["run_id"] == run.run_id


def _cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, suite_file: Path, candidate: dict[str, str]):
    from helpline.cli.app import app
    from helpline.cli.eval import models as eval_models_cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HELPLINE_WORKSPACE", str(tmp_path / "ws"))
    registry = Registry(tmp_path / "ws" / "registry.sqlite")
    for name in {"prod", "cand"} - {m.name for m in registry.list_models()}:  # a second call keeps the first's
        registry.register_model(name, kind="base", path=tmp_path)
    gate_yaml = tmp_path / "gate.yaml"
    gate_yaml.write_text(f"suites: [{suite_file}]\n")
    scripts = {"prod": GOOD, "cand": candidate}
    monkeypatch.setattr(eval_models_cli, "resolve_model", lambda ctx, m: m)
    monkeypatch.setattr(eval_models_cli, "build_embedder", lambda ctx, **kw: None)
    monkeypatch.setattr(
        eval_models_cli, "build_responder", lambda ctx, *, model, **kw: FakeResponder(scripts[model], name=model)
    )
    args = ["eval", "gate", "--candidate", "cand", "--baseline", "prod", "--config", str(gate_yaml), "--json"]
    return CliRunner().invoke(app, args), registry


def test_cli_gate_exit_codes_report_and_registry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, suite_file: Path
) -> None:
    result, registry = _cli(monkeypatch, tmp_path, suite_file, WORSE)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["passed"] is False
    html = Path(report["report_path"]).read_text()
    assert "REGRESSION" in html and "data:image/png;base64," in html and "Within 60 days." in html
    assert registry.get_model("cand").metadata["gate"]["passed"] is False

    result, registry = _cli(monkeypatch, tmp_path, suite_file, GOOD)
    assert result.exit_code == 0, result.stdout
    assert registry.get_model("cand").metadata["gate"]["passed"] is True


def test_run_suite_records_faithfulness_with_a_verifier(tmp_path: Path) -> None:
    path = tmp_path / "ctx.yaml"
    path.write_text(
        "name: ctx\ncases:\n  - id: a\n    question: How long?\n"
        "    context: [{doc_id: d1, text: Electronics can be returned within 14 days.}]\n"
        "    expect: {must_contain: ['14 days']}\n"
    )
    suite = load_suite(path)
    faithful = run_suite(
        "ctx", suite.cases, FakeResponder({"a": "returned within 14 days"}), verifier=OverlapVerifier()
    )
    invented = run_suite(
        "ctx", suite.cases, FakeResponder({"a": "within 14 days, plus free Mars shipping"}), verifier=OverlapVerifier()
    )
    assert faithful.summary()["hallucination_mean"] == 0.0
    assert invented.summary()["hallucination_mean"] > 0.3


def test_regression_after_sync_reports_a_drop(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, suite_file: Path
) -> None:
    from helpline.evaluation.hooks import regression_after_sync
    from helpline.platform.context import Context

    monkeypatch.setenv("HELPLINE_WORKSPACE", str(tmp_path / "ws"))
    ctx = Context.load()
    first = regression_after_sync(ctx, suite=suite_file, responder=FakeResponder(GOOD))
    assert first["pass_rate"] == 1.0 and "dropped" not in first
    # Sync #2 lost a fact: the same suite now fails a case, and the hook says so.
    second = regression_after_sync(ctx, suite=suite_file, responder=FakeResponder(WORSE))
    assert second["dropped"] is True
    assert Path(second["report"]).exists()


def test_kb_sync_check_answers_the_suite_and_exits_1_when_it_got_worse(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, suite_file: Path
) -> None:
    import functools

    from helpline.cli import kb as kb_cli
    from helpline.cli.app import app
    from helpline.evaluation import hooks

    monkeypatch.setenv("HELPLINE_WORKSPACE", str(tmp_path / "ws"))
    registry = Registry(tmp_path / "ws" / "registry.sqlite")
    for name in ("smollm2-support", "staging"):
        registry.register_model(name, kind="base", path=tmp_path)
    registry.set_alias("production", "smollm2-support")
    registry.register_model("det", kind="detector", path=tmp_path)
    synced: dict = {"added": [], "updated": ["returns"], "deleted": [], "kept": [], "unchanged": 29}
    synced.update(chunks_embedded=2, failed=[], version=7)
    syncs: list[Path] = []

    def sync_folder(ctx, folder, rebuild=False):  # type: ignore[no-untyped-def]
        syncs.append(folder)
        return dict(synced)

    monkeypatch.setattr(kb_cli, "sync_folder", sync_folder)
    mini = functools.partial(hooks.regression_after_sync, suite=suite_file)
    monkeypatch.setattr(kb_cli, "regression_after_sync", mini)
    answers = iter([GOOD, GOOD, WORSE])
    models: list[str] = []

    def responder(ctx, *, model):  # type: ignore[no-untyped-def]
        models.append(model)
        return FakeResponder(next(answers), name="smollm2-support")

    monkeypatch.setattr(hooks, "build_responder", responder)
    runner = CliRunner()
    first = runner.invoke(app, ["kb", "sync", str(tmp_path), "--check", "--json"])
    assert first.exit_code == 0, first.output
    check = json.loads(first.stdout)["check"]
    assert check["pass_rate"] == 1.0 and "dropped" not in check  # nothing to compare with yet
    same = runner.invoke(app, ["kb", "sync", str(tmp_path), "--check", "--json"])
    assert same.exit_code == 0 and json.loads(same.stdout)["check"]["dropped"] is False
    worse = runner.invoke(app, ["kb", "sync", str(tmp_path), "--check", "--check-model", "staging", "--json"])
    assert worse.exit_code == 1
    assert json.loads(worse.stdout)["check"]["previous_pass_rate"] == 1.0
    assert "got worse after this sync (knowledge-base version 7)" in worse.output
    assert models == ["production", "production", "staging"]
    for wrong in ("det", "typo"):  # refused before the folder is synced
        refused = runner.invoke(app, ["kb", "sync", str(tmp_path), "--check", "--check-model", wrong])
        assert isinstance(refused.exception, (ConfigError, NotFoundError)) and wrong in str(refused.exception)
    assert len(syncs) == 3


def test_a_drop_in_scores_fails_even_when_both_fail_every_case(tmp_path: Path) -> None:
    # Small models fail strict cases outright; the gate still sees answers getting worse.
    path = tmp_path / "two.yaml"
    path.write_text(
        "name: two\ncases:\n"
        "  - {id: a, question: q, expect: {must_contain: ['14 days', 'prepaid label']}}\n"
        "  - {id: b, question: q, expect: {must_contain: ['free', 'drop-off']}}\n"
    )
    suite = load_suite(path)
    base = [run_suite("two", suite.cases, FakeResponder({"a": "14 days", "b": "free"}))]
    cand = [run_suite("two", suite.cases, FakeResponder({"a": "no idea", "b": "no idea"}))]
    report = decide("c", "b", cand, base, GateConfig(suites=[str(path)]))
    assert base[0].summary()["pass_rate"] == cand[0].summary()["pass_rate"] == 0.0
    assert not report.passed
    failed = {c.name for c in report.checks if not c.passed}
    assert {"two: mean score vs baseline", "two: must_contain vs baseline"} <= failed


def test_missing_detector_without_data_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from helpline.guard.selection import load_detector
    from helpline.platform.context import Context
    from helpline.platform.errors import NotFoundError
    from helpline.training.detector.default import ensure_default_detector

    monkeypatch.setenv("HELPLINE_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("HELPLINE_HALUEVAL_DIR", str(tmp_path / "absent"))
    ctx = Context.load()
    ensure_default_detector(ctx, "helpline-detector")  # no data: trains nothing
    with pytest.raises(NotFoundError, match="train-detector"):
        load_detector(ctx, "helpline-detector")


def test_only_a_chat_model_can_be_a_candidate(tmp_path: Path) -> None:
    from helpline.evaluation.regression.factory import resolve_model
    from helpline.platform.context import Context
    from helpline.platform.settings import Settings

    registry = Registry(tmp_path / "registry.sqlite")
    registry.register_model("prod", kind="base", path=tmp_path)
    registry.register_model("det", kind="detector", path=tmp_path / "det")
    ctx = Context(Settings(workspace=tmp_path / "ws"), registry=registry)
    with pytest.raises(ConfigError, match="'det' is a hallucination detector, not a chat model"):
        resolve_model(ctx, "det")
    embedder = tmp_path / "minilm"
    embedder.mkdir()
    (embedder / "config.json").write_text("{}")
    (embedder / "tokenizer_config.json").write_text('{"model_max_length": 512}')
    with pytest.raises(ConfigError, match="no chat template"):
        resolve_model(ctx, str(embedder))
    assert [m.name for m in registry.list_models()] == ["prod", "det"]  # nothing registered for it
    (embedder / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')
    name = resolve_model(ctx, str(embedder))
    assert registry.get_model(name).kind == "base" and name.startswith("candidate-")


def test_the_gate_checks_faithfulness_with_the_registered_detector(tmp_path: Path) -> None:
    from helpline.guard.selection import chosen_detector

    assert GateConfig(suites=["support"]).detector == "auto" == load_gate_config().detector
    registry = Registry(tmp_path / "registry.sqlite")
    assert chosen_detector(registry, "auto") is None  # a fresh workspace: no faithfulness check, nothing trained
    registry.register_model("helpline-detector", kind="detector", path=tmp_path)
    assert chosen_detector(registry, "auto") == "helpline-detector"
    assert chosen_detector(registry, "none") is None and chosen_detector(registry, None) is None
    assert chosen_detector(registry, "my-detector") == "my-detector"  # any other name is taken as given

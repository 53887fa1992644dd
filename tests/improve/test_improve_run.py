"""`helpline improve` runs: resumed after a crash without repeating finished steps, nothing done below
``min_corrections``, a failed gate leaves production alone, lineage reaches the registry, and the schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from improve_support import BALANCED, FEW, Loop, options, seed_correction

from helpline.improve.run import improve, last_cursor, list_runs, run_every, runs_root
from helpline.platform.errors import HelplineError
from helpline.platform.runs import read_state
from helpline.training.loop.mix import replay_source


def seed_all(loop: Loop) -> list[str]:
    return [seed_correction(loop.store, doc) for doc in ("refunds", "address", "express", "cancel")]


def test_a_step_that_crashes_midway_is_resumed_without_repeating_the_finished_steps(loop: Loop) -> None:
    seed_all(loop)
    loop.training.fail = {"preference"}

    with pytest.raises(RuntimeError, match="preference crashed"):
        improve(loop.ctx, options(skip_canary=True), parts=loop.parts())

    [run_dir] = [p for p in runs_root(loop.ctx).iterdir() if p.is_dir()]
    state = read_state(run_dir)
    assert state is not None
    assert {n: r.status for n, r in state.steps.items() if r.status != "pending"} == {
        "collect": "done",
        "train_sft": "done",
        "train_preference": "failed",
    }
    assert loop.ctx.registry.aliases()["production"] == "base"

    result = improve(loop.ctx, options(skip_canary=True), parts=loop.parts())

    assert result["resumed"] and result["run"] == run_dir.name and result["status"] == "promoted"
    assert (loop.training.count("sft"), loop.training.count("preference"), loop.training.count("export")) == (1, 2, 1)
    assert result["steps"]["collect"]["attempts"] == 1 and result["steps"]["train_sft"]["attempts"] == 1
    assert loop.ctx.registry.aliases()["production"] == result["candidate"] == f"improve-{run_dir.name}"
    assert "improve.train_preference.failed" in loop.actions() and loop.actions()[-1] == "improve.canary"


def test_an_export_killed_after_registering_is_not_exported_twice(loop: Loop) -> None:
    seed_all(loop)
    parts = loop.parts()
    original = parts.training.export

    def export_then_crash(run_dir: Path, *, name: str) -> dict:
        original(run_dir, name=name)
        raise KeyboardInterrupt  # killed right after the registry took the adapter

    parts.training.export = export_then_crash  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        improve(loop.ctx, options(skip_canary=True), parts=parts)
    result = improve(loop.ctx, options(skip_canary=True), parts=loop.parts())

    assert result["status"] == "promoted" and loop.training.count("export") == 1
    assert result["steps"]["export"]["attempts"] == 2


def test_fewer_new_corrections_than_the_minimum_do_nothing_and_wait_for_the_next_run(loop: Loop) -> None:
    seed_correction(loop.store, "refunds")
    seed_correction(loop.store, "address")

    first = improve(loop.ctx, options(min_corrections=3, skip_canary=True), parts=loop.parts())

    assert first["status"] == "skipped" and "2 new staff correction(s)" in first["reason"]
    assert loop.training.calls == [] and loop.gate.calls == []
    assert loop.ctx.registry.aliases()["production"] == "base"
    assert "improve.collect" in loop.actions()

    seed_correction(loop.store, "express")
    second = improve(loop.ctx, options(min_corrections=3, skip_canary=True), parts=loop.parts())

    assert not second["resumed"] and second["run"] != first["run"]
    assert second["steps"]["collect"]["outputs"]["counts"]["corrections"] == 3  # the first two waited, not lost
    assert second["status"] == "promoted"


def test_a_batch_of_corrections_contradicting_the_knowledge_base_trains_nothing(loop: Loop) -> None:
    contradictions = {  # each article states another figure (improve_support.PASSAGES)
        "refunds": "Your refund reaches your card within 60 days.",
        "address": "Yes: change it in Account > Orders within 24 hours of ordering.",
        "express": "Express shipping costs €19.90 and arrives the next working day.",
    }
    for doc, wrong in contradictions.items():
        rid = seed_correction(loop.store, doc)
        loop.store.add_feedback(rid, rating="down", comment="", correction=wrong, key_id=2)

    result = improve(loop.ctx, options(skip_canary=True), parts=loop.parts())

    assert result["status"] == "skipped" and "0 new staff correction(s)" in result["reason"]
    assert result["steps"]["collect"]["outputs"]["counts"]["excluded"] == {"unbacked_figures": 3}
    assert loop.training.calls == [] and loop.gate.calls == []
    assert loop.ctx.registry.aliases() == {"production": "base"}


def test_a_failed_gate_ends_the_run_with_production_unchanged(loop: Loop) -> None:
    seed_all(loop)
    loop.gate.passed = False

    result = improve(loop.ctx, options(), parts=loop.parts())

    assert result["status"] == "refused"
    assert loop.ctx.registry.aliases() == {"production": "base"}  # no canary either
    candidate = loop.ctx.registry.get_model(result["candidate"])
    assert candidate.metadata["gate"]["passed"] is False
    assert result["steps"]["canary"]["outputs"]["skipped"].startswith("the candidate failed the promotion gate")
    refused = [e for e in loop.store.audit_log() if e["action"] == "improve.refused"]
    assert refused and refused[0]["target"] == candidate.name and refused[0]["detail"]["production"] == "base"
    assert loop.store.get_setting("canary_share") is None
    # the run is over: the next one starts anew, after the refused corrections
    again = improve(loop.ctx, options(), parts=loop.parts())
    assert not again["resumed"] and again["status"] == "skipped" and len(loop.gate.calls) == 1


def test_the_candidate_carries_its_lineage_and_the_next_loop_replays_its_dataset(loop: Loop) -> None:
    rids = seed_all(loop)

    first = improve(loop.ctx, options(skip_canary=True), parts=loop.parts())

    record = loop.ctx.registry.get_model(first["candidate"])
    lineage = record.metadata["improve"]
    mix = first["steps"]["collect"]["outputs"]["mix"]
    assert sorted(lineage["corrections"]["trained"] + lineage["corrections"]["heldout"]) == sorted(rids)
    assert mix["heldout_cases"] == 1 and mix["pairs"] == 3
    assert lineage["parent_adapter"] is None and lineage["production_at_start"] == "base"
    assert Path(lineage["manifest"]).is_file() and lineage["preference"]["method"] == "dpo"
    dataset = Path(record.metadata["dataset"]["path"])
    assert (dataset / "train.jsonl").is_file() and (dataset / "validation.jsonl").is_file()
    assert json.loads((dataset / "manifest.json").read_text())["name"] == first["candidate"]
    [(candidate, baseline, heldout)] = loop.gate.calls
    assert (candidate, baseline) == (first["candidate"], "base") and heldout is not None and heldout.is_file()
    # the preference step continued the SFT adapter
    pref = next(kw for part, kw in loop.training.calls if part == "preference")
    assert pref["init_adapter"] == Path(first["steps"]["train_sft"]["outputs"]["adapter"])
    # ... and is measured on the held-out corrections' pairs
    assert mix["heldout_pairs"] == 1
    assert pref["eval_pairs"] == Path(first["steps"]["collect"]["outputs"]["heldout_pairs"])

    assert replay_source(loop.ctx.registry) == dataset  # production is now the candidate
    seed_correction(loop.store, "refunds", rid="resp-refunds-2")
    second = improve(loop.ctx, options(skip_canary=True, heldout_share=0.0), parts=loop.parts())

    assert second["steps"]["collect"]["outputs"]["counts"]["corrections"] == 1  # only what came after the cursor
    assert second["steps"]["collect"]["outputs"]["mix"]["replay_rows"] > 0
    assert loop.ctx.registry.get_model(second["candidate"]).metadata["improve"]["parent_adapter"] == first["candidate"]


def test_a_run_without_pairs_skips_preference_and_exports_the_sft_adapter(loop: Loop) -> None:
    rid = seed_correction(loop.store, "refunds")
    loop.store.add_feedback(rid, rating="up", correction="Your refund reaches your card within 14 days.", key_id=2)

    result = improve(loop.ctx, options(skip_canary=True), parts=loop.parts())

    assert result["steps"]["train_preference"]["outputs"]["skipped"].startswith("no (correction, replaced draft)")
    assert result["steps"]["export"]["outputs"]["from_run"] == result["steps"]["train_sft"]["outputs"]["run_dir"]
    assert result["status"] == "promoted" and loop.training.count("preference") == 0


def test_abandoning_an_unfinished_run_stops_its_canary_and_starts_anew_from_its_cursor(loop: Loop) -> None:
    seed_all(loop)
    loop.arms.looks = [(BALANCED, FEW)]
    pending = improve(loop.ctx, options(), parts=loop.parts())
    assert pending["status"] == "canary_pending" and loop.store.get_setting("canary_share") == "10.0"

    fresh = improve(loop.ctx, options(abandon=True), parts=loop.parts())

    old = runs_root(loop.ctx) / pending["run"]
    assert json.loads((old / "abandoned.json").read_text())["canary_stopped"]["canary"] == "base"
    assert "improve.abandon" in loop.actions() and "model.canary_cleared" in loop.actions()
    # the abandoned run never finished, so its corrections are collected again
    assert not fresh["resumed"] and fresh["run"] != pending["run"]
    assert fresh["steps"]["collect"]["outputs"]["since"] is None
    assert fresh["steps"]["collect"]["outputs"]["counts"]["corrections"] == 4
    assert loop.ctx.registry.aliases()["canary"] == fresh["candidate"] != pending["candidate"]


def test_the_cursor_is_the_last_finished_runs(loop: Loop) -> None:
    assert last_cursor(runs_root(loop.ctx)) is None
    seed_all(loop)
    result = improve(loop.ctx, options(skip_canary=True), parts=loop.parts())
    assert last_cursor(runs_root(loop.ctx)) == result["steps"]["collect"]["outputs"]["until"] is not None


def test_the_schedule_runs_until_told_to_stop_and_outlives_a_failed_run() -> None:
    results: list[dict] = []
    outcomes = iter([HelplineError("export refused", hint="retrain"), {"status": "promoted"}])
    waits: list[float] = []

    def once() -> dict:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return len(waits) == 2  # stop asked during the second wait

    runs = run_every(once, 21600.0, wait=wait, report=results.append)

    assert runs == 2 and waits == [21600.0, 21600.0]
    assert (
        results[0]["status"] == "error"
        and results[0]["error"] == "export refused"
        and results[1]["status"] == "promoted"
    )


def test_runs_are_ordered_by_when_they_began_even_past_nine_in_one_second(tmp_path: Path) -> None:
    for name in ("20250101-120000-10", "20250101-120000", "20250101-120000-2", "20241231-235959", "notes"):
        (tmp_path / name).mkdir()
    assert [p.name for p in list_runs(tmp_path)] == [
        "20241231-235959",
        "20250101-120000",
        "20250101-120000-2",
        "20250101-120000-10",
    ]

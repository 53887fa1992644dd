"""The loop's parts on their own: the mix as a dataset `train sft` reads, the recipes' overrides, durations, the
canary's arms counted from the gateway's log, the held-out checks, and `improve` as a console job."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from helpline.answering.decision import Verdict
from helpline.cli.app import app
from helpline.evaluation.gate import Thresholds
from helpline.evaluation.report import Check, GateReport
from helpline.improve.arms import StoreArms
from helpline.improve.gating import with_heldout
from helpline.improve.options import load_options
from helpline.improve.training import RecipeTraining, write_sft_dataset
from helpline.platform.context import Context
from helpline.platform.durations import parse_duration
from helpline.platform.errors import ConfigError
from helpline.platform.settings import Settings
from helpline.serving.gateway.store import GatewayStore
from helpline.training.data.prepare import resolve_dataset
from helpline.training.preference import load_preference_config
from helpline.training.sft.config import load_config


def rows(n: int) -> list[dict[str, Any]]:
    return [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(n)
    ]


def write_sft(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows(n)))
    return path


def test_the_mix_becomes_a_dataset_train_sft_reads_with_a_named_manifest(tmp_path: Path) -> None:
    lineage = write_sft_dataset(
        write_sft(tmp_path, 20), tmp_path / "ds", name="improve-x", loop_manifest=tmp_path / "manifest.json", seed=0
    )

    folder = resolve_dataset(lineage["path"], tmp_path / "unused")
    manifest = json.loads((folder / "manifest.json").read_text())
    train = (folder / "train.jsonl").read_text().splitlines()
    validation = (folder / "validation.jsonl").read_text().splitlines()
    assert (len(train), len(validation)) == (18, 2) and not set(train) & set(validation)
    assert (manifest["name"], manifest["version"], manifest["dataset_hash"]) == ("improve-x", "v1", lineage["hash"])
    assert not manifest["validation_overlaps_train"]


def test_a_single_row_is_trained_on_and_validated_on(tmp_path: Path) -> None:
    lineage = write_sft_dataset(write_sft(tmp_path, 1), tmp_path / "ds", name="n", loop_manifest=tmp_path, seed=0)
    folder = Path(lineage["path"])
    assert (folder / "train.jsonl").read_text() == (folder / "validation.jsonl").read_text() != ""
    assert json.loads((folder / "manifest.json").read_text())["validation_overlaps_train"]


def recipe(tmp_path: Path, **kw: Any) -> RecipeTraining:
    values = {
        "sft_config": "smollm2-135m-grounded-cpu",
        "sft_steps": None,
        "sft_set": [],
        "pref_config": "smollm2-135m-dpo-cpu",
        "pref_steps": None,
        "pref_set": [],
        "method": "dpo",
        **kw,
    }
    return RecipeTraining(Context(Settings(workspace=tmp_path)), **values)


def test_tiny_step_counts_give_a_valid_sft_config_that_evaluates_and_exports_nothing(tmp_path: Path) -> None:
    training = recipe(tmp_path, sft_steps=2, sft_set=["max_length=256"])
    overrides = training.sft_overrides(tmp_path / "ds", tmp_path / "run", base_model="smollm2-135m-instruct")
    cfg, _ = load_config("smollm2-135m-grounded-cpu", overrides)
    assert (cfg.max_steps, cfg.eval_steps, cfg.save_steps, cfg.warmup_steps) == (2, 2, 2, 0)
    assert (cfg.export, cfg.max_length, cfg.output_dir, cfg.dataset) == (
        False,
        256,
        str(tmp_path / "run"),
        str(tmp_path / "ds"),
    )

    cfg, _ = load_config(
        "smollm2-135m-grounded-cpu", recipe(tmp_path, sft_steps=30).sft_overrides(tmp_path, tmp_path, base_model="b")
    )
    assert (cfg.eval_steps, cfg.save_steps) == (15, 15)  # the preset's 20 would leave 10 steps unevaluated


def test_the_preference_run_continues_the_sft_adapter_with_the_chosen_method(tmp_path: Path) -> None:
    training = recipe(tmp_path, pref_steps=2, method="orpo")
    cfg, _ = load_preference_config(
        "smollm2-135m-dpo-cpu", training.pref_overrides(tmp_path / "run", base_model="b", init_adapter=tmp_path / "a")
    )
    assert (cfg.method, cfg.max_steps, cfg.init_adapter, cfg.export) == ("orpo", 2, str(tmp_path / "a"), False)


@pytest.mark.parametrize(
    ("text", "seconds"), [("6h", 21600), ("30m", 1800), ("1h30m", 5400), ("45", 45), ("2d", 172800), ("0s", 0)]
)
def test_durations_read_as_people_write_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "", "6 hours", "h"])
def test_a_duration_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration(text)


def test_options_report_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        load_options(canary_share=0, sft_set=["max_length"], method="ppo")
    assert "canary_share" in e.value.message and "max_length" in e.value.message and "method" in e.value.message


@dataclass
class Judge:
    """Unsupported when the answer says "free"."""

    def verify(self, answer: str, passages: list[Any]) -> Verdict:
        return Verdict(grounded="free" not in answer)


def turn(store: GatewayStore, rid: str, *, at: float, adapter: str | None, served: str = "base", **row: Any) -> None:
    passage = {"doc_id": "d", "title": "D", "chunk_id": "d#0", "score": 0.9, "text": "Shipping costs 5 euros."}
    store.record_turn(
        **{
            "response_id": rid,
            "conversation_id": f"c-{rid}",
            "at": at,
            "key_id": 1,
            "role": "customer",
            "model": "helpline-support",
            "served_model": served,
            "adapter": adapter,
            "messages": [{"role": "user", "content": "cost?"}],
            "passages": [passage],
            "answer": "It costs 5 euros.",
            "abstained": 0,
            "latency_ms": 500.0,
            "status": "ok",
            "withdrawn": None,
            "verification": None,
            "origins": ["client"],
            "internal": 0,
            **row,
        }
    )


def test_the_arms_count_what_each_model_served_to_the_split_traffic_since_the_canary_started(tmp_path: Path) -> None:
    store = GatewayStore(tmp_path / "g.sqlite")
    turn(store, "old", at=5.0, adapter="cand")  # before the canary started
    turn(store, "p1", at=10.0, adapter=None)
    turn(store, "p2", at=11.0, adapter=None, abstained=1, answer="handoff")
    turn(store, "c1", at=10.0, adapter="cand", served="cand-1234", answer="Shipping is free.", latency_ms=900.0)
    turn(store, "c2", at=12.0, adapter="cand", served="cand-1234", withdrawn="a draft")
    turn(store, "c3", at=13.0, adapter="cand", model="helpline-support-canary")  # asked for by name: not split
    turn(store, "c4", at=14.0, adapter="cand", status="error")
    store.add_feedback("c1", rating="down", key_id=1)
    store.add_feedback("p1", rating="up", key_id=1)

    production, canary = StoreArms(store, verifier=Judge()).counts(production="base", canary="cand", since=10.0)

    assert (production.answers, production.handoffs, production.thumbs_down, production.sampled) == (2, 1, 0, 1)
    assert (canary.answers, canary.thumbs_down, canary.withdrawals, canary.sampled, canary.wrong_served) == (
        2,
        1,
        1,
        2,
        1,
    )
    assert sorted(canary.latencies_s) == [0.5, 0.9]
    unjudged, _ = StoreArms(store).counts(production="base", canary="cand", since=10.0)
    assert unjudged.sampled == 0 and unjudged.answers == 2


def test_turns_since_pages_through_every_turn_in_order_from_the_canary_start(tmp_path: Path) -> None:
    store = GatewayStore(tmp_path / "g.sqlite")
    for rid, at in (("a", 1.0), ("e", 3.0), ("b", 2.0), ("d", 2.0), ("c", 2.0), ("f", 4.0)):
        turn(store, rid, at=at, adapter=None)
    assert [t["response_id"] for t in store.turns_since(2.0, page=2)] == ["b", "c", "d", "e", "f"]


def test_a_candidate_worse_on_the_held_out_corrections_fails_the_gate() -> None:
    passed = GateReport("cand", "prod", True, [Check("support: pass rate", 0.9, 0.9, "drop ≤ 0.05", True)])
    cand = {"correct_rate": 0.25, "wrong_served_rate": 0.5}
    base = {"correct_rate": 0.75, "wrong_served_rate": 0.25}

    report = with_heldout(passed, cand, base, Thresholds())

    assert not report.passed
    assert [c.name for c in report.checks if not c.passed] == [
        "heldout corrections: correct as served vs baseline",
        "heldout corrections: wrong served vs baseline",
    ]
    assert report.summaries["heldout@candidate"] is cand
    better = with_heldout(GateReport("c", "p", True, []), base, cand, Thresholds())
    assert better.passed and len(better.checks) == 2


def test_improve_is_a_command_the_console_may_start_as_a_job() -> None:
    out = CliRunner().invoke(app, ["commands", "improve", "train"])
    commands = json.loads(out.stdout)
    assert "improve" in commands and "train sft" in commands and "improve improve" not in commands

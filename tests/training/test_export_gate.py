"""The export gate's decision with the engines replaced: bf16 drift is told apart from a broken adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpline.platform.context import Context
from helpline.platform.errors import ConfigError
from helpline.training import export
from helpline.training.export import ExportRefusedError, export_adapter

REFERENCE = [[1, 2, 3, 4], [5, 6, 7, 8]]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    from helpline.testing.training import tiny_tokenizer

    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    tiny_tokenizer().save_pretrained(run / "adapter")
    summary = {"base_model": "base", "base_model_path": str(tmp_path / "base"), "config": {},
               "dataset": {"name": "d", "version": "v1", "hash": "0" * 64},
               "best_eval_loss": 1.0, "final_eval_loss": 1.0, "train_loss": 1.0, "global_step": 2}  # fmt: skip
    (run / "training_summary.json").write_text(json.dumps(summary))
    return run


def _engines(monkeypatch, outputs_by_dtype: dict[str, list[list[int]]]) -> list[str]:
    asked: list[str] = []

    def fake_vllm(base_path, adapter_dir, prompts, *, max_tokens, settings):
        asked.append(settings.dtype)
        return {"outputs": outputs_by_dtype[settings.dtype], "load_seconds": 1.0}

    monkeypatch.setattr(export, "vllm_generate", fake_vllm)
    monkeypatch.setattr(export, "peft_generate", lambda *a, **k: REFERENCE)
    monkeypatch.setattr(export, "fixed_prompts", lambda tokenizer: [[0], [0]])
    return asked


def test_bf16_drift_that_float32_resolves_is_registered_with_both_figures(run_dir, tmp_path, monkeypatch):
    asked = _engines(monkeypatch, {"bfloat16": [[1, 9, 9, 9], [5, 9, 9, 9]], "float32": REFERENCE})
    ctx = Context.load(workspace=tmp_path / "ws")
    report = export_adapter(run_dir, ctx=ctx, name="ad")
    assert asked == ["bfloat16", "float32"]
    assert report["passed"] and report["registered"] == "ad"
    assert report["agreement_serving_dtype"]["mean_prefix_agreement"] == 0.25
    assert report["agreement"]["mean_prefix_agreement"] == 1.0 and report["agreement"]["dtypes"]["vllm"] == "float32"
    assert ctx.registry.get_model("ad").metadata["export_gate"]["agreement"]["mean_prefix_agreement"] == 1.0


def test_an_adapter_that_disagrees_in_float32_too_is_refused(run_dir, tmp_path, monkeypatch):
    wrong = [[9, 9, 9, 9], [9, 9, 9, 9]]
    asked = _engines(monkeypatch, {"bfloat16": wrong, "float32": wrong})
    with pytest.raises(ExportRefusedError, match=r"token agreement 0\.0 < 0\.5"):
        export_adapter(run_dir, ctx=Context.load(workspace=tmp_path / "ws"), name="ad")
    assert asked == ["bfloat16", "float32"]


def test_agreement_in_the_serving_dtype_needs_no_second_engine(run_dir, tmp_path, monkeypatch):
    asked = _engines(monkeypatch, {"bfloat16": REFERENCE})
    report = export_adapter(run_dir, ctx=Context.load(workspace=tmp_path / "ws"), name="ad")
    assert asked == ["bfloat16"] and "agreement_serving_dtype" not in report


def test_reference_answers_stop_at_any_end_of_turn_token(tmp_path):
    """A chat model's generation config lists several stop tokens (Gemma 3: <eos> and <end_of_turn>)."""
    from peft import LoraConfig, get_peft_model

    from helpline.testing.training import tiny_llama, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model = tiny_llama(tokenizer)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    model.save_pretrained(tmp_path / "base")
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "adapter")
    prompt = tokenizer("Where is my refund?")["input_ids"]
    out = export.peft_generate(tmp_path / "base", tmp_path / "adapter", [prompt], max_tokens=6)
    assert len(out) == 1 and 1 <= len(out[0]) <= 6


def test_a_folder_that_is_not_a_finished_run_is_refused_with_what_to_pass(tmp_path, monkeypatch):
    from helpline.platform.errors import NotFoundError

    monkeypatch.setenv("HELPLINE_WORKSPACE", str(tmp_path / "ws"))
    (tmp_path / "half-run" / "checkpoint-10").mkdir(parents=True)
    with pytest.raises(NotFoundError, match="not a finished training run") as err:
        export_adapter(tmp_path / "half-run", ctx=Context.load())
    assert "helpline train sft" in (err.value.hint or "")


def test_exporting_under_the_name_production_serves_is_refused_before_anything_is_written(
    run_dir, tmp_path, monkeypatch
):
    asked = _engines(monkeypatch, {"bfloat16": REFERENCE})
    ctx = Context.load(workspace=tmp_path / "ws")
    ctx.registry.register_model("base", kind="base", path=tmp_path / "base")
    ctx.registry.register_model("support", kind="adapter", path=tmp_path / "live", base_model="base")
    ctx.registry.set_alias("production", "support")
    with pytest.raises(ConfigError, match="'support' already exists in the registry") as err:
        export_adapter(run_dir, ctx=ctx, name="support")
    assert "'production' points at it" in str(err.value) and "--name" in err.value.hint
    assert asked == []  # refused before the (minutes-long) engine checks
    assert not (run_dir / "export_report.json").exists() and not (run_dir / "adapter" / "README.md").exists()
    assert not (ctx.workspace.models / "support").exists()
    assert ctx.registry.get_model("production").path == str(tmp_path / "live")


def test_an_exported_adapter_is_served_from_its_own_folder_which_a_new_run_cannot_overwrite(
    run_dir, tmp_path, monkeypatch
):
    _engines(monkeypatch, {"bfloat16": REFERENCE})
    ctx = Context.load(workspace=tmp_path / "ws")
    export_adapter(run_dir, ctx=ctx, name="ad")
    served = Path(ctx.registry.get_model("ad").path)
    assert served == ctx.workspace.models / "ad"
    assert json.loads((served / "adapter_config.json").read_text())["r"] == 8 and (served / "README.md").is_file()
    (run_dir / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 4, "peft_type": "LORA"}))  # retrained
    assert json.loads((served / "adapter_config.json").read_text())["r"] == 8
    export_adapter(run_dir, ctx=ctx, name="ad-2")
    assert Path(ctx.registry.get_model("ad-2").path) == ctx.workspace.models / "ad-2"
    assert json.loads((served / "adapter_config.json").read_text())["r"] == 8


def test_an_exported_adapter_names_the_tracked_run_that_trained_it(run_dir, tmp_path, monkeypatch):
    summary = json.loads((run_dir / "training_summary.json").read_text())
    run = {"run_id": "0123abcd", "experiment": "helpline", "tracking_uri": "sqlite:///ws/mlflow.db"}
    (run_dir / "training_summary.json").write_text(json.dumps({**summary, "tracking": run}))
    _engines(monkeypatch, {"bfloat16": REFERENCE})
    ctx = Context.load(workspace=tmp_path / "ws")
    export_adapter(run_dir, ctx=ctx, name="ad")
    assert ctx.registry.get_model("ad").metadata["tracking"] == run

"""The SFT recipe end to end on a tiny Llama built from a config (no download, a few seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpline.platform.context import Context
from helpline.platform.errors import ConfigError
from helpline.testing.training import tiny_llama, tiny_tokenizer
from helpline.training.data.prepare import PrepareOptions, prepare_dataset
from helpline.training.sft.config import SFTConfig, load_config

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")


NAMES = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "po", "ru") for b in ("ta", "ve", "xo", "zu")]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-base")
    tokenizer = tiny_tokenizer()
    tiny_llama(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    lines = []
    for i, (topic, answer) in enumerate(
        [("refund", "Refunds take five days."), ("order", "Open My Orders and click Cancel."),
         ("delivery", "Your parcel is on its way."), ("password", "Click Forgot password.")] * 6
    ):  # fmt: skip
        question = f"{NAMES[i]} asks about the {topic}, {NAMES[-1 - i]} style"
        lines.append({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                      "intent": topic})  # fmt: skip
    (root / "chat.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    options = PrepareOptions(sources=[f"chat:{root / 'chat.jsonl'}"], name="tiny", validation=0.2, test=0.2,
                             sibling_threshold=0.99)  # fmt: skip
    return Path(prepare_dataset(options, datasets_dir=root / "ds", count_tokens=None, context_length=None)["path"])


def _config(tiny_base: Path, tiny_dataset: Path, out: Path, **kw) -> SFTConfig:
    base = dict(base_model=str(tiny_base), dataset=str(tiny_dataset), output_dir=str(out), method="lora",
                max_steps=4, eval_steps=2, logging_steps=1, per_device_train_batch_size=2, learning_rate=1e-2,
                lora_r=4, lora_alpha=8, warmup_steps=0, export=False, max_length=128)  # fmt: skip
    return SFTConfig(**{**base, **kw})


def _run(cfg: SFTConfig, tmp_path: Path) -> dict:
    from helpline.training.sft.trainer import run_sft

    return run_sft(cfg, preset="test", ctx=Context.load(workspace=tmp_path / "ws"))


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(next(path.glob("*.safetensors"))))


def test_lora_trains_adapter_only_with_finite_loss(tiny_base: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    summary = _run(_config(tiny_base, tiny_dataset, tmp_path / "run"), tmp_path)
    assert summary["global_step"] == 4
    assert torch.isfinite(torch.tensor(summary["train_loss"]))
    assert [p["step"] for p in summary["eval_curve"]] == [2, 4, 4] or summary["eval_curve"][0]["step"] == 2
    adapter = _weights(Path(summary["artifact"]))
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b), "LoRA B starts at zero; it must have moved"
    assert not any("lora" not in k for k in adapter), "only LoRA weights belong in the adapter"
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(str(tiny_base))
    original = _weights(tiny_base)
    for name, tensor in reloaded.state_dict().items():  # the base checkpoint on disk is untouched
        if name in original:
            assert torch.equal(tensor, original[name])
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_loss" in r for r in records) and any("loss" in r for r in records)


def test_full_fine_tuning_changes_the_base_weights(tiny_base: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    summary = _run(_config(tiny_base, tiny_dataset, tmp_path / "full", method="full", max_steps=2), tmp_path)
    tuned, original = _weights(Path(summary["artifact"])), _weights(tiny_base)
    changed = [k for k in original if k in tuned and not torch.equal(tuned[k].float(), original[k].float())]
    assert changed


def test_full_fine_tune_is_registered_as_a_base_model_with_its_lineage(
    tiny_base: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    from helpline.training.sft.trainer import register_full_model

    cfg = _config(tiny_base, tiny_dataset, tmp_path / "healed", method="full", max_steps=2, model_name="tiny-healed")
    ctx = Context.load(workspace=tmp_path / "ws")
    summary = _run(cfg, tmp_path)
    registered = register_full_model(summary, cfg, preset="test", ctx=ctx)
    record = ctx.registry.get_model("tiny-healed")
    assert registered == {"name": "tiny-healed", "path": summary["artifact"]}
    assert record.kind == "base" and record.metadata["chat"]
    training = record.metadata["training"]
    assert training["method"] == "full" and training["dataset"]["hash"] == summary["dataset"]["hash"]
    assert training["base_model"] == str(tiny_base)
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(record.path).config.num_hidden_layers == 2


def test_a_training_run_is_tracked_in_mlflow_and_named_in_the_registry_lineage(
    tiny_base: Path, tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tracking on (the default where mlflow is installed): the loss curve, config and dataset hash are in the
    workspace's MLflow store, the registered model's lineage names that run, and `models show` says how to open it."""
    mlflow = pytest.importorskip("mlflow")
    from typer.testing import CliRunner

    from helpline.cli.app import app
    from helpline.platform.settings import TrackingSettings
    from helpline.training.sft.trainer import register_full_model, run_sft

    ctx = Context.load(workspace=tmp_path / "ws", tracking=TrackingSettings())
    cfg = _config(tiny_base, tiny_dataset, tmp_path / "full", method="full", max_steps=2, model_name="tiny-tracked")
    summary = run_sft(cfg, preset="test", ctx=ctx)
    register_full_model(summary, cfg, preset="test", ctx=ctx)

    run = ctx.registry.get_model("tiny-tracked").metadata["training"]["tracking"]
    assert run["tracking_uri"] == f"sqlite:///{ctx.workspace.root / 'mlflow.db'}" and run == summary["tracking"]
    client = mlflow.MlflowClient(tracking_uri=run["tracking_uri"])
    got = client.get_run(run["run_id"])
    assert got.info.status == "FINISHED" and got.info.run_name == "full"
    assert [m.step for m in client.get_metric_history(run["run_id"], "loss")] == [1, 2]  # logging_steps=1
    assert got.data.metrics["best_eval_loss"] == pytest.approx(summary["best_eval_loss"])
    assert got.data.params["max_steps"] == "2" and got.data.params["method"] == "full"
    tags = got.data.tags
    assert tags["helpline.kind"] == "sft" and tags["helpline.base_model"] == str(tiny_base)
    assert tags["helpline.dataset_hash"] == summary["dataset"]["hash"]

    monkeypatch.setenv("HELPLINE_WORKSPACE", str(tmp_path / "ws"))
    shown = CliRunner().invoke(app, ["models", "show", "tiny-tracked"])
    assert shown.exit_code == 0, shown.output
    assert run["run_id"] in shown.output and f"mlflow ui --backend-store-uri {run['tracking_uri']}" in shown.output


def test_train_sft_json_prints_one_json_object(tiny_base: Path, tiny_dataset: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The trainer logs every step on stdout (its progress bar); with --json stdout holds the summary alone."""
    from typer.testing import CliRunner

    from helpline.cli.app import app

    monkeypatch.setenv("HELPLINE_WORKSPACE", str(tmp_path / "ws"))
    preset = tmp_path / "full.yaml"
    fields = {"base_model": str(tiny_base), "dataset": str(tiny_dataset), "method": "full", "export": False,
              "max_steps": 2, "eval_steps": 1, "logging_steps": 1, "per_device_train_batch_size": 2,
              "model_name": "tiny-cli"}  # fmt: skip
    preset.write_text(json.dumps(fields))  # JSON is YAML
    result = CliRunner().invoke(app, ["train", "sft", "--config", str(preset), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["global_step"] == 2 and summary["registered"]["name"] == "tiny-cli"
    assert "'loss'" in result.stderr  # the step logs are still shown, on stderr


def test_model_name_is_for_full_fine_tunes_only(tiny_base: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model_name names a full fine-tune"):
        _config(tiny_base, tiny_dataset, tmp_path / "x", method="lora", model_name="nope")


def test_interrupted_run_resumes_from_its_last_checkpoint(tiny_base: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumable"
    _run(_config(tiny_base, tiny_dataset, out, max_steps=2, early_stopping_patience=None), tmp_path)
    with pytest.raises(ConfigError, match="already has checkpoints"):
        _run(_config(tiny_base, tiny_dataset, out, max_steps=4), tmp_path)
    # early stopping was off in the interrupted run and is on now: resuming must still work
    summary = _run(_config(tiny_base, tiny_dataset, out, max_steps=4, resume=True), tmp_path)
    assert summary["resumed_from"] == "checkpoint-2"
    assert summary["global_step"] == 4


def test_a_run_whose_registry_name_is_taken_is_refused_before_it_trains(
    tiny_base: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    from helpline.training.sft.trainer import run_sft

    ctx = Context.load(workspace=tmp_path / "ws")
    ctx.registry.register_model("live", kind="base", path=tiny_base)
    ctx.registry.set_alias("production", "live")
    for cfg in (_config(tiny_base, tiny_dataset, tmp_path / "lora", export=True, adapter_name="live"),
                _config(tiny_base, tiny_dataset, tmp_path / "full", method="full", model_name="live")):  # fmt: skip
        with pytest.raises(ConfigError, match="'live' already exists in the registry"):
            run_sft(cfg, preset="test", ctx=ctx)
        assert not Path(cfg.output_dir).exists()  # nothing trained, nothing written
    assert ctx.registry.get_model("production").path == str(tiny_base)


def test_a_new_run_never_overwrites_the_weights_of_a_registered_model(
    tiny_base: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    from helpline.training.sft.trainer import register_full_model

    ctx = Context.load(workspace=tmp_path / "ws")
    cfg = _config(tiny_base, tiny_dataset, tmp_path / "full", method="full", max_steps=2, model_name="tiny-v1")
    summary = _run(cfg, tmp_path)
    register_full_model(summary, cfg, preset="test", ctx=ctx)
    weights = _weights(Path(summary["artifact"]))
    again = cfg.model_copy(update={"model_name": "tiny-v2", "overwrite": True})
    with pytest.raises(ConfigError, match="holds the weights of registered model tiny-v1") as err:
        _run(again, tmp_path)
    assert "run_name" in err.value.hint
    assert all(torch.equal(weights[k], v) for k, v in _weights(Path(summary["artifact"])).items())


def test_same_seed_same_adapter(tiny_base: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    a = _weights(Path(_run(_config(tiny_base, tiny_dataset, tmp_path / "a", max_steps=2), tmp_path)["artifact"]))
    b = _weights(Path(_run(_config(tiny_base, tiny_dataset, tmp_path / "b", max_steps=2), tmp_path)["artifact"]))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_config_reports_every_problem_at_once(tmp_path: Path) -> None:
    preset = tmp_path / "p.yaml"
    preset.write_text("dataset: x\neval_steps: 10\n")
    with pytest.raises(ConfigError) as err:
        load_config(preset, ["save_steps=15", "resume=true", "overwrite=true"])
    assert "save_steps (15) must be a multiple" in err.value.message
    assert "resume and overwrite" in err.value.message
    with pytest.raises(ConfigError) as err:
        load_config(preset, ["lora_r=0", "method=qlora4", "no_such_key=1"])
    for field in ("lora_r", "method", "no_such_key"):
        assert field in err.value.message


def test_shipped_presets_are_valid() -> None:
    configs = Path(__file__).parents[2] / "helpline" / "training" / "configs"
    # distill-*.yaml are distillation configs (test_distill.py); a preset whose header names
    # `helpline train preference` is a DPO/ORPO preset (test_preference.py)
    presets = sorted(
        p for p in configs.glob("*.yaml")
        if not p.name.startswith("distill-") and "helpline train preference" not in p.read_text().split("\n\n")[0]
    )
    assert len(presets) >= 4
    for preset in presets:
        cfg, _ = load_config(preset)
        assert preset.read_text().startswith("#") and "helpline train sft" in preset.read_text().split("\n\n")[0]
        if cfg.method != "full":
            assert set(cfg.lora_target_modules) >= {"q_proj", "v_proj"}


def test_training_bench_measures_each_method_in_its_own_process(tiny_base: Path, tiny_dataset: Path) -> None:
    from helpline.bench.training import run_bench

    report = run_bench(tiny_base, tiny_dataset, methods=["full", "lora"], steps=2, batch=2, max_length=128,
                       checkpointing=True)  # fmt: skip
    full, lora = report["methods"]["full"], report["methods"]["lora"]
    assert "error" not in full and "error" not in lora, report
    for r in (full, lora):
        assert r["gradient_checkpointing"] is True
        assert r["peak_rss_mb"] >= r["train_peak_rss_mb"] > r["baseline_rss_mb"] > 0
        assert r["tokens_per_s"] > 0
    assert lora["trainable_params"] < full["trainable_params"]
    assert "qlora_over_full_peak" not in report  # only computed when both were measured

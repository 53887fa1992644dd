"""Preference tuning: the config, the pairs file's checks, and the DPO/ORPO recipe on a tiny Llama built from a
config (no download, seconds)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpline.cli.app import app
from helpline.platform.context import Context
from helpline.platform.errors import ConfigError, DataError, NotFoundError
from helpline.testing.training import tiny_llama, tiny_tokenizer
from helpline.training.export import read_training_summary, static_checks
from helpline.training.preference.config import PreferenceConfig, load_preference_config
from helpline.training.preference.pairs import fits, read_pairs
from helpline.training.preference.trainer import resolve_init_adapter, train_preference

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
pytest.importorskip("trl")

SYSTEM = {"role": "system", "content": "Answer from the passages."}


def _pair(question: str, chosen: str, rejected: str) -> dict:
    return {"prompt": [SYSTEM, {"role": "user", "content": question}], "chosen": chosen, "rejected": rejected}


PAIRS = [
    _pair("How do I return an item?", "Open your orders, choose the item and click Return.", "Refunds take five days."),
    _pair("Where is my refund?", "Refunds take five to seven business days.", "Click Return."),
    _pair("How do I cancel my order?", "1. Log in. 2. Open My Orders.", "Thank you for reaching out!"),
    _pair("Can I talk to a person?", "Thank you for reaching out! Here is how.", "Open your orders."),
]


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# config ---------------------------------------------------------------------------------------


def test_the_shipped_cpu_preset_loads_and_overrides_apply() -> None:
    cfg, preset = load_preference_config("smollm2-135m-dpo-cpu", ["method=orpo", "max_steps=3"])
    assert preset == "smollm2-135m-dpo-cpu"
    assert (cfg.method, cfg.max_steps, cfg.base_model) == ("orpo", 3, "smollm2-135m-instruct")
    assert cfg.lora_r <= 16  # servable by vLLM with the default max_lora_rank


def test_every_shipped_preference_preset_loads() -> None:
    configs = Path(__file__).parents[2] / "helpline" / "training" / "configs"
    presets = [p for p in configs.glob("*.yaml") if "helpline train preference" in p.read_text().split("\n\n")[0]]
    assert presets
    for preset in presets:
        cfg, name = load_preference_config(preset)
        assert name == preset.stem and cfg.method in ("dpo", "orpo")


def test_config_errors_are_reported_together() -> None:
    with pytest.raises(ConfigError) as e:
        load_preference_config(None, ["method=ppo", "beta=0", "no_such_field=1"])
    assert "method" in e.value.message and "beta" in e.value.message and "no_such_field" in e.value.message


def test_cross_field_checks_refuse_contradictions() -> None:
    with pytest.raises(ValueError, match="max_steps") as e:
        PreferenceConfig(max_steps=0, quantization="none", compute_dtype="bfloat16")
    assert "compute_dtype" in str(e.value)


def test_a_missing_preset_is_not_found() -> None:
    with pytest.raises(NotFoundError):
        load_preference_config("no-such-preset")


# pairs ----------------------------------------------------------------------------------------


def test_pairs_in_conversational_format_are_read_and_strings_become_assistant_messages(tmp_path: Path) -> None:
    conversational = {**PAIRS[0], "chosen": [{"role": "assistant", "content": "Yes."}], "id": "kept-out"}
    pairs = read_pairs(_write(tmp_path / "p.jsonl", [conversational, "", PAIRS[1]]))
    assert len(pairs) == 2
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": "Yes."}]
    assert pairs[1]["rejected"] == [{"role": "assistant", "content": "Click Return."}]
    assert set(pairs[0]) == {"prompt", "chosen", "rejected"}


def test_every_bad_line_is_reported_with_its_number(tmp_path: Path) -> None:
    rows = [
        PAIRS[0],
        "{not json",
        {"prompt": PAIRS[0]["prompt"], "chosen": "x"},
        _pair("Same?", "Same answer.", " Same answer. "),
        {**PAIRS[0], "prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {**PAIRS[0], "chosen": [{"role": "user", "content": "not the assistant"}]},
        {**PAIRS[0], "rejected": ""},
        ["a", "list"],
    ]
    with pytest.raises(DataError) as e:
        read_pairs(_write(tmp_path / "bad.jsonl", rows))
    message = e.value.message
    assert "7 bad pair(s)" in message
    assert "line 1:" not in message
    for expected in ("line 2: not JSON", "line 3: missing rejected", "line 4: chosen and rejected are the same",
                     "line 5: prompt must end with a user message", "line 6: chosen must be",
                     "line 7: rejected is empty", "line 8: not a JSON object"):  # fmt: skip
        assert expected in message


def test_an_empty_or_missing_pairs_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no pairs"):
        read_pairs(_write(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(NotFoundError):
        read_pairs(tmp_path / "absent.jsonl")


def test_a_pair_longer_than_max_length_does_not_fit() -> None:
    tokenizer = tiny_tokenizer()
    pair = read_pairs_from(PAIRS[0])
    assert fits(tokenizer, pair, 512)
    assert not fits(tokenizer, {**pair, "rejected": [{"role": "assistant", "content": "long " * 300}]}, 512)


def read_pairs_from(row: dict) -> dict:
    return {**row, "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}]}  # fmt: skip


# the recipe on a tiny Llama -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-base")
    tokenizer = tiny_tokenizer()
    tiny_llama(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def init_adapter(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter whose B matrices are not zero: it changes the model, as a trained adapter does."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("init") / "adapter"
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_base)
    torch.manual_seed(1)
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft.get_peft_model(base, lora).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", PAIRS)


def _cfg(tiny_base: Path, out: Path, **kw) -> PreferenceConfig:
    base = dict(base_model=str(tiny_base), output_dir=str(out), max_steps=4, per_device_train_batch_size=2,
                learning_rate=5e-3, lora_r=4, lora_alpha=8, max_length=256, export=False)  # fmt: skip
    return PreferenceConfig(**{**base, **kw})


def _weights(folder: Path) -> dict:
    safetensors = pytest.importorskip("safetensors.torch")
    return safetensors.load_file(str(folder / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def dpo_from_init(tiny_base: Path, init_adapter: Path, pairs_file: Path, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("dpo")
    cfg = _cfg(tiny_base, root / "run", init_adapter=str(init_adapter))
    return train_preference(cfg, pairs_file, ctx=Context.load(workspace=root / "ws"), eval_pairs_path=pairs_file)


def test_dpo_from_an_init_adapter_uses_that_adapter_as_the_reference(dpo_from_init: dict) -> None:
    """At the first step the policy is the reference, so the DPO loss is exactly ln 2. Were the reference the
    adapter-disabled base model, the init adapter (non-zero B) would make it differ."""
    first = dpo_from_init["log"][0]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-4)


def test_dpo_training_widens_the_reward_margin(dpo_from_init: dict) -> None:
    log = dpo_from_init["log"]
    assert dpo_from_init["global_step"] == 4
    assert all(math.isfinite(h["loss"]) for h in log)
    assert log[-1]["rewards/margins"] > log[0]["rewards/margins"]
    after = dpo_from_init["eval"]["after"]
    assert after["mean_logprob_margin"] > dpo_from_init["eval"]["before"]["mean_logprob_margin"]


def test_the_saved_adapter_continues_the_init_adapter_and_only_it(dpo_from_init: dict, init_adapter: Path) -> None:
    saved = Path(dpo_from_init["artifact"])
    assert sorted(p.name for p in saved.iterdir() if p.is_dir()) == []  # no "ref/" adapter saved beside it
    assert json.loads((saved / "adapter_config.json").read_text())["r"] == 4
    before, after = _weights(init_adapter), _weights(saved)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_the_run_folder_is_one_the_export_gate_accepts(dpo_from_init: dict, init_adapter: Path) -> None:
    run_dir = Path(dpo_from_init["run_dir"])
    summary = read_training_summary(run_dir)
    assert static_checks(run_dir / "adapter", max_lora_rank=16) == []
    for key in ("base_model", "base_model_path", "config", "best_eval_loss", "final_eval_loss", "train_loss",
                "global_step"):  # fmt: skip
        assert key in summary
    assert summary["dataset"]["hash"] and summary["dataset"]["pairs"] == 4
    assert summary["init_adapter"]["path"] == str(init_adapter.resolve())
    assert (run_dir / "metrics.jsonl").read_text().count("\n") >= 4
    assert (run_dir / "adapter" / "tokenizer_config.json").is_file()


def test_orpo_trains_a_fresh_adapter(tiny_base: Path, pairs_file: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_base, tmp_path / "run", method="orpo", max_steps=2, beta=0.5)
    summary = train_preference(cfg, pairs_file, ctx=Context.load(workspace=tmp_path / "ws"))
    assert summary["method"] == "orpo" and summary["global_step"] == 2
    assert all(math.isfinite(h["loss"]) for h in summary["log"])
    weights = _weights(Path(summary["artifact"]))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in weights.items())  # it learnt


def test_a_finished_run_is_not_replaced_without_overwrite(tiny_base: Path, pairs_file: Path, tmp_path: Path) -> None:
    ctx = Context.load(workspace=tmp_path / "ws")
    (tmp_path / "run" / "adapter").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already holds a run") as e:
        train_preference(_cfg(tiny_base, tmp_path / "run"), pairs_file, ctx=ctx)
    assert "overwrite=true" in (e.value.hint or "")


def test_an_init_adapter_inside_the_output_folder_is_refused(
    tiny_base: Path, init_adapter: Path, pairs_file: Path
) -> None:
    """Replacing the run folder would delete the adapter before it is loaded."""
    cfg = _cfg(tiny_base, init_adapter.parent, init_adapter=str(init_adapter), overwrite=True)
    with pytest.raises(ConfigError, match="inside the output folder"):
        train_preference(cfg, pairs_file, ctx=Context.load(workspace=init_adapter.parent / "ws"))
    assert (init_adapter / "adapter_config.json").is_file()


def test_pairs_that_all_exceed_max_length_are_refused(tiny_base: Path, pairs_file: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="max_length"):
        train_preference(_cfg(tiny_base, tmp_path / "run", max_length=32), pairs_file,
                         ctx=Context.load(workspace=tmp_path / "ws"))  # fmt: skip


def test_init_adapter_resolves_folders_run_folders_and_registry_adapters(
    tiny_base: Path, init_adapter: Path, tmp_path: Path
) -> None:
    ctx = Context.load(workspace=tmp_path / "ws")
    ctx.registry.register_model("tiny", kind="base", path=tiny_base, metadata={"chat": True})
    ctx.registry.register_model("tuned", kind="adapter", path=init_adapter, base_model="tiny")
    ctx.registry.set_alias("production", "tuned", actor="test")
    for given in (str(init_adapter), str(init_adapter.parent), "production"):
        assert resolve_init_adapter(given, base_path=tiny_base, ctx=ctx) == init_adapter.resolve()
    with pytest.raises(ConfigError, match="not an adapter"):
        resolve_init_adapter("tiny", base_path=tiny_base, ctx=ctx)
    with pytest.raises(ConfigError, match="trained on tiny"):
        resolve_init_adapter("tuned", base_path=tmp_path, ctx=ctx)
    with pytest.raises(ConfigError, match="no adapter_config"):
        resolve_init_adapter(str(tmp_path), base_path=tiny_base, ctx=ctx)


def test_the_cli_maps_its_flags_onto_the_config_and_prints_the_summary(
    tiny_base: Path, init_adapter: Path, pairs_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--method, --init-adapter, --set and bare KEY=VALUE all reach the run; --json prints one object."""
    monkeypatch.setenv("HELPLINE_WORKSPACE", str(tmp_path / "ws"))
    args = ["train", "preference", "--config", "smollm2-135m-dpo-cpu", "--pairs", str(pairs_file),
            "--method", "orpo", "--init-adapter", str(init_adapter), "--set", f"base_model={tiny_base}",
            "--set", f"output_dir={tmp_path / 'run'}", "max_steps=1", "max_length=256", "export=false",
            "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["method"], summary["global_step"]) == ("orpo", 1)
    assert summary["init_adapter"]["path"] == str(init_adapter.resolve())
    assert summary["preset"] == "smollm2-135m-dpo-cpu"


def test_the_cli_refuses_a_bad_pairs_file_before_loading_a_model(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HELPLINE_WORKSPACE", str(tmp_path / "ws"))
    bad = _write(tmp_path / "bad.jsonl", [_pair("q?", "same", "same")])
    result = CliRunner().invoke(app, ["train", "preference", "--pairs", str(bad), "--set", "base_model=absent"])
    assert isinstance(result.exception, DataError)
    assert "line 1" in result.exception.message

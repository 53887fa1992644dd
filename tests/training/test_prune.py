"""Depth pruning on tiny models built from a config: which layers go, what the saved model is, the CLI's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpline.platform.context import Context
from helpline.platform.errors import ConfigError, DataError
from helpline.testing.training import tiny_llama, tiny_tokenizer
from helpline.training.data.prepare import PrepareOptions, prepare_dataset

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from helpline.training.prune import (  # noqa: E402
    PruneOptions,
    calibration_loss,
    calibration_texts,
    choose_dropped,
    removal_losses,
    remove_layers,
    run_prune,
    score_layers,
)

IDENTITY = (2, 3)  # layers of the 6-layer fixture that add nothing to the residual stream


def _identity_layers(model, layers=IDENTITY):
    """Zero the output projections of ``layers``: each then passes the residual stream through unchanged."""
    with torch.no_grad():
        for i in layers:
            model.model.layers[i].self_attn.o_proj.weight.zero_()
            model.model.layers[i].mlp.down_proj.weight.zero_()
    return model


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def texts(tokenizer) -> list[str]:
    answer = {"role": "assistant", "content": "Refunds take five to seven business days."}
    rows = [[{"role": "user", "content": f"Where is my refund for order {i}?"}, answer] for i in range(6)]
    return [tokenizer.apply_chat_template(r, tokenize=False) for r in rows]


@pytest.fixture(scope="module")
def workspace_with_model(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> tuple[Context, Path]:
    root = tmp_path_factory.mktemp("prune")
    model_dir = root / "tiny-6"
    _identity_layers(tiny_llama(tokenizer, layers=6)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    ctx = Context.load(workspace=root / "ws")
    ctx.workspace.ensure()
    ctx.registry.register_model("tiny-6", kind="base", path=model_dir, metadata={"chat": True})
    lines = [{"messages": [{"role": "user", "content": f"{w} asks where the refund for parcel {i} went"},
                           {"role": "assistant", "content": f"Refund {i} reaches your card in {i + 2} days."}]}
             for i, w in enumerate(["ana", "bo", "cy", "dee", "eli", "fay", "gus", "hal", "ivy"] * 2)]  # fmt: skip
    (root / "chat.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    options = PrepareOptions(sources=[f"chat:{root / 'chat.jsonl'}"], name="calib", validation=0.2, test=0.1,
                             sibling_threshold=0.99)  # fmt: skip
    prepare_dataset(options, datasets_dir=ctx.workspace.datasets, count_tokens=None, context_length=None)
    return ctx, model_dir


@pytest.mark.parametrize("method", ["block", "layers"])
def test_layers_that_do_nothing_are_the_ones_removed(tokenizer, texts, method: str) -> None:
    model = _identity_layers(tiny_llama(tokenizer, layers=6))
    scores = score_layers(model, tokenizer, texts, drop=2, max_length=64)
    assert [round(scores.influence[i], 6) for i in IDENTITY] == [0.0, 0.0]
    assert all(scores.influence[i] > 1e-4 for i in (1, 4))
    assert scores.block_distance[IDENTITY[0]] == pytest.approx(0.0, abs=1e-6)
    assert min(v for k, v in scores.block_distance.items() if k != IDENTITY[0]) > 1e-3
    assert choose_dropped(scores, 2, method) == list(IDENTITY)


def test_loss_method_removes_the_layers_whose_absence_costs_least(tokenizer, texts) -> None:
    model = _identity_layers(tiny_llama(tokenizer, layers=6))
    losses = removal_losses(model, tokenizer, texts, max_length=64)
    full = calibration_loss(model, tokenizer, texts, max_length=64)
    assert set(losses) == {1, 2, 3, 4}  # the first and last layer are kept
    assert [losses[i] for i in IDENTITY] == [pytest.approx(full, abs=1e-4)] * 2  # removing nothing costs nothing
    assert len(model.model.layers) == 6  # scoring leaves the model whole
    scores = score_layers(model, tokenizer, texts, drop=2, max_length=64)
    scores.removal_loss = losses
    assert choose_dropped(scores, 2, "loss") == sorted(sorted(losses, key=losses.get)[:2])
    with pytest.raises(ConfigError, match="removal_loss"):
        choose_dropped(score_layers(model, tokenizer, texts, drop=2, max_length=64), 2, "loss")


def test_first_and_last_layer_are_never_candidates(tokenizer, texts) -> None:
    model = _identity_layers(tiny_llama(tokenizer, layers=6), layers=(0, 5))
    scores = score_layers(model, tokenizer, texts, drop=1, max_length=64)
    assert 0 not in scores.block_distance and 5 not in scores.block_distance
    assert set(choose_dropped(scores, 1, "layers")) <= {1, 2, 3, 4}
    assert set(choose_dropped(scores, 1, "block")) <= {1, 2, 3, 4}


def test_pruned_model_answers_as_before_when_the_removed_layers_did_nothing(tokenizer, texts, tmp_path) -> None:
    model = _identity_layers(tiny_llama(tokenizer, layers=6))
    batch = tokenizer(texts[:2], return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        before = model(**batch).logits
    remove_layers(model, list(IDENTITY))
    assert model.config.num_hidden_layers == 4 and len(model.model.layers) == 4
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2, 3]
    model.save_pretrained(tmp_path / "pruned")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "pruned"))
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, before, atol=1e-5)
        # generation uses the KV cache, indexed by each layer's new position
        out = reloaded.generate(**tokenizer(texts[:1], return_tensors="pt", add_special_tokens=False),
                                max_new_tokens=5, do_sample=False)  # fmt: skip
    assert out.shape[1] > batch["input_ids"].shape[1] - 10


def test_per_layer_config_lists_follow_the_kept_layers() -> None:
    config = transformers.Gemma3TextConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=6, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, sliding_window=8, max_position_embeddings=128,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"] * 2,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.Gemma3ForCausalLM(config)
    remove_layers(model, [2, 3])
    assert model.config.num_hidden_layers == 4
    assert model.config.layer_types == ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"]
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits).all()


def test_run_prune_saves_and_registers_the_model_with_its_lineage(workspace_with_model) -> None:
    ctx, _ = workspace_with_model
    report = run_prune(PruneOptions(model="tiny-6", layers=4, dataset="calib", name="tiny-4", max_length=64), ctx=ctx)
    assert report["dropped_layers"] == list(IDENTITY)
    assert report["held_out_loss_after"] == pytest.approx(report["held_out_loss_before"], abs=1e-3)
    record = ctx.registry.get_model("tiny-4")
    assert record.kind == "base" and record.metadata["pruned_from"] == "tiny-6" and record.metadata["chat"]
    assert record.metadata["pruning"]["dropped_layers"] == list(IDENTITY)
    saved = json.loads((Path(record.path) / "config.json").read_text())
    assert saved["num_hidden_layers"] == 4
    assert (Path(record.path) / "tokenizer.json").is_file() and not Path(record.path + ".partial").exists()
    with pytest.raises(ConfigError, match="already exists"):
        run_prune(PruneOptions(model="tiny-6", layers=4, dataset="calib", name="tiny-4"), ctx=ctx)


def test_pruning_onto_a_registered_name_is_refused_before_anything_is_written(workspace_with_model) -> None:
    ctx, model_dir = workspace_with_model
    with pytest.raises(ConfigError, match="'tiny-6' already exists in the registry"):
        run_prune(PruneOptions(model="tiny-6", layers=4, dataset="calib", name="tiny-6", force=True), ctx=ctx)
    assert not (ctx.workspace.models / "tiny-6").exists()
    assert ctx.registry.get_model("tiny-6").path == str(model_dir)


@pytest.mark.parametrize("layers", [6, 2, 0])
def test_a_depth_that_cannot_be_kept_is_refused_with_the_range(workspace_with_model, layers: int) -> None:
    ctx, _ = workspace_with_model
    with pytest.raises(ConfigError, match="keep between 3 and 5"):
        run_prune(PruneOptions(model="tiny-6", layers=layers, dataset="calib", name=f"bad-{layers}"), ctx=ctx)
    assert not (ctx.workspace.models / f"bad-{layers}").exists()


def test_a_missing_dataset_says_how_to_make_one(workspace_with_model) -> None:
    ctx, _ = workspace_with_model
    with pytest.raises(DataError, match="no prepared dataset") as err:
        run_prune(PruneOptions(model="tiny-6", layers=4, dataset="nope", name="x"), ctx=ctx)
    assert "helpline data prepare" in err.value.hint


def test_calibration_texts_use_the_chat_template(workspace_with_model, tokenizer) -> None:
    ctx, _ = workspace_with_model
    from helpline.training.data.prepare import resolve_dataset

    texts = calibration_texts(resolve_dataset("calib", ctx.workspace.datasets), tokenizer, split="train", limit=3)
    assert len(texts) == 3 and all(t.count("<|im_start|>assistant") == 1 for t in texts)

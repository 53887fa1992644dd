"""GGUF export on a tiny random Llama built in the test: the file reads back with GGUFReader and with
transformers, and answers as the checkpoint did; what the converter cannot write is refused by name."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpline.cli.app import app
from helpline.platform.context import Context
from helpline.platform.errors import ConfigError, NotFoundError
from helpline.training.gguf_export.convert import (
    UnsupportedModelError,
    permute_rows,
    pre_tokenizer_name,
    read_back,
    write_gguf,
)
from helpline.training.gguf_export.export import export_to_gguf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama (4 heads, 2 KV heads) with the tiny ChatML tokenizer, saved as a merged model is."""
    from helpline.testing.training import tiny_llama, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model = tiny_llama(tokenizer)
    # At the default init the logits are near-uniform and greedy answers repeat one token whatever the
    # attention does; scaled up, each next token depends on the attention, and so on the q/k layout.
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 2:
                parameter.mul_(10)
    folder = tmp_path_factory.mktemp("tiny") / "merged"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _prompt(folder: Path, **gguf) -> list[int]:
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), **gguf)
    messages = [{"role": "user", "content": "Where is my refund for order 12345?"}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)[
        "input_ids"
    ]


def _logits_and_answer(model, ids: list[int]):
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
        answer = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=None)
    return logits, answer[0, len(ids) :].tolist()


def test_an_f32_gguf_loaded_by_transformers_gives_the_checkpoints_logits_and_greedy_answer(checkpoint, tmp_path):
    out = tmp_path / "tiny-f32.gguf"
    written = write_gguf(checkpoint, out, quant="f32", name="tiny")
    assert read_back(out, written)["tensors"] == 2 * 9 + 2  # 9 per block, the embedding and the final norm
    ids = _prompt(checkpoint)
    assert _prompt(tmp_path, gguf_file=out.name) == ids  # the tokenizer and chat template travel in the file
    original = transformers.AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=out.name, dtype=torch.float32)
    expected, expected_answer = _logits_and_answer(original, ids)
    got, answer = _logits_and_answer(loaded, ids)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert answer == expected_answer and len(set(answer)) > 3


def test_q_and_k_rows_are_stored_in_llama_cpps_rotary_order_per_head(checkpoint, tmp_path):
    out = tmp_path / "tiny-f32.gguf"
    write_gguf(checkpoint, out, quant="f32", name="tiny")
    tensors = {t.name: t.data for t in gguf.GGUFReader(str(out)).tensors}
    state = transformers.AutoModelForCausalLM.from_pretrained(str(checkpoint)).state_dict()
    q, k = (state[f"model.layers.0.self_attn.{p}_proj.weight"].numpy() for p in ("q", "k"))
    assert (tensors["blk.0.attn_q.weight"] == permute_rows(q, 4)).all()
    assert (tensors["blk.0.attn_k.weight"] == permute_rows(k, 2)).all()  # per KV head
    assert not (tensors["blk.0.attn_q.weight"] == q).all()
    assert (tensors["blk.0.attn_v.weight"] == state["model.layers.0.self_attn.v_proj.weight"].numpy()).all()


def test_a_q8_0_gguf_quantizes_the_matrices_keeps_the_norms_f32_and_stays_close(checkpoint, tmp_path):
    out = tmp_path / "tiny-q8_0.gguf"
    checked = read_back(out, write_gguf(checkpoint, out, quant="q8_0", name="tiny"))
    assert checked["tensor_types"] == {"Q8_0": 15, "F32": 5}
    write_gguf(checkpoint, tmp_path / "tiny-f32.gguf", quant="f32", name="tiny")
    assert out.stat().st_size < 0.5 * (tmp_path / "tiny-f32.gguf").stat().st_size
    ids = _prompt(checkpoint)
    original = transformers.AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=out.name, dtype=torch.float32)
    expected, _ = _logits_and_answer(original, ids)
    got, _ = _logits_and_answer(loaded, ids)
    assert (got - expected).abs().max() < 0.1 * expected.abs().max()


def test_an_architecture_other_than_llama_is_refused_naming_the_supported_one(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"]}))
    with pytest.raises(UnsupportedModelError, match=r"Qwen2ForCausalLM; GGUF export supports LlamaForCausalLM") as e:
        write_gguf(tmp_path, tmp_path / "x.gguf", quant="f16", name="x")
    assert "convert_hf_to_gguf.py" in e.value.hint
    assert not (tmp_path / "x.gguf").exists()


def test_a_tokenizer_that_is_not_byte_level_bpe_is_refused(checkpoint, tmp_path):
    folder = tmp_path / "spm"
    folder.mkdir()
    for file in checkpoint.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(UnsupportedModelError, match="not a byte-level BPE with a known pre-tokenizer"):
        write_gguf(folder, tmp_path / "x.gguf", quant="f16", name="x")


@pytest.mark.parametrize(
    ("pre", "name"),
    [
        ({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}, "gpt-2"),
        (
            {
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Digits", "individual_digits": True},
                    {"type": "ByteLevel", "use_regex": True},
                ],
            },
            "smollm",
        ),
        ({"type": "ByteLevel", "use_regex": False}, None),
        ({"type": "Metaspace"}, None),
        (None, None),
    ],
)
def test_the_pre_tokenizer_gets_llama_cpps_name_for_the_same_split(pre, name):
    assert pre_tokenizer_name(pre) == name


def test_an_existing_gguf_folder_is_refused_before_anything_runs(checkpoint, tmp_path):
    ctx = Context.load(workspace=tmp_path / "ws")
    (ctx.workspace.models / "tiny-gguf").mkdir(parents=True)
    with pytest.raises(ConfigError, match="tiny-gguf already exists"):
        export_to_gguf(checkpoint, ctx=ctx, name="tiny")
    assert not (ctx.workspace.models / "tiny-gguf.partial").exists()


def test_export_writes_checked_files_a_modelfile_and_a_report(checkpoint, tmp_path):
    ctx = Context.load(workspace=tmp_path / "ws")
    report = export_to_gguf(checkpoint, ctx=ctx, name="tiny", quants=("f32", "q8_0"), max_tokens=6)
    folder = ctx.workspace.models / "tiny-gguf"
    assert report["passed"] and report["judged_variant"] == "f32" and report["folder"] == str(folder)
    f32, q8_0 = report["agreement"]["f32"], report["agreement"]["q8_0"]
    assert f32["exact_match"] == "8/8" and f32["position_agreement"] == 1 and f32["next_token_agreement"] == 1
    assert q8_0["prompts_tokenized_alike"] == "8/8" and q8_0["next_token_agreement"] > 0.5
    assert {p.name for p in folder.iterdir()} == {"tiny-f32.gguf", "tiny-q8_0.gguf", "Modelfile", "gguf_report.json"}
    written = json.loads((folder / "gguf_report.json").read_text())
    assert written["files"]["q8_0"]["path"] == str(folder / "tiny-q8_0.gguf")
    modelfile = (folder / "Modelfile").read_text()
    assert "FROM ./tiny-q8_0.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile


@pytest.fixture
def in_empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in [k for k in os.environ if k.startswith("HELPLINE_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_train_export_refuses_an_unknown_gguf_type_naming_the_known_ones(checkpoint, in_empty_folder):
    result = CliRunner().invoke(app, ["train", "export", str(checkpoint), "--gguf", "--gguf-quant", "q4_k"])
    assert isinstance(result.exception, ConfigError) and result.exception.exit_code == 2
    assert "unknown --gguf-quant q4_k" in str(result.exception) and "f16, q8_0, f32" in result.exception.hint
    assert not (in_empty_folder / ".helpline" / "models" / "merged-gguf").exists()


def test_train_export_gguf_of_a_name_neither_folder_nor_registered_says_what_to_pass(in_empty_folder):
    result = CliRunner().invoke(app, ["train", "export", "no-such-model", "--gguf"])
    assert isinstance(result.exception, NotFoundError)
    assert "no model or alias named 'no-such-model'" in result.exception.message

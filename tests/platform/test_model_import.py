"""`helpline models import PATH|HUB_ID`: a tiny Llama built here, imported as a user's own model, checked first; what
is not a model, a name already taken and an offline hub id are refused with the fix, and nothing stored is lost."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from helpline.platform.errors import ConfigError, DataError
from helpline.platform.model_import import import_model
from helpline.platform.registry import Registry
from helpline.platform.workspace import Workspace

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"


def tiny_llama(folder: Path, *, template: str | None = TEMPLATE) -> Path:
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "how", "do", "i", "return", "an", "item"])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                                eos_token="</s>")  # fmt: skip
    if template:
        fast.chat_template = template
    fast.save_pretrained(folder)
    config = transformers.LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture
def ws(tmp_path: Path) -> tuple[Workspace, Registry]:
    workspace = Workspace.at(tmp_path / ".helpline").ensure()
    return workspace, Registry(workspace.registry_db)


def test_a_local_folder_is_checked_copied_and_registered(ws, tmp_path: Path) -> None:
    workspace, registry = ws
    record, report = import_model(str(tiny_llama(tmp_path / "My-Llama")), workspace=workspace, registry=registry)
    assert (record.name, record.kind, record.path) == ("my-llama", "base", str(workspace.models / "my-llama"))
    assert (workspace.models / "my-llama" / "config.json").is_file()
    assert report.architecture == "LlamaForCausalLM" and report.chat_template and report.size_bytes > 0
    assert report.vllm_supported is (True if importlib.util.find_spec("vllm") else None)
    assert report.memory["ram_gb"] > 0 and report.warnings == []
    assert registry.get_model("my-llama").metadata["chat"] is True


def test_a_model_without_a_chat_template_is_imported_with_a_warning_and_kept_in_place(ws, tmp_path: Path) -> None:
    workspace, registry = ws
    folder = tiny_llama(tmp_path / "plain", template=None)
    record, report = import_model(str(folder), workspace=workspace, registry=registry, name="plain", copy=False)
    assert record.path == str(folder) and not (workspace.models / "plain").exists()
    assert not report.chat_template and "no chat template" in report.warnings[0]


def test_a_taken_name_is_refused_before_anything_is_written(ws, tmp_path: Path) -> None:
    workspace, registry = ws
    import_model(str(tiny_llama(tmp_path / "m")), workspace=workspace, registry=registry, name="mine")
    before = (workspace.models / "mine" / "model.safetensors").read_bytes()
    other = tiny_llama(tmp_path / "other")
    with pytest.raises(ConfigError, match="'mine' is registered already"):
        import_model(str(other), workspace=workspace, registry=registry, name="mine")
    assert (workspace.models / "mine" / "model.safetensors").read_bytes() == before


def test_what_is_not_a_model_is_refused_with_what_to_do(ws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace, registry = ws
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"has no config\.json"):
        import_model(str(tmp_path / "empty"), workspace=workspace, registry=registry)
    folder = tiny_llama(tmp_path / "noweights")
    (folder / "model.safetensors").unlink()
    with pytest.raises(DataError, match="has no weights"):
        import_model(str(folder), workspace=workspace, registry=registry)
    (tmp_path / "fake.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(DataError, match="not a readable GGUF"):
        import_model(str(tmp_path / "fake.gguf"), workspace=workspace, registry=registry)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="offline") as e:
        import_model("HuggingFaceTB/SmolLM2-360M-Instruct", workspace=workspace, registry=registry)
    assert "helpline models import DIR" in (e.value.hint or "")
    with pytest.raises(DataError, match="neither a model folder"):
        import_model("./nowhere/at/all", workspace=workspace, registry=registry)
    assert registry.list_models() == []

"""Integration tier: `helpline train export ADAPTER --gguf` on the real SmolLM2 with a LoRA adapter merged
into it; the F16 file answers as the merged checkpoint does, and the Q8_0 file's drift is reported."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpline.cli.app import app
from helpline.platform.context import Context

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def adapter(workspace_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A registered LoRA adapter (r=8 on attention and MLP) for SmolLM2 with small random non-zero weights:
    what training leaves, without the minutes of training."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    ctx = Context.load(workspace=workspace_dir / ".helpline")
    base = ctx.registry.get_model("smollm2-135m-instruct")
    model = transformers.AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"],
                        init_lora_weights=False)  # fmt: skip
    peft_model = get_peft_model(model, config)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)  # enough to change answers, little enough to leave them English
    name = f"gguf-it-{uuid.uuid4().hex[:6]}"  # new in a reused workspace (HELPLINE_TEST_WORKSPACE) too
    folder = tmp_path_factory.mktemp("adapter") / name
    peft_model.save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(base.path).save_pretrained(folder)
    ctx.registry.register_model(name, kind="adapter", path=folder, base_model=base.name)
    return name


def test_gguf_export_of_a_merged_smollm2_adapter_answers_as_the_checkpoint(adapter, in_workspace: Path) -> None:
    result = CliRunner().invoke(app, ["train", "export", adapter, "--gguf"])
    assert result.exit_code == 0, result.output
    assert f"ollama create {adapter}" in result.output
    folder = in_workspace / ".helpline" / "models" / f"{adapter}-gguf"
    report = json.loads((folder / "gguf_report.json").read_text())
    assert report["source"] == f"{adapter} merged into smollm2-135m-instruct"
    assert report["files"]["f16"]["tensors"] == 272 and report["files"]["q8_0"]["tensor_types"]["Q8_0"] == 211
    assert report["files"]["q8_0"]["bytes"] < 0.6 * report["files"]["f16"]["bytes"]
    f16, q8_0 = report["agreement"]["f16"], report["agreement"]["q8_0"]
    assert report["agreement"]["prompts"] == 8 and f16["prompts_tokenized_alike"] == "8/8"
    assert f16["mean_prefix_agreement"] >= 0.9 and f16["next_token_agreement"] >= 0.99
    assert q8_0["next_token_agreement"] >= 0.9  # quantization drift: small, and reported rather than judged

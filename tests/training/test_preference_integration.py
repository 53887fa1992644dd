"""Integration tier: a few DPO and ORPO steps on the real SmolLM2, DPO continuing an init adapter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from helpline.platform.context import Context
from helpline.training.export import static_checks
from helpline.training.preference.config import load_preference_config
from helpline.training.preference.trainer import train_preference

pytestmark = pytest.mark.integration

SYSTEM = "You are Northwind Goods' support assistant. Answer only from the passages.\n\n<passages>\n{}\n</passages>"
FACTS = [
    ("Electronics can be returned within 14 days of delivery.", "How long can I return headphones?",
     "You can return headphones within 14 days of delivery.", "You can return headphones within 30 days."),
    ("Express delivery costs 12.90 and arrives the next business day.", "How much is express delivery?",
     "Express delivery costs 12.90.", "Express delivery is free."),
    ("The password reset link expires 30 minutes after it is sent.", "How long is the reset link valid?",
     "The reset link expires 30 minutes after it is sent.", "The reset link is valid for a week."),
    ("We don't accept cash on delivery.", "Can I pay cash on delivery?",
     "No, we don't accept cash on delivery.", "Yes, you can pay the courier in cash."),
]  # fmt: skip


@pytest.fixture(scope="module")
def setup(workspace_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The workspace's SmolLM2, four pairs, and an init adapter whose B matrices are small but not zero."""
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("pref")
    ctx = Context.load(workspace=workspace_dir / ".helpline")
    base_path = Path(ctx.registry.chat_model("smollm2-135m-instruct").path)
    rows = [{"prompt": [{"role": "system", "content": SYSTEM.format(passage)}, {"role": "user", "content": q}],
             "chosen": good, "rejected": bad} for passage, q, good, bad in FACTS]  # fmt: skip
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(base_path))
    lora = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, lora)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.01)
    model.save_pretrained(str(root / "init"))
    return {"ctx": ctx, "root": root, "base_path": base_path, "pairs": root / "pairs.jsonl"}


def _weights(folder: Path) -> dict:
    safetensors = pytest.importorskip("safetensors.torch")
    return safetensors.load_file(str(folder / "adapter_model.safetensors"))


def test_dpo_continues_an_init_adapter_on_smollm2(setup: dict) -> None:
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    root = setup["root"]
    cfg, preset = load_preference_config(
        "smollm2-135m-dpo-cpu",
        [f"init_adapter={root / 'init'}", f"output_dir={root / 'dpo'}", "max_steps=3", "per_device_train_batch_size=2",
         "learning_rate=5e-4", "max_length=256", "export=false"],
    )  # fmt: skip
    summary = train_preference(cfg, setup["pairs"], ctx=setup["ctx"], preset=preset)

    log = summary["log"]
    assert summary["global_step"] == 3
    assert all(math.isfinite(h["loss"]) for h in log)
    assert log[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)  # the reference is the init adapter
    assert log[-1]["rewards/margins"] > log[0]["rewards/margins"]

    saved = Path(summary["artifact"])
    assert static_checks(saved, max_lora_rank=16) == []
    init, after = _weights(root / "init"), _weights(saved)
    assert init.keys() == after.keys()
    assert any(not torch.equal(init[k], after[k]) for k in init)
    base = transformers.AutoModelForCausalLM.from_pretrained(str(setup["base_path"]))
    model = peft.PeftModel.from_pretrained(base, str(saved))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(saved))
    ids = tokenizer("Where is my refund?", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_orpo_trains_a_fresh_adapter_on_smollm2(setup: dict) -> None:
    root = setup["root"]
    cfg, preset = load_preference_config(
        "smollm2-135m-dpo-cpu",
        ["method=orpo", f"output_dir={root / 'orpo'}", "max_steps=2", "per_device_train_batch_size=2",
         "learning_rate=5e-4", "max_length=256", "export=false"],
    )  # fmt: skip
    summary = train_preference(cfg, setup["pairs"], ctx=setup["ctx"], preset=preset)
    assert summary["global_step"] == 2
    assert all(math.isfinite(h["loss"]) for h in summary["log"])
    assert (Path(summary["artifact"]) / "adapter_model.safetensors").is_file()

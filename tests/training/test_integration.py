"""Integration tier: a few QLoRA steps on the real SmolLM2, then the export gate with the real vLLM."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpline.platform.context import Context

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small prepared chat dataset (hand-written support turns)."""
    from helpline.training.data.prepare import PrepareOptions, prepare_dataset

    root = tmp_path_factory.mktemp("chat")
    questions = ["How do I cancel my order?", "Where is my refund?", "How do I change my address?",
                 "I forgot my password.", "Can I talk to a person?", "Which payment methods do you take?"]  # fmt: skip
    lines = [
        {
            "messages": [
                {"role": "user", "content": f"{q} ({tone})"},
                {"role": "assistant", "content": f"I understand. 1. Open {{{{Website Name}}}}.\n2. {q}"},
            ],
            "intent": f"i{i}",
        }
        for i, q in enumerate(questions)
        for tone in ("please", "thanks", "urgent", "now")
    ]
    (root / "chat.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    options = PrepareOptions(sources=[f"chat:{root / 'chat.jsonl'}"], name="it", validation=0.2, test=0.2)
    return prepare_dataset(options, datasets_dir=root / "ds", count_tokens=None, context_length=None)["path"]


@pytest.fixture(scope="module")
def trained_run(workspace_dir: Path, dataset: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from helpline.training.sft.config import load_config
    from helpline.training.sft.trainer import run_sft

    root = tmp_path_factory.mktemp("qlora")
    ctx = Context.load(workspace=workspace_dir / ".helpline")
    cfg, preset = load_config(
        "smollm2-135m-qlora-cpu",
        [f"dataset={dataset}", f"output_dir={root / 'run'}", "max_steps=2", "eval_steps=2", "max_eval_examples=2",
         "per_device_train_batch_size=2", "max_length=128", "export=false"],
    )  # fmt: skip
    return {"summary": run_sft(cfg, preset=preset, ctx=ctx), "ctx": ctx}


def test_qlora_steps_on_smollm2_give_a_finite_loss_and_an_adapter(trained_run: dict) -> None:
    summary = trained_run["summary"]
    assert summary["global_step"] == 2
    assert 0 < summary["best_eval_loss"] < 20
    assert (Path(summary["artifact"]) / "adapter_config.json").is_file()


def test_export_gate_loads_the_adapter_in_vllm_and_registers_it(trained_run: dict) -> None:
    from helpline.training.export import export_adapter

    ctx = trained_run["ctx"]
    report = export_adapter(Path(trained_run["summary"]["run_dir"]), ctx=ctx, name="it-adapter", max_tokens=16)
    assert report["passed"]
    assert len(report["agreement"]["per_prompt"]) == 8
    record = ctx.registry.get_model("it-adapter")
    assert record.kind == "adapter" and record.base_model == "smollm2-135m-instruct"
    assert record.metadata["dataset"]["hash"]


def test_pruned_smollm2_trains_and_serves_in_vllm(workspace_dir: Path, dataset: str, tmp_path: Path) -> None:
    """Prune the real SmolLM2, put a QLoRA adapter on the pruned model, and pass the export gate: vLLM loads
    the shallower checkpoint with the adapter and answers as PEFT does."""
    from helpline.training.export import export_adapter
    from helpline.training.prune import PruneOptions, run_prune
    from helpline.training.sft.config import load_config
    from helpline.training.sft.trainer import run_sft

    ctx = Context.load(workspace=workspace_dir / ".helpline")
    report = run_prune(PruneOptions(model="smollm2-135m-instruct", layers=24, dataset=dataset, name="it-pruned",
                                    method="layers", samples=8, max_length=128, force=True), ctx=ctx)  # fmt: skip
    assert report["layers_before"] == 30 and len(report["dropped_layers"]) == 6
    assert report["held_out_loss_after"] > report["held_out_loss_before"] > 0  # removing layers costs something
    assert 0 < report["parameters_m"] < 120
    cfg, preset = load_config(
        "smollm2-135m-qlora-cpu",
        ["base_model=it-pruned", f"dataset={dataset}", f"output_dir={tmp_path / 'run'}", "max_steps=2", "eval_steps=2",
         "max_eval_examples=2", "per_device_train_batch_size=2", "max_length=128", "export=false"],
    )  # fmt: skip
    summary = run_sft(cfg, preset=preset, ctx=ctx)
    gate = export_adapter(Path(summary["run_dir"]), ctx=ctx, name="it-pruned-adapter", max_tokens=16)
    assert gate["passed"] and len(gate["agreement"]["per_prompt"]) == 8
    assert ctx.registry.get_model("it-pruned-adapter").base_model == "it-pruned"


def test_distill_from_a_real_vllm_teacher_resumes_and_trains_a_student_that_passes_the_gate(
    in_workspace: Path, tmp_path: Path
) -> None:
    """`train distill` against a teacher on a real vLLM server (SmolLM2 behind its OpenAI-compatible API, named
    by URL and served name as any other endpoint), over the real knowledge base: a partial run, a command-line
    run that asks only what is missing, then (teacher gone) a run that trains the real student from the cache
    and passes the export gate."""
    from typer.testing import CliRunner

    from helpline.cli.app import app
    from helpline.engines.vllm_server import VLLMServer
    from helpline.evaluation.load import free_port
    from helpline.platform.settings import load_settings
    from helpline.training.distill.config import load_distill_config
    from helpline.training.distill.run import run_distill
    from helpline.training.distill.teacher import open_teacher

    ctx = Context.load(workspace=in_workspace / ".helpline")
    shutil.rmtree(ctx.workspace.datasets / "distill-it-distill", ignore_errors=True)  # a reused test workspace
    base = ctx.registry.get_model("smollm2-135m-instruct")
    settings = load_settings(workspace=ctx.workspace.root)
    vllm = settings.vllm.model_copy(update={"port": free_port()})
    url = f"http://127.0.0.1:{vllm.port}/v1"
    overrides = [f"teacher.base_url={url}", f"teacher.model={base.name}", "teacher.max_tokens=96", "name=it-distill",
                 "sources.kb_max_questions=12", "filters.detector=null", "filters.min_words=1", "validation=0.25",
                 "test=0", f"sft.output_dir={tmp_path / 'run'}", "sft.max_steps=2", "sft.eval_steps=2",
                 "sft.max_eval_examples=2", "sft.per_device_train_batch_size=1", "sft.gradient_accumulation_steps=1",
                 "sft.warmup_steps=0", "sft.adapter_name=it-distilled"]  # fmt: skip
    server = VLLMServer(model_path=base.path, served_name=base.name, settings=vllm, log_path=tmp_path / "vllm.log")
    server.start()
    try:
        partial = run_distill(
            load_distill_config("distill-gemma-to-smollm2-full", [*overrides, "max_prompts=6", "train=false"]), ctx=ctx
        )
        assert partial["dataset"]["counts"]["teacher"] == {"prompts": 6, "cached_before": 0, "asked": 6}
        result = CliRunner().invoke(
            app, ["train", "distill", "--config", "distill-gemma-to-smollm2-full", "--json", *overrides, "train=false"]
        )
        assert result.exit_code == 0, result.output
        resumed = json.loads(result.stdout)["dataset"]
        assert resumed["counts"]["teacher"] == {"prompts": 12, "cached_before": 6, "asked": 6}
        assert resumed["teacher"]["model"] == base.name and resumed["teacher"]["base_url"] == url
    finally:
        server.stop()
    teacher = open_teacher(url, base.name, api_key_env=None, timeout_s=5)  # down: any request would fail
    trained = run_distill(load_distill_config("distill-gemma-to-smollm2-full", overrides), ctx=ctx, teacher=teacher)
    assert trained["dataset"]["counts"]["teacher"]["asked"] == 0
    assert trained["training"]["global_step"] == 2
    assert trained["export"]["passed"]
    record = ctx.registry.get_model("it-distilled")
    assert record.kind == "adapter" and record.base_model == "smollm2-135m-instruct"

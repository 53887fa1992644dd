"""Integration: the loop end to end on the real SmolLM2. Four corrections are saved through the gateway's review
route, then `helpline improve` with tiny step counts and no canary trains (QLoRA SFT, then DPO), passes the
adapter through the real vLLM export gate, gates it against production with the held-out correction, and either
promotes it or leaves production as it was."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from helpline.answering.attribution import citations
from helpline.answering.rag import RAGPipeline
from helpline.improve import improve, load_options
from helpline.platform.context import Context
from helpline.platform.settings import load_settings
from helpline.platform.text import unbacked_numbers
from helpline.retrieval.factory import open_knowledge_base
from helpline.serving.factory import open_gateway_store
from helpline.serving.gateway.app import create_app
from helpline.serving.routing import ModelRouter
from helpline.testing import FakeGenerator
from helpline.testing.serving import FakeBackend

pytestmark = pytest.mark.integration

#: (question, the wrong answer production served, the staff correction from the sample help centre).
CORRECTIONS = [
    (
        "How much do you charge for delivery?",
        "Delivery is always free of charge.",
        "Standard delivery costs €4.95 (free on orders over €50); express delivery costs €12.90.",
    ),
    (
        "I just ordered by mistake. Can I still stop it?",
        "No, an order cannot be cancelled once it is placed.",
        'Yes: for 60 minutes after ordering, open Account > Orders, select the order and choose "Cancel order".',
    ),
    (
        "How many days do I have to send back headphones?",
        "You can return headphones within 90 days.",
        "Electronics such as headphones can be returned within 14 days from the delivery date.",
    ),
    (
        "How do I reset my password?",
        "Please call us to reset your password.",
        'Select "Forgot password?" on the sign-in page and follow the link in the "Reset your Northwind password" '
        "email.",
    ),
]
GATE = """\
suites: [support.yaml]
mode: rag
limit_per_suite: 1
max_tokens: 24
detector: none
answers: none
"""


@pytest.fixture
def workspace(workspace_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the initialised workspace (its models stay where they are, read only): the loop moves production,
    which the other integration tests rely on."""
    for key in [k for k in os.environ if k.startswith("HELPLINE_")]:
        monkeypatch.delenv(key)
    # no earlier runs, and a gateway database of its own: only the corrections seeded here are collected
    skip = shutil.ignore_patterns("models", "runs", "gateway.sqlite*")
    shutil.copytree(workspace_dir / ".helpline", tmp_path / ".helpline", ignore=skip)
    monkeypatch.chdir(tmp_path)
    return tmp_path / ".helpline"


def seed_through_the_review_route(ctx: Context) -> list[str]:
    """Each question served production's wrong answer (logged as the gateway logs a turn, over the passages the
    knowledge base retrieves for it), rated down by the customer, then corrected by staff on the review route."""
    store = open_gateway_store(ctx)
    kb = open_knowledge_base(ctx)
    customer, _ = store.create_key("customer", name="it-customer")
    staff, _ = store.create_key("staff", name="it-staff")
    pipeline = RAGPipeline(search=kb.search, generator=FakeGenerator(), top_k=1, min_score=0.0)
    app = create_app(pipeline=pipeline, router=ModelRouter(ctx.registry, FakeBackend()), store=store)
    rids = []
    with TestClient(app) as client:
        for i, (question, served, correction) in enumerate(CORRECTIONS):
            rid = f"it-resp-{i}"
            # one passage (short prompts): the retrieved one that states the correction's figures, as a turn whose
            # correction the loop may learn from does (collect leaves out a correction its passages do not back)
            hits = kb.search(question, k=4, role="customer")
            backing = [h for h in hits if not unbacked_numbers(correction, [h.chunk.text])]
            passages = citations(backing[:1], with_text=True)
            store.record_turn(
                response_id=rid,
                conversation_id=f"it-conv-{i}",
                at=float(i),
                key_id=store.lookup(customer).id,
                role="customer",
                model="helpline-support",
                served_model="smollm2-135m-instruct",
                adapter=None,
                messages=[{"role": "user", "content": question}],
                passages=[p.model_dump() for p in passages],
                answer=served,
                abstained=0,
                latency_ms=900.0,
                status="ok",
                withdrawn=None,
                verification=None,
                origins=["client"],
                internal=0,
            )
            store.add_feedback(rid, rating="down", comment="wrong", key_id=store.lookup(customer).id)
            saved = client.post(
                f"/console/review/{rid}", json={"answer": correction}, headers={"Authorization": f"Bearer {staff}"}
            )
            assert saved.status_code == 200, saved.text
            rids.append(rid)
    return rids


def test_corrections_become_a_gated_candidate_that_is_promoted_or_leaves_production_unchanged(
    workspace: Path,
) -> None:
    ctx = Context(load_settings(workspace=workspace))
    production_before = ctx.registry.aliases()["production"]
    rids = seed_through_the_review_route(ctx)
    (workspace.parent / "gate.yaml").write_text(GATE)
    options = load_options(
        sft_steps=2,
        pref_steps=2,
        skip_canary=True,
        replay_rows=0,
        gate_config=workspace.parent / "gate.yaml",
        data_dir=workspace.parent,
        heldout_share=0.25,
        sft_set=[
            "method=lora",  # fp32 LoRA: a 4-bit base is slower on a CPU (the loop's QLoRA default: tests/training)
            "per_device_train_batch_size=1",
            "per_device_eval_batch_size=1",
            "max_eval_examples=1",
            "max_length=1024",
        ],
        pref_set=["per_device_train_batch_size=1", "max_length=1024", "precompute_ref_log_probs=false"],
    )

    result = improve(ctx, options)

    steps = result["steps"]
    assert all(s["status"] == "done" for s in steps.values()), steps
    assert (
        steps["train_sft"]["outputs"]["global_step"] == 2 and steps["train_preference"]["outputs"]["global_step"] == 2
    )
    candidate = ctx.registry.get_model(result["candidate"])
    assert candidate.kind == "adapter" and (Path(candidate.path) / "adapter_config.json").is_file()
    lineage = candidate.metadata["improve"]
    assert sorted(lineage["corrections"]["trained"] + lineage["corrections"]["heldout"]) == sorted(rids)
    assert len(lineage["corrections"]["heldout"]) == 1 and lineage["parent_adapter"] is None
    assert (Path(candidate.metadata["dataset"]["path"]) / "train.jsonl").is_file()  # what the next loop replays
    gate = candidate.metadata["gate"]
    assert Path(gate["report"]).is_file() and gate["baseline"] == production_before
    assert result["gate"]["heldout"]["questions"] == 1 and result["gate"]["heldout_baseline"]["questions"] == 1
    actions = [e["action"] for e in open_gateway_store(ctx).audit_log(500) if e["actor"] == "helpline improve"]
    assert {f"improve.{name}" for name in steps} <= set(actions)
    if gate["passed"]:
        assert result["status"] == "promoted" and ctx.registry.aliases()["production"] == candidate.name
    else:
        assert result["status"] == "refused" and ctx.registry.aliases()["production"] == production_before
        assert "improve.refused" in actions

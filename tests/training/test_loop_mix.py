"""The loop's training files: scrubbed, deduplicated, corrections held out by conversation as an answer set scored as
served, replay rows from the production model's own dataset, and a manifest whose counts add up."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from helpline.answering.decision import Verdict
from helpline.evaluation.answers import ServedAnswer, judge, read_cases
from helpline.platform.errors import ConfigError, NotFoundError
from helpline.platform.registry import Registry
from helpline.serving.gateway.store import GatewayStore
from helpline.training.loop.collect import Collection, collect
from helpline.training.loop.mix import LoopDataset, build_loop_dataset, replay_source

HELP = ("Refunds reach your card within 14 days. Express delivery costs €12.90 per parcel. Orders can be cancelled"
        " within 60 minutes. Parcels to Norway take 6-12 business days. Staff get 25% off.")  # the figures corrected to
PASSAGES = [{"doc_id": "help", "title": "Help", "chunk_id": "help#0", "score": 0.9, "text": HELP}]
# (question, staff correction, the answer served and rated down)
REFUND = ("How long does a refund take?", "Refunds reach your card within 14 days.", "Refunds take 30 days.")
EXPRESS = ("What does express delivery cost?", "Express delivery costs €12.90 per parcel.", "Express delivery is free.")
CANCEL = ("Can I still cancel an order I placed?", "Yes, within 60 minutes, with Cancel order.", "No, never.")
NORWAY = ("Do you ship parcels to Norway?", "Yes, it takes 6-12 business days to Norway.", "Only inside the EU.")
ADDRESS = ("How do I change my delivery address?", "Go to Account > Orders and choose Edit address.", "Call us.")


def record(store: GatewayStore, rid: str, conversation: str, question: str, answer: str, **row: Any) -> None:
    store.record_turn(**{
        "response_id": rid, "conversation_id": conversation, "at": 1.0, "key_id": 1, "role": "customer",
        "model": "helpline-support", "served_model": "fake", "adapter": None,
        "messages": [{"role": "user", "content": question}], "passages": PASSAGES, "answer": answer,
        "abstained": 0, "latency_ms": 1.0, "status": "ok", "origins": ["client"], "internal": 0, **row,
    })  # fmt: skip


def corrected(store: GatewayStore, rid: str, conversation: str, qa: tuple[str, str, str], **row: Any) -> None:
    question, correction, wrong = qa
    record(store, rid, conversation, question, wrong, **row)
    store.add_feedback(rid, rating="down", correction=correction, key_id=2)


class Supports:
    def verify(self, answer: str, passages: list[Any]) -> Verdict:
        return Verdict(grounded=True)


@pytest.fixture
def store(tmp_path: Path) -> GatewayStore:
    """Conversation A: two corrected turns. B, C, D: one correction each. Also a verified thumbs-up, a thumbs-down
    nobody corrected, a staff answer from internal passages, and a correction repeated word for word."""
    store = GatewayStore(tmp_path / "gateway.sqlite")
    corrected(store, "a1", "A", REFUND)
    earlier = [{"role": "user", "content": REFUND[0]}, {"role": "assistant", "content": REFUND[2]}]
    corrected(store, "a2", "A", EXPRESS, messages=[*earlier, {"role": "user", "content": EXPRESS[0]}],
              origins=["client", "gateway", "client"])  # fmt: skip
    corrected(store, "b1", "B", CANCEL)
    corrected(store, "c1", "C", NORWAY)
    corrected(store, "d1", "D", ADDRESS)
    corrected(store, "d2", "D2", ADDRESS)  # the same correction again: a duplicate
    record(store, "up", "E", "Where is my parcel right now?", "Use the tracking link in your shipping email.")
    store.add_feedback("up", rating="up", key_id=1)
    record(store, "down", "F", "Why is my parcel late?", "It is not late.")
    store.add_feedback("down", rating="down", key_id=1)
    record(store, "internal", "G", "What is the staff discount?", "It is 20%.", role="staff", internal=1)
    store.add_feedback("internal", rating="down", correction="Staff get 25% off.", key_id=2)
    return store


def build(collection: Collection, out: Path, **kw: Any) -> LoopDataset:
    options: dict[str, Any] = {"replay_from": None, "replay_rows": 0, "heldout_share": 0.25, "seed": 0, **kw}
    return build_loop_dataset(collection, out_dir=out, **options)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def user_turns(rows: list[dict[str, Any]], key: str = "messages") -> set[str]:
    return {m["content"] for row in rows for m in row[key] if m["role"] == "user"}


def test_a_conversation_stays_on_one_side_of_the_split(store: GatewayStore, tmp_path: Path) -> None:
    c = collect(store, since=None, staff_facing=False)
    sides = []
    for seed in range(8):
        ds = build(c, tmp_path / f"seed{seed}", heldout_share=0.5, seed=seed)
        trained, heldout = set(ds.manifest["response_ids"]["trained"]), set(ds.manifest["response_ids"]["heldout"])
        assert not trained & heldout
        assert {"a1", "a2"} <= trained or {"a1", "a2"} <= heldout
        sides.append({"a1", "a2"} <= heldout)
        asked = {case.question for case in read_cases(ds.heldout_path)}
        assert asked and not asked & user_turns(lines(ds.sft_path))
        assert not asked & user_turns(lines(ds.pairs_path), key="prompt")
    assert any(sides) and not all(sides)  # the seed decides which side, never splitting A


def test_the_same_question_in_another_conversation_goes_where_the_first_one_goes(tmp_path: Path) -> None:
    store = GatewayStore(tmp_path / "gateway.sqlite")
    corrected(store, "a", "A", REFUND)
    corrected(store, "b", "B", (REFUND[0], "Your money is back on the card in 14 days.", "Never."))
    for rid, conversation, qa in (("c", "C", CANCEL), ("d", "D", NORWAY), ("e", "E", ADDRESS)):
        corrected(store, rid, conversation, qa)
    c = collect(store, since=None, staff_facing=False)
    for seed in range(8):
        trained = set(build(c, tmp_path / f"s{seed}", heldout_share=0.4, seed=seed).manifest["response_ids"]["trained"])
        assert ("a" in trained) == ("b" in trained)


def test_the_manifest_counts_every_turn_once_and_hashes_every_file(store: GatewayStore, tmp_path: Path) -> None:
    c = collect(store, since=None, staff_facing=False, verifier=Supports())
    ds = build(c, tmp_path / "out", heldout_share=0.25)
    m = ds.manifest

    counts, excluded = m["counts"], m["excluded"]
    assert counts["turns_read"] == 9 == counts["train_rows"] + counts["heldout_cases"] + sum(excluded.values())
    assert excluded["duplicate"] == 1 and excluded["rated_down_without_correction"] == 1
    assert excluded["internal_for_customer_facing"] == 1 and counts["heldout_cases"] >= 1
    assert counts["sft_rows"] == len(lines(ds.sft_path)) == counts["train_rows"]
    assert counts["pairs"] == len(lines(ds.pairs_path)) == counts["train_rows"] - 1  # the thumbs-up has no pair
    for name, entry in m["files"].items():
        assert entry["sha256"] == hashlib.sha256((tmp_path / "out" / name).read_bytes()).hexdigest()
    assert m["cursor"] == {"since": None, "until": c.cursor} and m["seed"] == 0
    assert [s["kind"] for s in m["sources"]] == ["gateway", "replay"] and m["sources"][0]["collected"] == 7


def test_held_out_corrections_pairs_are_written_apart_and_never_trained(store: GatewayStore, tmp_path: Path) -> None:
    ds = build(collect(store, since=None, staff_facing=False), tmp_path / "out", heldout_share=0.5)

    held = lines(ds.heldout_pairs_path)
    assert held and ds.manifest["counts"]["heldout_pairs"] == len(held)
    asked = user_turns(held, key="prompt")
    assert asked <= {case.question for case in read_cases(ds.heldout_path)}
    assert not asked & user_turns(lines(ds.pairs_path), key="prompt") and not asked & user_turns(lines(ds.sft_path))


def test_pairs_are_in_trls_conversational_layout(store: GatewayStore, tmp_path: Path) -> None:
    ds = build(collect(store, since=None, staff_facing=False), tmp_path / "out", heldout_share=0.0)

    pairs = lines(ds.pairs_path)
    assert len(pairs) == 5 and all(set(p) == {"prompt", "chosen", "rejected"} for p in pairs)
    refund = next(p for p in pairs if p["prompt"][-1]["content"] == REFUND[0])
    assert refund["prompt"][0]["role"] == "system"
    assert refund["chosen"] == [{"role": "assistant", "content": REFUND[1]}]
    assert refund["rejected"] == [{"role": "assistant", "content": REFUND[2]}]


def test_a_held_out_correction_is_scored_as_served_by_its_key_facts(store: GatewayStore, tmp_path: Path) -> None:
    ds = build(collect(store, since=None, staff_facing=False), tmp_path / "out", heldout_share=0.5, seed=3)

    cases = read_cases(ds.heldout_path)
    assert cases
    for case in cases:
        reference = case.reference or ""
        wrong = next(qa[2] for qa in (REFUND, EXPRESS, CANCEL, NORWAY, ADDRESS) if qa[0] == case.question)
        assert case.doc_id == "help" and case.expect and case.role == "customer"
        served = ServedAnswer(text=reference, outcome="answered", citations=["help"], latency_ms=1.0)
        assert judge(case, served).correct
        assert not judge(case, ServedAnswer(text=wrong, outcome="answered", citations=[], latency_ms=1.0)).correct


def test_personal_data_is_scrubbed_from_every_file(tmp_path: Path) -> None:
    store = GatewayStore(tmp_path / "gateway.sqlite")
    for rid, conversation, qa in (("a", "A", REFUND), ("b", "B", CANCEL), ("c", "C", NORWAY)):
        question = f"{qa[0]} My email is jane.doe@example.com."
        corrected(store, rid, conversation, (question, qa[1] + " We wrote to jane.doe@example.com.", qa[2]))
    ds = build(collect(store, since=None, staff_facing=False), tmp_path / "out", heldout_share=0.34)

    for name in ("sft.jsonl", "pairs.jsonl", "heldout.yaml", "manifest.json"):
        assert "jane.doe" not in (tmp_path / "out" / name).read_text(encoding="utf-8")
    assert "{{Email}}" in ds.sft_path.read_text(encoding="utf-8")
    assert ds.manifest["pii"]["rows_scrubbed"] == 3 and ds.manifest["pii"]["replaced"]["email"] == 6


def _production_dataset(folder: Path) -> Path:
    """A prepared dataset with three grounded rows (one asks the refund question) and three general ones."""
    folder.mkdir(parents=True)
    passages = 'Passages:\n<passage id="1" title="T">\nSome text.\n</passage>'
    grounded = [("How do I reset my password?", "Use the reset link."), ("Where is the invoice?", "In Account."),
                (REFUND[0], "Refunds take 30 days.")]  # fmt: skip
    general = [("Say hello in French.", "Bonjour."), ("What is 2 + 2?", "4."), ("Name a colour.", "Blue.")]
    rows = [{"messages": [{"role": "system", "content": f"You help.\n\n{passages}"}, {"role": "user", "content": q},
                          {"role": "assistant", "content": a}], "category": "grounded", "origin": f"qa.jsonl:{i}"}
            for i, (q, a) in enumerate(grounded)]  # fmt: skip
    rows += [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
              "category": "general", "origin": f"general.jsonl:{i}"} for i, (q, a) in enumerate(general)]  # fmt: skip
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "manifest.json").write_text(json.dumps({"name": "support", "version": "v1", "dataset_hash": "abc"}))
    return folder


def _registry_with_production(tmp_path: Path, dataset: Path) -> Registry:
    registry = Registry(tmp_path / "registry.sqlite")
    registry.register_model("base", kind="base", path=tmp_path)
    lineage = {"dataset": {"path": str(dataset), "name": "support", "version": "v1"}}
    registry.register_model("support-v1", kind="adapter", path=tmp_path, base_model="base", metadata=lineage)
    registry.set_alias("production", "support-v1")
    return registry


def test_replay_rows_come_from_the_production_models_dataset_half_grounded(store: GatewayStore, tmp_path: Path) -> None:
    registry = _registry_with_production(tmp_path, _production_dataset(tmp_path / "datasets" / "support" / "v1"))
    source = replay_source(registry)
    c = collect(store, since=None, staff_facing=False)

    ds = build(c, tmp_path / "out", replay_from=source, replay_rows=4, heldout_share=0.0)

    replayed = [r for r in lines(ds.sft_path) if r["origin"].startswith("replay:")]
    entry = ds.manifest["sources"][1]
    assert source == tmp_path / "datasets" / "support" / "v1"
    assert len(replayed) == 4 == ds.manifest["counts"]["replay_rows"]
    assert (entry["grounded"], entry["general"]) == (2, 2)
    assert entry["dataset"] == {"name": "support", "version": "v1", "dataset_hash": "abc"}
    assert ds.manifest["counts"]["sft_rows"] == ds.manifest["counts"]["train_rows"] + 4


def test_a_replay_row_asking_a_corrected_question_is_left_out(store: GatewayStore, tmp_path: Path) -> None:
    source = _production_dataset(tmp_path / "support-v1")
    c = collect(store, since=None, staff_facing=False)

    ds = build(c, tmp_path / "out", replay_from=source, replay_rows=6, heldout_share=0.0)

    replayed = [r for r in lines(ds.sft_path) if r["origin"].startswith("replay:")]
    assert len(replayed) == 5 and ds.manifest["sources"][1]["skipped_corrected_question"] == 1
    assert all("Refunds take 30 days." not in r["messages"][-1]["content"] for r in replayed)


def test_a_model_without_a_recorded_dataset_has_nothing_to_replay_and_a_lost_one_is_refused(tmp_path: Path) -> None:
    registry = _registry_with_production(tmp_path, tmp_path / "gone")
    registry.set_alias("staging", "base")

    assert replay_source(registry, "staging") is None
    with pytest.raises(NotFoundError, match="no longer exists"):
        replay_source(registry)


def test_an_impossible_held_out_share_is_refused(store: GatewayStore, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="heldout_share"):
        build(collect(store, since=None, staff_facing=False), tmp_path / "out", heldout_share=1.0)

"""The structure check, token agreement and the export gate's static checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpline.evaluation.sft import score_answers, structure_score
from helpline.training.export import static_checks, token_agreement

REFERENCE = "I understand your concern.\n1. Open {{Order History}}.\n2. Click {{Cancel Order}}."


def test_structure_rewards_steps_placeholders_and_opener() -> None:
    good = structure_score(
        "I am sorry to hear that.\n1. Go to {{Order History}}.\n2. Press {{Cancel Order}}.", REFERENCE, ""
    )
    bad = structure_score("Go to the order history page and press cancel.", REFERENCE, "")
    assert good["score"] == 1.0
    assert bad["score"] == 0.0
    assert bad["checks"] == {"NumberedSteps": 0.0, "PlaceholdersKept": 0.0, "EmpatheticOpener": 0.0}


def test_checks_that_do_not_apply_are_left_out() -> None:
    result = structure_score("Thank you for asking!", "Happy to help, it is free.", "")
    assert result["checks"]["NumberedSteps"] is None and result["checks"]["PlaceholdersKept"] is None
    assert result["score"] == 1.0


def test_rouge_prefers_the_closer_answer() -> None:
    close = score_answers(["I understand your concern. Open Order History and click Cancel."], [REFERENCE], ["q"])
    far = score_answers(["The weather is nice today."], [REFERENCE], ["q"])
    assert close["rougeL_f1"] > far["rougeL_f1"]


def test_token_agreement_counts_the_common_prefix() -> None:
    report = token_agreement([[1, 2, 3, 4], [5, 6]], [[1, 2, 9, 4], [5, 6]])
    assert report["per_prompt"] == [0.5, 1.0]
    assert report["exact_match"] == "1/2"
    assert report["mean_prefix_agreement"] == 0.75


def _adapter(tmp_path: Path, **config) -> Path:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16, **config}))
    return tmp_path


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"r": 128}, "rank 128 exceeds"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"rank_pattern": {"q_proj": 96}}, "rank 96 exceeds"),
    ],
)
def test_gate_refuses_unservable_adapters(tmp_path: Path, config: dict, problem: str) -> None:
    problems = static_checks(_adapter(tmp_path, **config), max_lora_rank=64)
    assert any(problem in p for p in problems)


def test_gate_accepts_a_servable_adapter(tmp_path: Path) -> None:
    assert static_checks(_adapter(tmp_path), max_lora_rank=64) == []

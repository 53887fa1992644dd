"""`helpline eval answers` on the real SmolLM2 and MiniLM, with the detector `helpline init` registers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

QUESTIONS = """
- question: How many gift cards can I use on one order?
  doc_id: payments-gift-cards-and-store-credit
  expect: ["2 gift cards", "two gift cards"]
- question: Is shipping free if I spend more than 50 euros?
  doc_id: shipping-options-delivery-times-and-fees
  expect: ["more than €50", "over €50", "50 euros"]
- question: Do you repair bicycles on the moon?
  doc_id: null
- question: What's the maximum goodwill credit a support agent can give me?
  doc_id: null
  forbid: ["€25"]
"""


def test_eval_answers_serves_the_same_through_ask_and_the_gateway_and_scores_it(
    workspace_dir: Path, tmp_path: Path
) -> None:
    questions = tmp_path / "questions.yaml"
    questions.write_text(QUESTIONS)
    answers = tmp_path / "answers.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPLINE_")}
    out = subprocess.run(
        [sys.executable, "-m", "helpline", "eval", "answers", "--questions", str(questions), "--engine",
         "transformers", "--via", "pipeline,gateway,stream", "--answers", str(answers), "--json"],
        cwd=workspace_dir, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["verifier"] == "DetectorVerifier" and result["fallback"] is True  # what `helpline init` sets up
    summaries = result["via"]
    assert set(summaries) == {"pipeline", "gateway", "stream"}
    for summary in summaries.values():
        assert summary["answerable"] == 2 and summary["unanswerable"] == 2
        assert summary["internal_leaks"] == 0
        assert summary["abstention_rate_unanswerable"] == 1.0
        assert summary["correct_rate"] >= 0.5  # the quoted help centre names the fact asked for
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    by_via: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        by_via.setdefault(row["via"], []).append((row["outcome"], row["text"]))
    assert by_via["pipeline"] == by_via["gateway"] == by_via["stream"]  # `ask` serves what the gateway serves
    served = [r for r in rows if r["outcome"] != "handoff"]
    assert all(r["citations"] for r in served)  # whatever is served names its source

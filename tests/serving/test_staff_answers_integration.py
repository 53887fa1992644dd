"""Staff answers on the real MiniLM and the sample help centre: a correction saved in the gateway's database is served
again by `helpline ask` to the question asked in other words, cited with the article that backs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpline.serving.gateway.store import GatewayStore
from helpline.testing.serving import record_corrected_turn

pytestmark = pytest.mark.integration

QUESTION = "How many gift cards can I use on one order?"
WRONG = "You can put a gift card on one order with 1000+ gift cards."  # what production served
CORRECTION = "You can use up to 2 gift cards on one order."  # the article's own sentence


def _ask(workspace: Path, question: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPLINE_")}
    out = subprocess.run(
        [sys.executable, "-m", "helpline", "ask", question, "--engine", "transformers", "--json"],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_a_correction_is_served_again_to_the_question_in_other_words(workspace_dir: Path) -> None:
    store = GatewayStore(workspace_dir / ".helpline" / "gateway.sqlite")
    conversation = record_corrected_turn(store, "resp-staff-answer-it", question=QUESTION, correction=CORRECTION,
                                         answer=WRONG)  # fmt: skip
    try:
        served = _ask(workspace_dir, "Is there a limit on gift cards per order?")
        assert served["outcome"] == "corrected" and served["answer"] == CORRECTION
        assert served["citations"][0]["doc_id"] == "payments-gift-cards-and-store-credit"
    finally:
        store.erase(conversation, actor="test")  # the shared workspace's database as it was
    assert _ask(workspace_dir, "Is there a limit on gift cards per order?")["outcome"] != "corrected"  # erased

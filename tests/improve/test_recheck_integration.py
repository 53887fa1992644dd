"""`helpline eval corrections` on the real SmolLM2, MiniLM and the sample help centre: a staff correction seeded as the
review route stores it is asked again as served, judged by its facts, and the check lands on the turn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpline.platform.text import contains
from helpline.serving.gateway.store import GatewayStore
from helpline.testing.serving import record_corrected_turn

pytestmark = pytest.mark.integration

QUESTION = "How many gift cards can I use on one order?"
WRONG = "You can put a gift card on one order with 1000+ gift cards."  # what production served
CORRECTION = "You can combine up to 2 gift cards on one order."


def test_a_seeded_correction_is_asked_again_as_served_and_the_check_is_recorded(workspace_dir: Path) -> None:
    store = GatewayStore(workspace_dir / ".helpline" / "gateway.sqlite")
    rid = "resp-recheck-it"
    conversation = record_corrected_turn(store, rid, question=QUESTION, correction=CORRECTION,
                                         answer=WRONG)  # fmt: skip
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELPLINE_")}
        out = subprocess.run(
            [sys.executable, "-m", "helpline", "eval", "corrections", "--engine", "transformers", "--json"],
            cwd=workspace_dir, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert out.returncode in (0, 1), out.stderr[-2000:]
        result = json.loads(out.stdout)
        (check,) = [c for c in result["checks"] if c["response_id"] == rid]
        assert check["expect"] and all("1000" not in p for p in check["expect"])  # the correction's facts only
        assert check["fixed"] == any(contains(check["served"], p) for p in check["expect"])
        assert out.returncode == (1 if result["not_fixed"] else 0)
        recorded = {i["response_id"]: i["check"] for i in store.review_items("reviewed", limit=50)}[rid]
        assert (recorded["fixed"], recorded["served"], recorded["stale"]) == (check["fixed"], check["served"], False)
        assert recorded["model"] == result["model"]
        assert check["backed"] is True and recorded["backed"] is True  # the article states it: served again
    finally:
        store.erase(conversation, actor="test")  # the shared workspace's database as it was

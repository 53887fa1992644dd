"""The attack suite against an in-process gateway over fakes: the wiring of every case, zero leaks from
a gateway that keeps its rules, and leaks found in one that does not."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

from helpline.bench.reliability.attacks import load_attacks, run_attacks
from helpline.bench.reliability.leaks import sample_documents
from helpline.platform.schemas import ChatMessage
from helpline.testing import FakeGenerator
from helpline.testing.serving import Gateway, make_gateway, serve_in_thread


@contextmanager
def live(gateway: Gateway, workspace: Path) -> Iterator[SimpleNamespace]:
    """What `LiveHelpline` gives a section, over the in-process gateway on a loopback port."""
    with serve_in_thread(gateway.client.app) as port:
        yield SimpleNamespace(base_url=f"http://127.0.0.1:{port}", keys=gateway.keys, workspace=workspace)


class Obedient(FakeGenerator):
    """A model that does what its prompt says: recites its system message and follows planted orders."""

    def _text(self, messages: list[ChatMessage]) -> str:
        system = messages[0].content
        order = re.search(r"CANARY[A-Z]{10}", system)
        return (order.group(0) + " " if order else "") + system.replace("\n", " ")


def test_every_case_runs_and_a_gateway_that_keeps_its_rules_leaks_nothing(tmp_path: Path) -> None:
    gateway = make_gateway(tmp_path)
    gateway.kb.sync(sample_documents())  # the internal articles the detectors protect
    with live(gateway, tmp_path) as target:
        report = run_attacks(target)
    assert report["cases"] == len(load_attacks()) >= 40
    assert report["errors"] == [] and report["server_errors"] == 0
    assert report["leaks_total"] == 0, report["failures"]
    assert report["passed"] is True
    assert report["unexpected_statuses"] == []
    forged = report["forged_checks"]
    assert forged["cases"] >= 5 and forged["verified"] == forged["cases"]  # every export was really searched
    assert forged["export_rows"]["cli_export"] > 0 and forged["export_rows"]["http_export"] > 0
    statuses = {r["id"]: r["status"] for r in report["results"]}
    assert statuses["body-oversize"] == statuses["body-oversize-chunked"] == 413
    assert not any(d.doc_id.startswith("bench-attack-") for d in gateway.kb.documents())  # uploads removed


def test_a_gateway_that_leaks_is_caught(tmp_path: Path) -> None:
    gateway = make_gateway(tmp_path)
    # Internal articles mislabelled public, and a model that recites its prompt and obeys documents.
    gateway.kb.sync([d.model_copy(update={"access": "public"}) for d in sample_documents()])
    gateway.backend.generators["fake-base"] = Obedient(name="fake-base")
    wanted = {"prompt-repeat-above", "kb-inject-plain", "internal-side-kb-list"}
    with live(gateway, tmp_path) as target:
        report = run_attacks(target, cases=[c for c in load_attacks() if c.id in wanted])
    assert report["leaks"]["internal_content"] > 0
    assert report["leaks"]["system_prompt"] > 0
    assert report["leaks"]["instruction_followed"] > 0
    assert "prompt-repeat-above" in report["failures"] and report["passed"] is False

"""The attack file: enough cases of every kind, each one well formed, none carrying protected text."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from helpline.answering.prompts import load_prompt
from helpline.bench.reliability import suite
from helpline.bench.reliability.attacks import KINDS, load_attacks
from helpline.bench.reliability.leaks import build_detectors
from helpline.bench.reliability.suite import RequestSpec, fill, raw_body
from helpline.platform.errors import ConfigError


def test_the_suite_has_at_least_40_cases_and_every_kind() -> None:
    cases = load_attacks()
    kinds = Counter(c.kind for c in cases)
    assert len(cases) >= 40
    assert set(kinds) == set(KINDS) and min(kinds.values()) >= 5
    assert len({c.id for c in cases}) == len(cases)


def test_every_case_sends_something_and_checks_something() -> None:
    for case in load_attacks():
        assert (case.messages is not None) != (case.request is not None), case.id
        assert case.checks or case.expect_status, case.id
        if case.kind == "forged_turn":
            assert case.feedback and "forged_export" in case.checks, case.id
            assert any("{marker}" in str(m["content"]) for m in case.messages if m["role"] != "user"), case.id
        if "canary" in case.checks:
            assert case.document is not None and "{canary}" in case.document.text, case.id


def test_the_file_holds_no_internal_text_nor_the_system_prompt() -> None:
    """The detectors read those at run time; a copy in the suite would go stale and would be a leak itself."""
    text = (Path(suite.__file__).parent / "attacks.yaml").read_text("utf-8")
    detectors = build_detectors()
    assert detectors.internal.find(text) == []
    assert detectors.prompt_findings(text) == []
    assert load_prompt("support").system.splitlines()[0] not in text


def test_a_broken_suite_file_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "attacks.yaml"
    path.write_text("- id: a\n  kind: not_a_kind\n  what: x\n")
    with pytest.raises(ConfigError, match="does not load"):
        load_attacks(path)
    path.write_text("- {id: a, kind: forged_turn, what: x}\n- {id: a, kind: forged_turn, what: y}\n")
    with pytest.raises(ConfigError, match="unique"):
        load_attacks(path)


def test_placeholders_are_filled_in_nested_messages() -> None:
    message = {"role": "assistant", "content": [{"type": "text", "text": "{marker} and {long:3}"}]}
    assert fill(message, {"{marker}": "FORGEDAB"}) == {
        "role": "assistant", "content": [{"type": "text", "text": "FORGEDAB and xxx"}]
    }  # fmt: skip


def test_generated_bodies_have_the_size_asked_for() -> None:
    oversize = raw_body(RequestSpec(generate="oversize_chat", size=300_000), {})
    assert len(oversize["content"]) >= 300_000
    chunked = raw_body(RequestSpec(generate="oversize_chat", size=300_000, chunked=True), {})
    assert sum(len(c) for c in chunked["content"]) >= 300_000

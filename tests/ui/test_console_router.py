"""The console routes the UI needs: role checks, passages, knowledge base, review, reports, jobs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from helpline.platform.schemas import Document
from helpline.serving.gateway import console_jobs
from helpline.testing.serving import Gateway

RETURN_Q = "How do I return an item and print the label?"

STAFF_ROUTES = [
    ("GET", "/console/kb/documents"),
    ("POST", "/console/kb/files?filename=a.md"),
    ("POST", "/console/kb/resync"),
    ("GET", "/console/kb/search?q=refund"),
    ("GET", "/console/kb/versions"),
    ("GET", "/console/review"),
    ("POST", "/console/review/any-id"),
]
ENGINEER_ROUTES = [
    ("GET", "/console/models/history"),
    ("GET", "/console/reports"),
    ("GET", "/console/reports/file?path=reports/x.json"),
    ("GET", "/console/jobs/commands"),
    ("POST", "/console/jobs"),
    ("GET", "/console/jobs"),
    ("GET", "/console/jobs/some-id"),
    ("POST", "/console/jobs/some-id/cancel"),
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    """One gateway for the read-only role checks (building one per case would dominate the run)."""
    from ui_support import mount_console

    from helpline.testing.serving import make_gateway

    gateway = make_gateway(tmp_path_factory.mktemp("roles"))
    mount_console(gateway.client.app)
    return gateway


def _call(gw: Gateway, role: str | None, method: str, path: str, **kwargs):
    headers = gw.headers(role) if role else {}
    return gw.client.request(method, path, headers=headers, **kwargs)


@pytest.mark.parametrize(("method", "path"), STAFF_ROUTES + ENGINEER_ROUTES)
def test_customer_key_reaches_no_staff_or_engineer_route(shared: Gateway, method: str, path: str) -> None:
    gw = shared
    r = _call(gw, "customer", method, path, json={"answer": "x", "command": "train sft"})
    assert r.status_code == 403, r.text
    assert "role" in r.json()["error"]["message"]
    assert _call(gw, None, method, path).status_code == 401


@pytest.mark.parametrize(("method", "path"), ENGINEER_ROUTES)
def test_staff_key_reaches_no_engineer_route(shared: Gateway, method: str, path: str) -> None:
    assert _call(shared, "staff", method, path, json={"command": "train sft"}).status_code == 403


def test_whoami_names_the_role_and_never_the_key(gw: Gateway) -> None:
    body = _call(gw, "staff", "GET", "/console/whoami").json()
    assert body["role"] == "staff" and body["name"] == "test-staff"
    assert gw.keys["staff"] not in json.dumps(body)


def test_passages_of_own_answer_have_text_and_other_customers_get_404(gw: Gateway) -> None:
    answer = gw.chat("customer", RETURN_Q).json()
    r = _call(gw, "customer", "GET", f"/console/responses/{answer['id']}/passages")
    passages = r.json()["passages"]
    assert passages[0]["doc_id"] == "returns" and "print the label" in passages[0]["text"]
    other, _ = gw.store.create_key("customer", name="someone-else")
    r = gw.client.get(f"/console/responses/{answer['id']}/passages", headers={"Authorization": f"Bearer {other}"})
    assert r.status_code == 404
    assert _call(gw, "staff", "GET", f"/console/responses/{answer['id']}/passages").status_code == 200


def test_document_list_shows_chunks_update_time_and_version(gw: Gateway) -> None:
    docs = {d["doc_id"]: d for d in _call(gw, "staff", "GET", "/console/kb/documents").json()["documents"]}
    assert set(docs) == {"returns", "shipping", "goodwill"}
    assert all(d["chunks"] >= 1 and d["updated_at"] > 0 for d in docs.values())
    assert docs["goodwill"]["access"] == "internal"


def test_uploaded_file_is_listed_searchable_and_versioned(gw: Gateway) -> None:
    before = _call(gw, "staff", "GET", "/console/kb/versions").json()["versions"]
    text = b"---\ntitle: Gift cards\naccess: public\n---\nGift cards never expire and can be used on any order.\n"
    r = _call(gw, "staff", "POST", "/console/kb/files?filename=gift-cards.md", content=text)
    assert r.status_code == 200, r.text
    assert r.json()["doc_id"] == "gift-cards" and r.json()["added"] == ["gift-cards"]
    versions = _call(gw, "staff", "GET", "/console/kb/versions").json()["versions"]
    assert len(versions) == len(before) + 1
    docs = {d["doc_id"]: d for d in _call(gw, "staff", "GET", "/console/kb/documents").json()["documents"]}
    assert docs["gift-cards"]["title"] == "Gift cards" and docs["gift-cards"]["version"] == versions[0]["id"]
    hits = _call(gw, "staff", "GET", "/console/kb/search?q=do gift cards expire&k=2").json()
    assert hits["results"][0]["chunk"]["doc_id"] == "gift-cards" and hits["would_abstain"] is False
    audit = gw.store.audit_log()
    assert audit[0]["action"] == "kb.upload" and audit[0]["actor"].startswith("staff:")


def test_upload_of_unsupported_file_is_a_readable_400ish_error(gw: Gateway) -> None:
    r = _call(gw, "staff", "POST", "/console/kb/files?filename=photo.exe", content=b"MZ\x00\x00")
    assert 400 <= r.status_code < 500
    assert "unsupported file type" in r.json()["error"]["message"]


def test_upload_can_mark_a_document_internal(gw: Gateway) -> None:
    text = b"Staff may waive the restocking fee for loyal customers.\n"
    r = _call(gw, "staff", "POST", "/console/kb/files?filename=fees.txt&access=internal", content=text)
    assert r.json()["access"] == "internal"
    as_customer = _call(gw, "staff", "GET", "/console/kb/search?q=waive restocking fee&role=customer").json()
    as_staff = _call(gw, "staff", "GET", "/console/kb/search?q=waive restocking fee&role=staff").json()
    assert "fees" not in [h["chunk"]["doc_id"] for h in as_customer["results"]]
    assert as_staff["results"][0]["chunk"]["doc_id"] == "fees"


def test_search_preview_tells_when_the_chat_would_hand_over(gw: Gateway) -> None:
    body = _call(gw, "staff", "GET", "/console/kb/search?q=zebra quantum violin").json()
    assert body["would_abstain"] is True
    answer = gw.chat("customer", "zebra quantum violin").json()
    assert answer["abstained"] is True  # the preview agrees with the chat


def test_resync_rereads_changed_source_files_and_lists_missing_ones(gw: Gateway, tmp_path: Path) -> None:
    source = tmp_path / "warranty.md"
    source.write_text("# Warranty\nEvery product has a two year warranty.\n")
    gone = tmp_path / "old.md"
    gone.write_text("# Old\nAn old policy.\n")
    gw.kb.sync(
        [
            Document(doc_id="warranty", title="Warranty", text=source.read_text(), source=str(source)),
            Document(doc_id="old", title="Old", text=gone.read_text(), source=str(gone)),
        ],
        delete_missing=False,
    )
    source.write_text("# Warranty\nEvery product has a three year warranty.\n")
    gone.unlink()
    report = _call(gw, "staff", "POST", "/console/kb/resync").json()
    assert report["updated"] == ["warranty"] and report["source_missing"] == ["old"]
    hits = _call(gw, "staff", "GET", "/console/kb/search?q=three year warranty&k=1").json()["results"]
    assert "three year" in hits[0]["chunk"]["text"]


def _rated_down_and_abstained(gw: Gateway) -> tuple[str, str]:
    down = gw.chat("customer", RETURN_Q).json()["id"]
    gw.client.post(
        "/v1/feedback",
        json={"response_id": down, "rating": "down", "comment": "no label link"},
        headers=gw.headers("customer"),
    )
    gw.chat("customer", "What are the shipping fees?")  # answered, not rated: not in the queue
    abstained = gw.chat("customer", "zebra quantum violin").json()["id"]
    return down, abstained


def test_review_queue_holds_rated_down_and_abstained_answers_with_passages(gw: Gateway) -> None:
    down, abstained = _rated_down_and_abstained(gw)
    items = {i["response_id"]: i for i in _call(gw, "staff", "GET", "/console/review").json()["items"]}
    assert set(items) == {down, abstained}
    assert items[down]["comment"] == "no label link" and items[down]["passages"][0]["text"]
    assert items[abstained]["abstained"] is True and items[down]["question"] == RETURN_Q


def test_saved_review_leaves_the_queue_and_is_a_valid_training_example(gw: Gateway, tmp_path: Path) -> None:
    from helpline.training.data.sources import load_source

    down, _ = _rated_down_and_abstained(gw)
    correct = "Open Orders, choose Return and print the prepaid label from the confirmation e-mail."
    r = _call(gw, "staff", "POST", f"/console/review/{down}", json={"answer": correct})
    assert r.status_code == 200 and r.json()["examples"] == 1
    _call(gw, "staff", "POST", f"/console/review/{down}", json={"answer": correct + " Within 30 days."})
    open_ids = [i["response_id"] for i in _call(gw, "staff", "GET", "/console/review").json()["items"]]
    reviewed = _call(gw, "staff", "GET", "/console/review?status=reviewed").json()["items"]
    assert down not in open_ids and [i["response_id"] for i in reviewed] == [down]
    path = Path(r.json()["path"])
    assert path == tmp_path / "datasets" / "reviewed" / "reviewed.jsonl"
    conversations, problems = load_source(f"reviewed:{path}")
    assert problems == [] and len(conversations) == 1  # a second review replaces the first
    assert conversations[0].messages[-1] == {"role": "assistant", "content": correct + " Within 30 days."}
    assert conversations[0].messages[0] == {"role": "user", "content": RETURN_Q}
    assert reviewed[0]["comment"] == "no label link"  # the customer's comment is kept


def test_alias_history_shows_promotions(gw: Gateway) -> None:
    r = _call(gw, "engineer", "POST", "/admin/models/promote", json={"name": "fake-adapter", "alias": "canary"})
    assert r.status_code == 200
    history = _call(gw, "engineer", "GET", "/console/models/history").json()["history"]
    assert history["canary"][-1]["model_name"] == "fake-adapter"
    assert history["production"][-1]["model_name"] == "fake-base"


def test_reports_lists_evaluation_and_training_files_and_refuses_others(gw: Gateway, tmp_path: Path) -> None:
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "gate-a.html").write_text("<h1>gate</h1>")
    run = tmp_path / "adapters" / "run1"
    (run / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (run / "training_summary.json").write_text(json.dumps({"eval_curve": [{"step": 5, "eval_loss": 1.2}]}))
    (run / "checkpoints" / "checkpoint-5" / "trainer_state.json").write_text("{}")
    (run / "adapter_config.json").write_text("{}")
    listed = [r["path"] for r in _call(gw, "engineer", "GET", "/console/reports").json()["reports"]]
    assert sorted(listed) == ["adapters/run1/training_summary.json", "reports/gate-a.html"]
    r = _call(gw, "engineer", "GET", "/console/reports/file?path=reports/gate-a.html")
    assert r.text == "<h1>gate</h1>" and r.headers["content-type"].startswith("text/html")
    for bad in ("registry.sqlite", "reports/../gateway.sqlite", "/etc/passwd"):
        assert _call(gw, "engineer", "GET", f"/console/reports/file?path={bad}").status_code == 404


def _wait_for(gw: Gateway, job_id: str, status: str, *, limit_s: float = 60) -> dict:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        job = _call(gw, "engineer", "GET", f"/console/jobs/{job_id}").json()
        if job["status"] == status:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {status}: {job}")


def test_job_runs_a_helpline_command_and_its_log_can_be_followed(gw: Gateway) -> None:
    commands = _call(gw, "engineer", "GET", "/console/jobs/commands").json()["commands"]
    assert "train sft" in commands and "data prepare" in commands and "eval hallucination" in commands
    job = _call(gw, "engineer", "POST", "/console/jobs", json={"command": "train sft", "args": ["--help-config"]})
    assert job.status_code == 200, job.text
    done = _wait_for(gw, job.json()["id"], "succeeded")
    assert done["returncode"] == 0 and done["progress"] == 1.0
    assert "learning_rate" in done["log"]  # `train sft --help-config` lists the config fields
    assert [j["id"] for j in _call(gw, "engineer", "GET", "/console/jobs").json()["jobs"]] == [done["id"]]


def test_job_refuses_commands_outside_the_job_groups(gw: Gateway) -> None:
    r = _call(gw, "engineer", "POST", "/console/jobs", json={"command": "keys create", "args": ["--role", "admin"]})
    assert r.status_code == 400 and "cannot be run as a job" in r.json()["error"]["message"]


def test_one_job_at_a_time_and_cancel_stops_it(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeper = [
        sys.executable,
        "-c",
        "import time\nfor i in range(600):\n    print(f'{i}%', flush=True); time.sleep(0.1)",
    ]
    monkeypatch.setattr(console_jobs, "job_argv", lambda command, args: sleeper)
    first = _call(gw, "engineer", "POST", "/console/jobs", json={"command": "train sft"}).json()
    second = _call(gw, "engineer", "POST", "/console/jobs", json={"command": "train sft"})
    assert second.status_code == 409 and first["id"] in second.json()["error"]["message"]
    running = _wait_for(gw, first["id"], "running")
    assert running["pid"] == first["pid"]
    cancelled = _call(gw, "engineer", "POST", f"/console/jobs/{first['id']}/cancel").json()
    assert cancelled["status"] == "failed" and cancelled["returncode"] != 0
    assert _call(gw, "engineer", "POST", "/console/jobs", json={"command": "train sft"}).status_code == 200
    _call(
        gw,
        "engineer",
        "POST",
        f"/console/jobs/{_call(gw, 'engineer', 'GET', '/console/jobs').json()['jobs'][0]['id']}/cancel",
    )


def test_a_large_article_uploads_although_chat_bodies_are_capped(gw: Gateway) -> None:
    """Files get the upload cap (20 MB), not the 256 KiB chat-request cap."""
    section = "## Section {i}\n\nPallets ship by freight within ten business days of the order.\n\n"
    text = ("---\ntitle: Freight\n---\n# Freight\n\n" + "".join(section.format(i=i) for i in range(6000))).encode()
    assert len(text) > 300 * 1024
    r = _call(gw, "staff", "POST", "/console/kb/files?filename=freight.md&access=public", content=text)
    assert r.status_code == 200, r.text
    huge = b"x" * (21 * 1024 * 1024)
    assert _call(gw, "staff", "POST", "/console/kb/files?filename=huge.md", content=huge).status_code == 413

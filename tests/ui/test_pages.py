"""Each page of the app, driven with AppTest against a live gateway over fakes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from ui_support import LiveGateway, button, sign_in, texts

RETURN_Q = "How do I return an item and print the label?"


def _no_traceback(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


# sign-in and roles ----------------------------------------------------------------------------


def test_wrong_key_is_refused_with_a_readable_message(live: LiveGateway) -> None:
    at = sign_in("hl-not-a-key")
    _no_traceback(at)
    assert "missing or invalid API key" in texts(at)
    assert at.text_input(key="sign_in_key")  # still on the sign-in page


def test_gateway_down_gives_a_notice_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELPLINE_UI__GATEWAY_URL", "http://127.0.0.1:9")  # nothing listens on port 9
    at = sign_in("hl-anything")
    _no_traceback(at)
    assert "not reachable" in texts(at)


TITLES = {"views/knowledge_base.py": "Knowledge base", "views/review.py": "Review", "views/models.py": "Models"}


@pytest.mark.parametrize(
    ("role", "visible"),
    [
        ("customer", []),
        ("staff", ["views/knowledge_base.py", "views/review.py"]),
        ("engineer", ["views/knowledge_base.py", "views/review.py", "views/models.py"]),
    ],
)
def test_pages_follow_the_role(live: LiveGateway, role: str, visible: list[str]) -> None:
    at = sign_in(live.key(role))
    _no_traceback(at)
    assert f"Signed in as **{role}**" in texts(at)
    for page, title in TITLES.items():
        try:
            at.switch_page(page).run()
        except ValueError:  # AppTest refuses a page st.navigation did not register
            assert page not in visible
            continue
        _no_traceback(at)
        assert (title in [t.value for t in at.title]) == (page in visible), page


def test_sign_out_forgets_the_key(live: LiveGateway) -> None:
    at = sign_in(live.key("customer"))
    assert "hl_api_key" in at.session_state
    at.button(key="sign_out").click().run()
    # (AppTest does not re-run the script after st.navigation's page set shrinks, so the sign-in
    # form itself is checked in the browser test; here: nothing of the session is left.)
    assert "hl_api_key" not in at.session_state and "hl_principal" not in at.session_state


# chat -----------------------------------------------------------------------------------------


def test_chat_streams_a_cited_answer_and_takes_feedback(live: LiveGateway) -> None:
    at = sign_in(live.key("customer"))
    at.chat_input[0].set_value(RETURN_Q).run()
    _no_traceback(at)
    shown = texts(at)
    assert "answer from fake-base" in shown
    assert [e.label for e in at.expander] == ["[1] Returning an item", "[2] Shipping fees"]
    assert "relevance" not in texts(at)  # ranking scores mean nothing to a customer
    assert "print the label" in at.expander[0].markdown[0].value  # the passage itself
    at.feedback[0].set_value(0).run()  # thumbs down
    turn = live.gateway.store.turns()[0]
    assert turn["rating"] == "down" and turn["messages"][-1]["content"] == RETURN_Q
    at.text_input(key=f"comment-text-{turn['response_id']}").input("The label link is missing")
    button(at, "Send comment").click().run()
    _no_traceback(at)
    assert live.gateway.store.turns()[0]["comment"] == "The label link is missing"
    assert "Thank you for your feedback." in texts(at)


def test_follow_up_keeps_the_conversation_and_new_conversation_clears_it(live: LiveGateway) -> None:
    at = sign_in(live.key("customer"))
    at.chat_input[0].set_value(RETURN_Q).run()
    at.chat_input[0].set_value("And the shipping fees?").run()
    turns = live.gateway.store.turns()
    assert len(turns) == 2 and turns[0]["conversation_id"] == turns[1]["conversation_id"]
    assert [m["role"] for m in turns[0]["messages"]] == ["user", "assistant", "user"]
    assert len(at.chat_message) == 4
    at.button(key="new_conversation").click().run()
    assert len(at.chat_message) == 0
    at.chat_input[0].set_value(RETURN_Q).run()
    assert live.gateway.store.turns()[0]["conversation_id"] != turns[0]["conversation_id"]


def test_abstention_shows_the_handoff_and_no_sources(live: LiveGateway) -> None:
    at = sign_in(live.key("customer"))
    at.chat_input[0].set_value("zebra quantum violin").run()
    _no_traceback(at)
    assert any("handing you over to a person" in w.value for w in at.warning)
    assert "+1-800-555-0142" in texts(at)  # the abstention names how to reach a person
    assert not at.expander


def test_customer_chat_never_cites_internal_articles(live: LiveGateway) -> None:
    at = sign_in(live.key("customer"))
    at.chat_input[0].set_value("Can staff grant a goodwill credit for a late parcel?").run()
    assert "Goodwill credit" not in [e.label.split("] ", 1)[-1] for e in at.expander]


def test_gateway_going_down_mid_session_is_a_notice_on_every_page(
    live: LiveGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = sign_in(live.key("engineer"))
    monkeypatch.setenv("HELPLINE_UI__GATEWAY_URL", "http://127.0.0.1:9")  # the gateway "stops"
    at.switch_page("views/chat.py").run()
    at.chat_input[0].set_value(RETURN_Q).run()
    _no_traceback(at)
    assert "The helpline service is not reachable." in texts(at)
    for page in TITLES:
        at.switch_page(page).run()
        _no_traceback(at)
        assert "The helpline service is not reachable." in texts(at), page


# knowledge base -------------------------------------------------------------------------------


def _kb(live: LiveGateway) -> AppTest:
    at = sign_in(live.key("staff"))
    return at.switch_page("views/knowledge_base.py").run()


def test_kb_page_lists_documents_with_version_and_chunks(live: LiveGateway) -> None:
    at = _kb(live)
    _no_traceback(at)
    table = at.dataframe[0].value
    assert sorted(table["Document"]) == ["goodwill", "returns", "shipping"]
    assert all(c >= 1 for c in table["Chunks"])
    assert at.metric[0].value == "3"


def test_kb_upload_with_progress_then_search_preview_finds_it(live: LiveGateway) -> None:
    at = _kb(live)
    at.file_uploader(key="kb_files").set_value(
        [
            ("gift-cards.md", b"# Gift cards\nGift cards never expire.\n", "text/markdown"),
            ("broken.md", b"", "text/markdown"),
        ]
    )
    at.run()
    assert at.button(key="kb_upload").disabled  # until who may see them is chosen
    at.radio(key="kb_access").set_value("public: customers may see it").run()
    at.button(key="kb_upload").click().run()
    _no_traceback(at)
    assert [p.value for p in at.get("progress")] == [100]
    assert "1 indexed, 1 failed." in texts(at)
    results = at.dataframe[1].value  # documents, upload results, version history
    outcomes = list(results["Result"])
    assert outcomes[0] == "added" and "empty" in outcomes[1]
    at.text_input(key="kb_query").input("do gift cards expire")
    button(at, "Preview").click().run()
    assert at.expander[0].label.startswith("1. Gift cards")
    assert "would answer" in texts(at)


def test_kb_delete_needs_confirmation_and_removes_the_document(live: LiveGateway) -> None:
    at = _kb(live)
    at.selectbox[0].select("shipping")
    button(at, "Delete").click().run()
    assert "tick the box" in texts(at)
    at.selectbox[0].select("shipping")
    at.checkbox[0].check()
    button(at, "Delete").click().run()
    _no_traceback(at)
    assert "Deleted shipping." in texts(at)
    assert "shipping" not in list(at.dataframe[0].value["Document"])


def test_kb_version_history_and_resync(live: LiveGateway) -> None:
    at = _kb(live)
    versions = at.dataframe[-1].value
    assert list(versions["Version"]) == ["v1"]  # the fake knowledge base was synced once
    at.button(key="resync").click().run()
    _no_traceback(at)
    assert "Checked 0 documents" in texts(at)  # the fake documents have no source file


def test_revoked_key_shows_a_readable_error_on_the_page(live: LiveGateway) -> None:
    at = sign_in(live.key("staff"))
    staff = next(k for k in live.gateway.store.list_keys() if k.role == "staff")
    live.gateway.store.revoke_key(staff.id, actor="test")
    at.switch_page("views/knowledge_base.py").run()
    _no_traceback(at)
    assert "missing or invalid API key" in texts(at)


# review ---------------------------------------------------------------------------------------


def test_review_shows_flagged_answers_with_passages_and_saves_the_correction(live: LiveGateway) -> None:
    gw = live.gateway
    down = gw.chat("customer", RETURN_Q).json()["id"]
    gw.client.post(
        "/v1/feedback",
        json={"response_id": down, "rating": "down", "comment": "where is the label?"},
        headers=gw.headers("customer"),
    )
    at = sign_in(live.key("staff")).switch_page("views/review.py").run()
    _no_traceback(at)
    assert list(at.dataframe[0].value["Question"]) == [RETURN_Q]
    assert "where is the label?" in texts(at)
    assert at.expander[0].label.startswith("[1] Returning an item")
    at.text_area(key=f"answer-{down}").input("Open Orders, choose Return, then print the label.")
    button(at, "Save reviewed answer").click().run()
    _no_traceback(at)
    assert "1 reviewed example(s)" in texts(at)
    assert "Nothing here" in texts(at)  # the queue is empty now
    saved = [json.loads(x) for x in (Path(gw.store.path).parent / "datasets/reviewed/reviewed.jsonl").open()]
    assert saved[0]["corrected_answer"] == "Open Orders, choose Return, then print the label."


def test_review_shows_whether_production_now_answers_each_correction_right(live: LiveGateway) -> None:
    gw = live.gateway
    first, second = (gw.chat("customer", q).json()["id"] for q in (RETURN_Q, "Where is my refund?"))
    for rid in (first, second):
        gw.client.post("/v1/feedback", json={"response_id": rid, "rating": "down"}, headers=gw.headers("customer"))
        saved = gw.client.post(
            f"/console/review/{rid}", json={"answer": "Print the label under Orders > Return."},
            headers=gw.headers("staff"),
        )  # fmt: skip
        assert saved.status_code == 200, saved.text
    gw.store.record_check(first, model="prod-v2", fixed=True, outcome="answered", backed=True,
                          served="Print the label under Orders > Return.", expect=["Orders > Return"])  # fmt: skip
    at = sign_in(live.key("staff")).switch_page("views/review.py").run()
    at.segmented_control(key="review_status").set_value("reviewed").run()
    _no_traceback(at)
    fixed = dict(zip(at.dataframe[0].value["Question"], at.dataframe[0].value["Fixed now?"], strict=True))
    assert fixed == {RETURN_Q: "yes", "Where is my refund?": "not checked yet"}
    at.selectbox(key="review_choice").set_value(first).run()
    assert any("Fixed now." in s.value and "prod-v2" in s.value for s in at.success)
    at.selectbox(key="review_choice").set_value(second).run()
    assert "Not checked yet" in texts(at)
    # an article changed: the help centre no longer backs the second correction, so it is not served again
    gw.store.record_check(second, model="prod-v2", fixed=False, outcome="fallback", backed=False,
                          served="Refunds take 30 days.", expect=["Orders > Return"])  # fmt: skip
    at.run()
    again = dict(zip(at.dataframe[0].value["Question"], at.dataframe[0].value["Served again?"], strict=True))
    assert again == {RETURN_Q: "yes", "Where is my refund?": "no: the help centre no longer backs it"}
    assert any("Retired" in w.value for w in at.warning)


# models ---------------------------------------------------------------------------------------


def _models(live: LiveGateway) -> AppTest:
    return sign_in(live.key("engineer")).switch_page("views/models.py").run()


def test_models_page_shows_registry_and_lineage(live: LiveGateway) -> None:
    at = _models(live)
    _no_traceback(at)
    table = at.dataframe[0].value
    assert list(table["Name"]) == ["fake-base", "fake-adapter", "ungated-adapter"]
    assert list(table["Aliases"]) == ["production", "", ""]
    dot = at.get("graphviz_chart")[0].proto.spec
    assert '"fake-base" -> "fake-adapter"' in dot and '"alias:production" -> "fake-base"' in dot


def test_an_improved_adapter_shows_the_corrections_that_produced_it(live: LiveGateway) -> None:
    gw = live.gateway
    rid = gw.chat("customer", RETURN_Q).json()["id"]
    gw.client.post("/v1/feedback", json={"response_id": rid, "rating": "down"}, headers=gw.headers("customer"))
    gw.client.post(f"/console/review/{rid}", json={"answer": "Print it under Orders > Return."},
                   headers=gw.headers("staff"))  # fmt: skip
    gw.store.record_check(rid, model="fake-adapter", fixed=False, outcome="fallback", served="-", expect=["x"])
    lineage = {"run": "20261207-0900", "corrections": [rid, "resp-erased"], "parent_adapter": "fake-adapter"}
    gw.registry.update_metadata("ungated-adapter", {"improve": lineage})
    at = _models(live)
    _no_traceback(at)
    assert list(at.dataframe[0].value["Corrections"]) == ["", "", "2"]
    dot = at.get("graphviz_chart")[0].proto.spec
    assert '"fake-adapter" -> "ungated-adapter" [label="improved (2 corrections)"]' in dot
    at.selectbox(key="model_detail").select("ungated-adapter").run()
    _no_traceback(at)
    assert "on **2 staff correction(s)**" in texts(at)
    table = at.dataframe[1].value
    assert list(table["Question"]) == [RETURN_Q, "(erased or purged since)"]
    assert list(table["Correction"]) == ["Print it under Orders > Return.", ""]
    assert list(table["Fixed now?"]) == ["not yet", ""]


def test_promote_canary_share_and_rollback(live: LiveGateway) -> None:
    at = _models(live)
    at.selectbox(key="promote_model").select("fake-adapter")
    at.radio(key="promote_alias").set_value("canary")
    button(at, "Promote").click().run()
    _no_traceback(at)
    assert "canary → fake-adapter (was unset)." in texts(at)
    assert live.gateway.registry.aliases()["canary"] == "fake-adapter"
    at.slider(key="canary_share").set_value(25)
    button(at, "Apply share").click().run()
    assert "Canary share set to 25%." in texts(at)
    at.radio(key="rollback_alias").set_value("production")
    button(at, "Roll back").click().run()
    _no_traceback(at)
    assert "has no earlier model to roll back to" in texts(at)  # the gateway's refusal, readable


def test_reports_are_listed_and_plotted(live: LiveGateway) -> None:
    run = Path(live.gateway.store.path).parent / "adapters" / "run1"
    run.mkdir(parents=True)
    curve = [{"step": 10, "eval_loss": 1.9}, {"step": 20, "eval_loss": 1.4}]
    (run / "training_summary.json").write_text(json.dumps({"eval_curve": curve, "best_eval_loss": 1.4}))
    at = _models(live)
    _no_traceback(at)
    assert at.selectbox(key="report_path").value == "adapters/run1/training_summary.json"
    assert len(at.get("vega_lite_chart")) == 1  # the eval-loss curve
    assert ("best_eval_loss", "1.4") in [(m.label, m.value) for m in at.metric]


def test_start_a_job_and_follow_it_to_the_end(live: LiveGateway) -> None:
    at = _models(live)
    at.selectbox(key="job_command").select("train sft")
    at.text_input(key="job_args").input("--help-config")
    at.button(key="job_start").click().run()
    _no_traceback(at)
    deadline = time.monotonic() + 60
    while "succeeded" not in texts(at) and time.monotonic() < deadline:
        time.sleep(0.5)
        at.run()
    assert "**succeeded**" in texts(at)
    assert "learning_rate" in at.code[-1].value


def test_a_streamed_i_dont_know_is_replaced_by_the_handoff_with_the_contacts(live: LiveGateway) -> None:
    from helpline.testing import FakeGenerator

    reply = "I'm sorry, I don't know the answer to that from our help centre."
    live.gateway.backend.generators["fake-base"] = FakeGenerator(reply=reply, name="fake-base")
    at = sign_in(live.key("customer"))
    at.chat_input[0].set_value(RETURN_Q).run()
    _no_traceback(at)
    assert "+1-800-555-0142" in texts(at)  # the model's words did not say how to reach a person; these do
    assert any("handing you over to a person" in w.value for w in at.warning)
    assert not at.expander


def test_a_streamed_answer_the_detector_rejects_never_shows_and_the_handoff_does(live: LiveGateway) -> None:
    from helpline.answering.decision import Verdict

    class Rejects:
        def verify(self, answer, passages):
            return Verdict(grounded=False, score=0.1, reason="hallucination 0.90 (threshold 0.50)")

    live.gateway.client.app.state.chat_service.pipeline.verifier = Rejects()
    at = sign_in(live.key("customer"))
    at.chat_input[0].set_value(RETURN_Q).run()
    _no_traceback(at)
    shown = texts(at)
    assert "answer from fake-base" not in shown  # the unsupported answer never reaches the page
    assert "+1-800-555-0142" in shown  # how to reach a person
    assert any("handing you over to a person" in w.value for w in at.warning)
    assert not at.expander  # no sources for an answer that was withdrawn
    assert live.gateway.store.turns()[0]["abstained"] is True  # in the review queue
    review = sign_in(live.key("staff")).switch_page("views/review.py").run()
    _no_traceback(review)
    assert list(review.dataframe[0].value["Why"]) == ["withdrawn by the hallucination check"]
    shown = texts(review)
    assert "> answer from fake-base" in shown  # the reviewer sees the draft the customer no longer does
    assert any("hallucination 0.90 (threshold 0.50)" in w.value for w in review.warning)


def test_staff_add_a_website_connector_an_admin_an_export_and_staff_sync_it_now(
    live: LiveGateway, tmp_path: Path
) -> None:
    export = tmp_path / "zendesk.json"
    export.write_text(json.dumps({"articles": [
        {"id": 1, "title": "Gift cards", "body": "<p>Gift cards never expire.</p>", "user_segment_id": None},
        {"id": 2, "title": "Vouchers", "body": "<p>One voucher per order.</p>", "user_segment_id": None},
    ]}))  # fmt: skip
    staff = _kb(live)
    assert "No connector yet." in texts(staff)
    staff.text_input(key="connector_name").input("zendesk-en")
    staff.text_input(key="connector_source").input(f"zendesk:{export}")
    button(staff, "Add").click().run()
    _no_traceback(staff)
    assert "an export connector reads the gateway's disk" in texts(staff)  # the gateway's 403, readable
    staff.text_input(key="connector_name").input("public-help")
    staff.text_input(key="connector_source").input("https://93.184.216.34/help/")
    button(staff, "Add").click().run()
    assert "Connector public-help added: it syncs every 1d." in texts(staff)

    admin = sign_in(live.key("admin")).switch_page("views/knowledge_base.py").run()
    admin.text_input(key="connector_name").input("zendesk-en")
    admin.text_input(key="connector_source").input(f"zendesk:{export}")
    admin.text_input(key="connector_every").input("1 week")
    button(admin, "Add").click().run()
    assert "'1 week' is not a duration" in texts(admin)  # the gateway's error, readable
    admin.text_input(key="connector_every").input("6h")
    button(admin, "Add").click().run()
    _no_traceback(admin)
    assert "Connector zendesk-en added: it syncs every 6h." in texts(admin)

    staff = _kb(live)
    table = staff.dataframe[-1].value
    assert list(table["Connector"]) == ["public-help", "zendesk-en"] and list(table["Every"]) == ["24h", "6h"]
    assert list(table["Status"]) == ["not run yet", "not run yet"]
    staff.selectbox(key="connector_pick").select("zendesk-en")
    staff.button(key="connector_sync").click().run()
    _no_traceback(staff)
    assert "Synced zendesk-en: 2 added, 0 updated, 0 deleted, 0 unchanged." in texts(staff)
    assert "zendesk-1" in list(staff.dataframe[0].value["Document"])  # now in the knowledge base
    assert list(staff.dataframe[-1].value["Status"]) == ["not run yet", "ok"]

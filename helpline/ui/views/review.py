"""Review (support staff): answers rated down or handed over, with the passages the assistant saw (and
the draft the hallucination check withdrew, if it did); the correct answer a reviewer writes is stored
as a reviewed training example."""

from __future__ import annotations

from typing import Any

import streamlit as st

from helpline.ui import session
from helpline.ui.client import GatewayClient

STATUS = {"open": "To review", "reviewed": "Reviewed", "all": "All"}


def _why(item: dict[str, Any]) -> str:
    reasons = []
    if item.get("rating") == "down":
        reasons.append("rated down")
    if item.get("withdrawn"):
        quoted = (item.get("verification") or {}).get("outcome") == "fallback"
        reasons.append("help centre quoted instead" if quoted else "withdrawn by the hallucination check")
    elif item["abstained"]:
        reasons.append("handed over")
    verification = item.get("verification") or {}
    if verification.get("outcome") == "corrected":  # its reason names the correction served
        reasons.append(f"served again: {verification.get('reason') or 'a staff correction'}")
    return ", ".join(reasons) or "corrected"


def fixed_now(item: dict[str, Any]) -> str:
    """Whether the production model now answers the correction right by itself, per its latest check (``helpline eval
    corrections``; customers asking alike are served the correction meanwhile, as a staff answer)."""
    check = item.get("check")
    if item.get("correction") is None:
        return ""
    if check is None:
        return "not checked yet"
    if check["stale"]:
        return "corrected again since the check"
    return {True: "yes", False: "not yet", None: "not checkable"}[check["fixed"]]


def served_again(item: dict[str, Any]) -> str:
    """Whether the correction is still served to questions asked alike (a staff answer), per its latest check: only
    while the help centre backs it."""
    check = item.get("check")
    if item.get("correction") is None or check is None or check.get("backed") is None:
        return ""
    return "yes" if check["backed"] else "no: the help centre no longer backs it"


def _check(item: dict[str, Any]) -> None:
    """The latest check of the correction: what production served when asked again, and whether it holds."""
    check = item.get("check")
    if item.get("correction") is None:
        return
    if check is None:
        st.caption("Not checked yet: `helpline eval corrections` (or its job on the Models page) asks the production "
                   "model. Meanwhile customers who ask alike are served this correction.")
        return
    when = f"{session.when(check['at'])} with `{check['model']}`"
    if check["fixed"] is None:
        st.caption(f"Not checkable ({when}): the correction states no fact the question or the old answer did not.")
        return
    if check.get("backed") is False:
        st.warning("Retired: the articles retrieved for this question no longer back this correction (one changed, or "
                   "it states a figure they do not), so it is not served again. Correct it anew or update the article.",
                   icon=":material/history:")  # fmt: skip
    looked_for = ", ".join(f"“{p}”" for p in check["expect"])
    text = f"The model answers by itself ({check['outcome']}, {when}; looked for {looked_for}):"
    if check["stale"]:
        st.info(f"Corrected again since this check. {text}", icon=":material/schedule:")
    elif check["fixed"]:
        st.success(f"Fixed now. {text}", icon=":material/task_alt:")
    else:
        meanwhile = "" if check.get("backed") is False else " (customers who ask alike are served it meanwhile)"
        st.warning(f"Not fixed yet{meanwhile}. {text}", icon=":material/pending:")
    st.markdown("\n".join(f"> {line}" for line in check["served"].splitlines()))


def _detail(client: GatewayClient, item: dict[str, Any]) -> None:
    st.subheader("Conversation")
    for m in item["messages"]:
        if m["role"] != "system":
            st.chat_message(m["role"]).markdown(m["content"])
    with st.chat_message("assistant"):
        st.markdown(item["answer"] or "_(no answer: the request failed)_")
        note = f"**{_why(item).capitalize()}** · model `{item['model']}` ({item['served_model']})"
        if item.get("comment"):
            note += f" · customer's comment: “{item['comment']}”"
        st.caption(note)
    if item.get("withdrawn"):
        verification = item.get("verification") or {}
        reason = verification.get("reason") or "not supported by the passages"
        instead = (
            "the help centre's own sentences (above)" if verification.get("outcome") == "fallback" else "a person"
        )
        st.warning(
            f"This draft was not served ({reason}), so the customer was offered {instead} instead. Compare it "
            "with the passages below.",
            icon=":material/block:",
        )
        st.markdown("\n".join(f"> {line}" for line in item["withdrawn"].splitlines()))
    st.subheader(f"Passages the assistant saw ({len(item['passages'])})")
    if not item["passages"]:
        st.info("None: nothing in the knowledge base was relevant enough, so the assistant handed over.")
    for n, p in enumerate(item["passages"], 1):
        with st.expander(f"[{n}] {p['title']} · score {p['score']:.3f}"):
            st.markdown(p.get("text") or "_(text not recorded)_")
            st.caption(f"`{p['chunk_id']}`")
    st.subheader("Correct answer")
    _check(item)
    with st.form(f"review-{item['response_id']}"):
        answer = st.text_area(
            "What the assistant should have answered",
            value=item.get("correction") or "",
            height=180,
            key=f"answer-{item['response_id']}",
        )
        st.caption("Saved as a reviewed example for the next fine-tuning run (`reviewed:` source of data prepare).")
        if st.form_submit_button("Save reviewed answer", type="primary", icon=":material/check:"):
            if not answer.strip():
                st.warning("Write the correct answer first.")
            elif (saved := session.attempt(client.save_review, item["response_id"], answer.strip())) is not None:
                session.flash(f"Saved. {saved['examples']} reviewed example(s) are ready for training.")
                st.rerun()


def render() -> None:
    st.title("Review")
    session.show_flash()
    client = session.client()
    status = st.segmented_control("Show", list(STATUS), format_func=STATUS.get, default="open", key="review_status")
    items = session.attempt(client.review_queue, status or "open")
    if items is None:
        return
    if not items:
        st.info("Nothing here: no answer was rated down or handed over." if status == "open" else "Nothing here yet.")
        return
    rows = [
        {
            "When": session.when(i["at"]),
            "Question": i["question"],
            "Why": _why(i),
            "Comment": i.get("comment") or "",
            "Reviewed": i["reviewed"],
            "Fixed now?": fixed_now(i),
            "Served again?": served_again(i),
        }
        for i in items
    ]
    st.dataframe(rows, hide_index=True, width="stretch")
    by_id = {i["response_id"]: i for i in items}
    chosen = st.selectbox(
        "Conversation to review",
        list(by_id),
        key="review_choice",
        format_func=lambda r: f"{session.when(by_id[r]['at'])} · {by_id[r]['question'][:90]}",
    )
    if chosen:
        _detail(client, by_id[chosen])


render()

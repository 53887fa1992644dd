"""Chat (customers): ask, read the answer as it streams in, open its sources, say whether it helped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import streamlit as st

from helpline.platform.errors import HelplineError
from helpline.platform.schemas import ChatMessage
from helpline.ui import session

HANDOFF_NOTE = (
    "The assistant could not answer this from our help articles, so it is handing you over to a person: "
    "use the contact details above and a member of our support team will help you."
)
QUOTED_NOTE = "Quoted from our help articles: the assistant's own wording could not be confirmed in them."
STAFF_NOTE = "Our support team's answer to this question, checked against the help articles cited."
_STATE = "hl_chat"


def _state() -> dict[str, Any]:
    return st.session_state.setdefault(_STATE, {"conversation_id": None, "turns": []})


def _history(turns: list[dict[str, Any]]) -> list[ChatMessage]:
    """Earlier answered turns, sent along so follow-up questions keep their context."""
    messages: list[ChatMessage] = []
    for t in turns:
        if t["answer"] and not t["error"]:
            messages += [
                ChatMessage(role="user", content=t["question"]),
                ChatMessage(role="assistant", content=t["answer"]),
            ]
    return messages


def _sources(sources: list[dict[str, Any]]) -> None:
    st.caption(f"Sources ({len(sources)}): open one to read the passage the answer is based on")
    seen: set[str] = set()
    for n, c in enumerate(sources, 1):
        label = f"[{n}] {c['title']}" + (" (another passage)" if c["title"] in seen else "")
        seen.add(c["title"])
        with st.expander(label, icon=":material/article:"):
            st.markdown(c.get("text") or "_The passage text is not available._")
            st.caption(f"From the help article `{c['doc_id']}`")


def _rate(index: int) -> None:
    """Send thumbs up/down as soon as it is clicked (a Streamlit callback: errors are kept for display)."""
    turn = _state()["turns"][index]
    value = st.session_state.get(f"feedback-{turn['response_id']}")
    if value is None:
        return
    turn["rating"] = "up" if value == 1 else "down"
    try:
        session.client().feedback(turn["response_id"], turn["rating"])
        turn["feedback_error"] = None
    except HelplineError as e:
        turn["feedback_error"] = e


def _feedback(index: int, turn: dict[str, Any]) -> None:
    rid = turn["response_id"]
    st.feedback("thumbs", key=f"feedback-{rid}", on_change=_rate, args=(index,))
    if turn.get("feedback_error"):
        session.show_error(turn["feedback_error"])
    elif turn.get("comment_sent"):
        st.caption("Thank you for your feedback.")
    elif turn.get("rating"):
        st.caption("Thank you! Anything to add? (optional)")
        with st.form(f"comment-{rid}", border=False, enter_to_submit=True):
            comment = st.text_input(
                "Comment",
                key=f"comment-text-{rid}",
                label_visibility="collapsed",
                placeholder="What was missing or wrong?",
            )
            sent = st.form_submit_button("Send comment") and comment.strip()
            if sent and session.attempt(session.client().feedback, rid, turn["rating"], comment.strip()):
                turn["comment_sent"] = True
                st.rerun()


def _show_turn(index: int, turn: dict[str, Any]) -> None:
    with st.chat_message("user"):
        st.markdown(turn["question"])
    with st.chat_message("assistant"):
        if turn["answer"]:
            st.markdown(turn["answer"])
        if turn["error"]:
            session.show_error(turn["error"])
        if turn["abstained"]:
            st.warning(HANDOFF_NOTE, icon=":material/support_agent:")
        elif turn.get("outcome") == "fallback":
            st.caption(QUOTED_NOTE)
        elif turn.get("outcome") == "corrected":
            st.caption(STAFF_NOTE)
        if not turn["abstained"] and turn["sources"]:
            _sources(turn["sources"])
        if turn["response_id"] and not turn["error"]:
            _feedback(index, turn)


def _ask(question: str) -> None:
    """Stream the answer into the page, then keep it (with its sources) in the conversation."""
    state = _state()
    turn: dict[str, Any] = {
        "question": question,
        "answer": "",
        "sources": [],
        "abstained": False,
        "outcome": "answered",
        "response_id": "",
        "error": None,
    }
    parts: list[str] = []

    def collect(stream: Iterator[str]) -> Iterator[str]:
        for delta in stream:
            parts.append(delta)
            yield delta

    with st.chat_message("user"):
        st.markdown(question)
    with st.chat_message("assistant"):
        client = session.client()
        messages = [*_history(state["turns"]), ChatMessage(role="user", content=question)]
        try:
            stream = client.chat_stream(messages, conversation_id=state["conversation_id"])
            st.write_stream(collect(iter(stream)))
            # The gateway decides an answer before it sends it: what streamed in is what the customer keeps.
            turn.update(response_id=stream.response_id, abstained=stream.abstained, outcome=stream.outcome)
            state["conversation_id"] = stream.conversation_id or state["conversation_id"]
            if stream.citations:
                # The stream names the passages; their text is fetched once the answer is complete.
                full = session.attempt(client.passages, stream.response_id) or stream.citations
                turn["sources"] = [c.model_dump() for c in full]
        except HelplineError as e:
            turn["error"] = e
        turn["answer"] = "".join(parts)
    state["turns"].append(turn)
    st.rerun()


def render() -> None:
    state = _state()
    title, button = st.columns([4, 1], vertical_alignment="bottom")
    title.title("Customer support")
    if button.button("New conversation", icon=":material/add_comment:", key="new_conversation"):
        st.session_state[_STATE] = {"conversation_id": None, "turns": []}
        st.rerun()
    if not state["turns"]:
        st.caption("Ask about orders, delivery, returns, payments or your account. Answers cite our help articles.")
    for i, turn in enumerate(state["turns"]):
        _show_turn(i, turn)
    question = st.chat_input("Ask a question")
    if question and question.strip():
        _ask(question.strip())


render()

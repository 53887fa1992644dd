"""The helpline web app (`streamlit run helpline/ui/app.py`): sign in with an API key, then the
pages that key's role may use. The gateway checks the role again on every call.
"""

from __future__ import annotations

import streamlit as st
from streamlit.navigation.page import StreamlitPage

from helpline.ui import session
from helpline.ui.client import Principal

st.set_page_config(page_title="Helpline", page_icon=":material/support_agent:", layout="wide")


def sign_in_page() -> None:
    st.title("Helpline")
    st.write("Sign in with the API key you were given to chat with support, or to manage the assistant.")
    gateway = session.client()
    if not gateway.health():
        st.error(
            f"**The helpline service is not reachable** at {gateway.base_url}. It may still be starting, "
            "or it is stopped. Try again in a minute.",
            icon=":material/cloud_off:",
        )
        st.caption("Operators: start it with `helpline run`.")
    with st.form("sign-in", border=True):
        key = st.text_input("API key", type="password", placeholder="hl-…", key="sign_in_key")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        if not key.strip():
            st.warning("Enter your API key first.")
            return
        if session.attempt(session.sign_in, key) is not None:
            st.rerun()


def sidebar(who: Principal) -> None:
    with st.sidebar:
        st.caption(f"Signed in as **{who.role}**" + (f" ({who.name})" if who.name else ""))
        if who.may("staff"):
            st.caption(f"Gateway: {session.gateway_url()}")
        st.button("Sign out", icon=":material/logout:", key="sign_out", on_click=session.sign_out)


def navigation(who: Principal | None) -> StreamlitPage:
    """Pages by role; a higher role also gets every lower role's pages."""
    if who is None:
        return st.navigation([st.Page(sign_in_page, title="Sign in", icon=":material/login:")], position="hidden")
    chat = st.Page("views/chat.py", title="Chat", icon=":material/chat:", url_path="chat", default=not who.may("staff"))
    sections = {"Support": [chat]}
    if who.may("staff"):
        sections["Support team"] = [
            st.Page(
                "views/knowledge_base.py",
                title="Knowledge base",
                icon=":material/library_books:",
                url_path="knowledge-base",
            ),
            st.Page(
                "views/review.py",
                title="Review",
                icon=":material/rate_review:",
                url_path="review",
                default=not who.may("engineer"),
            ),
        ]
    if who.may("engineer"):
        sections["ML engineering"] = [
            st.Page(
                "views/models.py", title="Models", icon=":material/model_training:", url_path="models", default=True
            ),
        ]
    sidebar(who)
    return st.navigation(sections)


navigation(session.principal()).run()

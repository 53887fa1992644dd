"""One browser session: the gateway's address, the signed-in key, and how errors are shown.

Every gateway call from a page goes through :func:`attempt`, so a refusal or an outage becomes an
``st.error`` with the gateway's message and what to do next, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from helpline.platform.errors import HelplineError
from helpline.platform.settings import load_settings
from helpline.ui.client import GatewayClient, GatewayError, GatewayUnavailable, Principal

T = TypeVar("T")
DEFAULT_GATEWAY = "http://127.0.0.1:8000"
_KEY, _WHO, _CLIENT, _FLASH = "hl_api_key", "hl_principal", "hl_client", "hl_flash"


def gateway_url() -> str:
    """``HELPLINE_UI__GATEWAY_URL`` (what `helpline run` sets), else the settings' ``ui.gateway_url``."""
    explicit = os.environ.get("HELPLINE_UI__GATEWAY_URL")
    if explicit:
        return explicit
    try:
        return load_settings().ui.gateway_url
    except HelplineError:
        return DEFAULT_GATEWAY


def client() -> GatewayClient:
    """This session's client, carrying the signed-in key (one per session, reused across reruns)."""
    wanted = (gateway_url(), st.session_state.get(_KEY))
    cached = st.session_state.get(_CLIENT)
    if cached is None or cached[0] != wanted:
        cached = (wanted, GatewayClient(wanted[0], wanted[1]))
        st.session_state[_CLIENT] = cached
    return cached[1]


def principal() -> Principal | None:
    return st.session_state.get(_WHO)


def sign_in(api_key: str) -> Principal:
    """Ask the gateway who this key belongs to; keep the key only if it answers."""
    who = GatewayClient(gateway_url(), api_key.strip()).whoami()
    st.session_state[_KEY] = api_key.strip()
    st.session_state[_WHO] = who
    return who


def sign_out() -> None:
    for key in list(st.session_state):
        del st.session_state[key]


def show_error(error: GatewayError | HelplineError) -> None:
    """The gateway's message and the next step, as a Streamlit alert."""
    if isinstance(error, GatewayUnavailable):
        st.error(f"**The helpline service is not reachable.** {error.message}", icon=":material/cloud_off:")
    elif getattr(error, "http_status", 0) in (401, 403):
        st.error(f"**Not allowed.** {error.message}", icon=":material/lock:")
    else:
        st.error(error.message, icon=":material/error:")
    if error.hint:
        st.caption(f"What to do: {error.hint}")


def attempt(call: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Run a gateway call; on failure show the error and return None."""
    try:
        return call(*args, **kwargs)
    except HelplineError as e:
        show_error(e)
        return None


def flash(message: str, kind: str = "success") -> None:
    """Show ``message`` at the top of the page after the next rerun (for actions that rerun)."""
    st.session_state[_FLASH] = (kind, message)


def show_flash() -> None:
    kind, message = st.session_state.pop(_FLASH, (None, None))
    if message:
        getattr(st, kind)(message)


def when(timestamp: float | None) -> str:
    """A timestamp as local date and time ('—' when unknown)."""
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M") if timestamp else "—"

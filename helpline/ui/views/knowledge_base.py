"""Knowledge base (support staff): documents, uploads, re-sync, search preview and version history."""

from __future__ import annotations

from typing import Any

import streamlit as st

from helpline.ui import session
from helpline.ui.client import GatewayClient, GatewayError

UPLOAD_TYPES = ["md", "markdown", "txt", "html", "htm", "pdf", "docx"]
#: Nothing is preselected: an upload states who may see it (the gateway refuses a file that does not say).
ACCESS_CHOICES = {
    "public: customers may see it": "public",
    "internal: staff only": "internal",
    "as each file says (its front matter; a file that does not say is refused)": None,
}


def _documents(client: GatewayClient) -> None:
    docs = session.attempt(client.kb_documents)
    if docs is None:
        return
    versions = [d["version"] for d in docs if d["version"]]
    a, b, c = st.columns(3)
    a.metric("Documents", len(docs))
    b.metric("Passages (chunks)", sum(d["chunks"] for d in docs))
    c.metric("Latest version", f"v{max(versions)}" if versions else "—")
    rows = [
        {
            "Document": d["doc_id"],
            "Title": d["title"],
            "Access": d["access"],
            "Chunks": d["chunks"],
            "Version": f"v{d['version']}" if d["version"] else "—",
            "Last update": session.when(d["updated_at"]),
            "State": d["state"],
            "Source": d["source"],
        }
        for d in docs
    ]
    st.dataframe(rows, hide_index=True, width="stretch")
    left, right = st.columns(2)
    with left.form("delete-document"):
        st.markdown("**Delete a document**")
        doc_id = st.selectbox("Document", [d["doc_id"] for d in docs], index=None, placeholder="Choose one")
        sure = st.checkbox("The assistant must stop using it")
        if st.form_submit_button("Delete", icon=":material/delete:"):
            if doc_id is None or not sure:
                st.warning("Choose a document and tick the box to confirm.")
            elif (result := session.attempt(client.delete_document, doc_id)) is not None:
                session.flash(
                    f"Deleted {doc_id}."
                    + (f" Knowledge base now at v{result['version']}." if result.get("version") else "")
                )
                st.rerun()
    with right.container(border=True):
        st.markdown("**Re-sync from source files**")
        st.caption("Re-reads every document that came from a file on the server and re-indexes the changed ones.")
        if st.button("Re-sync", icon=":material/sync:", key="resync"):
            with st.spinner("Re-syncing…"):
                result = session.attempt(client.resync)
            if result is not None:
                missing = (
                    f"; source file gone: {', '.join(result['source_missing'])}" if result["source_missing"] else ""
                )
                session.flash(
                    f"Checked {result['checked']} documents: {len(result['updated'])} updated, "
                    f"{result['unchanged']} unchanged{missing}."
                )
                st.rerun()


def _upload(client: GatewayClient) -> None:
    files = st.file_uploader(
        "Articles to add or update",
        type=UPLOAD_TYPES,
        accept_multiple_files=True,
        key="kb_files",
        help="A document's id is its file name without the suffix.",
    )
    access = st.radio("Who may see them", list(ACCESS_CHOICES), index=None, key="kb_access")
    if not st.button("Upload and index", type="primary", disabled=not files or access is None, key="kb_upload"):
        return
    bar = st.progress(0.0, text="Starting…")
    results: list[dict[str, Any]] = []
    for i, f in enumerate(files or []):
        bar.progress(i / len(files), text=f"Indexing {f.name} ({i + 1} of {len(files)})")
        try:
            r = client.upload_file(f.name, f.getvalue(), access=ACCESS_CHOICES[access or ""])
            outcome = "added" if r["added"] else "updated" if r["updated"] else "unchanged"
            results.append(
                {
                    "File": f.name,
                    "Document": r["doc_id"],
                    "Result": outcome,
                    "Passages embedded": r["chunks_embedded"],
                    "Version": f"v{r['version']}" if r.get("version") else "—",
                }
            )
        except GatewayError as e:
            results.append(
                {"File": f.name, "Document": "", "Result": f"failed: {e}", "Passages embedded": 0, "Version": "—"}
            )
    bar.progress(1.0, text=f"Done: {len(results)} file(s)")
    failed = sum(r["Result"].startswith("failed") for r in results)
    (st.warning if failed else st.success)(f"{len(results) - failed} indexed, {failed} failed.")
    st.dataframe(results, hide_index=True, width="stretch")


def _search(client: GatewayClient) -> None:
    with st.form("kb-search"):
        query = st.text_input("A customer's question", key="kb_query")
        role = st.radio(
            "Search as",
            ["customer", "staff"],
            horizontal=True,
            key="kb_search_role",
            help="Customers see public documents only; staff also see internal ones.",
        )
        k = st.slider("Passages", 1, 10, 4, key="kb_k")
        submitted = st.form_submit_button("Preview", icon=":material/search:")
    if submitted and query.strip():
        st.session_state["kb_search_result"] = session.attempt(client.kb_search, query.strip(), k=k, role=role)
    result = st.session_state.get("kb_search_result")
    if not result:
        return
    if result["would_abstain"]:
        st.warning("For this question the assistant would hand over to a person: nothing relevant enough was found.")
    else:
        st.success(f"The assistant would answer from these {len(result['results'])} passages.")
    for n, hit in enumerate(result["results"], 1):
        chunk = hit["chunk"]
        label = f"{n}. {chunk['title']}" + (f" › {chunk['section']}" if chunk["section"] else "")
        with st.expander(f"{label} · score {hit['score']:.3f}", expanded=n == 1):
            st.markdown(chunk["text"])
            st.caption(f"`{chunk['chunk_id']}` · {chunk['access']}")


def _history(client: GatewayClient) -> None:
    versions = session.attempt(client.kb_versions)
    if versions is None:
        return
    if not versions:
        st.info("No knowledge-base version has been recorded yet.")
        return
    rows = [
        {
            "Version": f"v{v['id']}",
            "When": session.when(v["created_at"]),
            "Added": v["added"],
            "Updated": v["updated"],
            "Deleted": v["deleted"],
            "Note": v["note"],
            "Fingerprint": v["content_hash"],
        }
        for v in versions
    ]
    st.dataframe(rows, hide_index=True, width="stretch")


def _connectors(client: GatewayClient) -> None:
    st.caption(
        "Help-centre exports and websites the gateway syncs on a schedule: only changed articles are embedded "
        "again, and articles gone from the source are removed."
    )
    connectors = session.attempt(client.connectors)
    if connectors is None:
        return
    if connectors:
        rows = [
            {
                "Connector": c["name"],
                "Source": c["source"],
                "Every": _every(c["every_s"]),
                "Last sync": session.when(c["last_at"]),
                "Status": c["last_status"] or "not run yet",
                "Changes": _changes(c["last_summary"]),
            }
            for c in connectors
        ]
        st.dataframe(rows, hide_index=True, width="stretch")
        name = st.selectbox("Connector", [c["name"] for c in connectors], key="connector_pick")
        if st.button("Sync now", icon=":material/sync:", key="connector_sync") and name:
            with st.spinner(f"Syncing {name}…"):
                result = session.attempt(client.sync_connector, name)
            if result is not None:
                session.flash(f"Synced {name}: {_changes(result)}.")
                st.rerun()
    else:
        st.info("No connector yet.")
    with st.form("connector-add"):
        st.markdown("**Add a connector** (or change one: same name)")
        st.caption(
            "Staff connect public websites. An export on the server, or a site on a private address, is added "
            "by an admin: it reads the server's disk or its network."
        )
        name = st.text_input("Name", placeholder="zendesk-en", key="connector_name")
        source = st.text_input(
            "Source",
            placeholder="https://help.example.com/sitemap.xml  or  zendesk:/exports/articles.json",
            key="connector_source",
            help="A website (its start page or sitemap), or an export on the gateway's machine: zendesk:PATH, "
            "intercom:PATH, confluence:DIR or notion:DIR.",
        )
        every = st.text_input("Sync every", value="1d", key="connector_every", help="6h, 1d, 1h30m (at least 5m).")
        if st.form_submit_button("Add", icon=":material/add_link:"):
            if not name.strip() or not source.strip():
                st.warning("Give the connector a name and a source.")
            elif session.attempt(client.add_connector, name.strip(), source.strip(), every.strip()) is not None:
                session.flash(f"Connector {name.strip()} added: it syncs every {every.strip()}.")
                st.rerun()
    if connectors and st.button("Remove the selected connector", key="connector_remove"):
        picked = st.session_state.get("connector_pick")
        if picked and session.attempt(client.remove_connector, picked) is not None:
            session.flash(f"Removed {picked}; the documents it brought stay until deleted.")
            st.rerun()


def _every(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m" if rest else f"{hours}h"


def _changes(summary: dict[str, Any]) -> str:
    if not summary:
        return "—"
    parts = [f"{len(summary.get(k) or [])} {k}" for k in ("added", "updated", "deleted")]
    return ", ".join(parts) + f", {summary.get('unchanged', 0)} unchanged"


def render() -> None:
    st.title("Knowledge base")
    session.show_flash()
    client = session.client()
    docs, upload, search, history, connectors = st.tabs(
        ["Documents", "Upload", "Search preview", "Version history", "Connectors"]
    )
    with docs:
        _documents(client)
    with upload:
        _upload(client)
    with search:
        _search(client)
    with history:
        _history(client)
    with connectors:
        _connectors(client)


render()

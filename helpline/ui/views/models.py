"""Models (ML engineers): the registry with lineage, deployment (promote, roll back, canary share),
evaluation reports with their plots, and training/evaluation jobs with progress and logs."""

from __future__ import annotations

import base64
import json
import shlex
from typing import Any

import streamlit as st

from helpline.ui import session
from helpline.ui.client import GatewayClient

CHAT_KINDS = ("base", "adapter")


def _lineage_dot(models: list[dict[str, Any]], aliases: dict[str, str]) -> str:
    """Base models → adapters trained on them; aliases point at what they serve."""
    lines = ["digraph lineage {", "rankdir=LR;", 'node [fontname="sans-serif", fontsize=11];']
    for m in models:
        shape = {"base": "box", "adapter": "ellipse"}.get(m["kind"], "component")
        lines.append(f'"{m["name"]}" [shape={shape}, tooltip="{m["kind"]}"];')
        if m.get("base_model"):
            lines.append(f'"{m["base_model"]}" -> "{m["name"]}" [label="fine-tuned"];')
        improved = (m.get("metadata") or {}).get("improve") or {}
        if improved.get("parent_adapter"):
            n = len(improved.get("corrections") or [])
            lines.append(f'"{improved["parent_adapter"]}" -> "{m["name"]}" [label="improved ({n} corrections)"];')
    for alias, target in aliases.items():
        lines.append(f'"alias:{alias}" [label="{alias}", shape=note, style=filled, fillcolor="#e8f0fe"];')
        lines.append(f'"alias:{alias}" -> "{target}" [style=dashed];')
    return "\n".join([*lines, "}"])


def _lineage_fields(meta: dict[str, Any]) -> dict[str, str]:
    dataset = meta.get("dataset")
    gate = meta.get("gate")
    return {
        "Dataset": (dataset.get("hash") or dataset.get("name") or "")
        if isinstance(dataset, dict)
        else str(dataset or ""),
        "KB version": str(meta.get("kb_version") or ""),
        "Gate": ("passed" if gate.get("passed") else "failed") if isinstance(gate, dict) else "",
        "Corrections": str(len(meta["improve"].get("corrections") or [])) if meta.get("improve") else "",
    }


def _corrections(client: GatewayClient, improved: dict[str, Any]) -> None:
    """Which staff corrections produced this adapter (`helpline improve`'s lineage), and whether production now
    answers each right (their latest check, as on the Review page)."""
    ids = improved.get("corrections") or []
    st.markdown(
        f"Trained by `helpline improve` run `{improved.get('run')}` on **{len(ids)} staff correction(s)**, "
        f"continuing `{improved.get('parent_adapter') or improved.get('production_at_start') or 'the base model'}`."
    )
    if not ids:
        return
    items = session.attempt(client.review_queue, "all") or []
    by_id = {i["response_id"]: i for i in items}
    rows = []
    for rid in ids:
        item = by_id.get(rid)
        check = (item or {}).get("check") or {}
        rows.append({
            "Question": item["question"] if item else "(erased or purged since)",
            "Correction": (item or {}).get("correction") or "",
            "Fixed now?": {True: "yes", False: "not yet", None: "not checkable"}[check["fixed"]] if check else "",
            "Response": rid,
        })  # fmt: skip
    st.dataframe(rows, hide_index=True, width="stretch")


def _registry(client: GatewayClient, data: dict[str, Any]) -> None:
    models, aliases = data["models"], data["aliases"]
    rows = [
        {
            "Name": m["name"],
            "Kind": m["kind"],
            "Base": m.get("base_model") or "",
            "Aliases": ", ".join(a for a, t in aliases.items() if t == m["name"]),
            "Registered": session.when(m["created_at"]),
            **_lineage_fields(m.get("metadata") or {}),
        }
        for m in models
    ]
    st.dataframe(rows, hide_index=True, width="stretch")
    st.graphviz_chart(_lineage_dot(models, aliases))
    name = st.selectbox("Lineage and metadata of", [m["name"] for m in models], key="model_detail")
    chosen = next((m for m in models if m["name"] == name), None)
    if chosen:
        st.caption(f"Path: `{chosen['path']}`")
        if (chosen.get("metadata") or {}).get("improve"):
            _corrections(client, chosen["metadata"]["improve"])
        st.json(chosen.get("metadata") or {}, expanded=2)


def _deploy(client: GatewayClient, data: dict[str, Any]) -> None:
    names = [m["name"] for m in data["models"] if m["kind"] in CHAT_KINDS]
    aliases = data["aliases"]
    st.markdown(" · ".join(f"**{a}** → `{t}`" for a, t in aliases.items()) or "No alias is set.")
    left, right = st.columns(2)
    with left.form("promote"):
        st.markdown("**Promote**: load the model into the engine, then switch the alias")
        name = st.selectbox("Model", names, key="promote_model")
        alias = st.radio("Alias", ["production", "canary"], horizontal=True, key="promote_alias")
        if st.form_submit_button("Promote", type="primary", icon=":material/rocket_launch:"):
            with st.spinner(f"Loading {name} and switching {alias}…"):
                change = session.attempt(client.promote, name, alias)
            if change is not None:
                session.flash(f"{alias} → {change['model_name']} (was {change['previous'] or 'unset'}).")
                st.rerun()
    with right.form("rollback"):
        st.markdown("**Roll back**: point the alias at its previous model")
        alias = st.radio("Alias", ["production", "canary"], horizontal=True, key="rollback_alias")
        if st.form_submit_button("Roll back", icon=":material/undo:"):
            change = session.attempt(client.rollback, alias)
            if change is not None:
                session.flash(f"{alias} rolled back to {change['model_name']} (was {change['previous']}).")
                st.rerun()
    with st.form("canary"):
        share = st.slider(
            "Canary share: % of new conversations answered by the canary",
            0,
            100,
            int(data.get("canary_share") or 0),
            key="canary_share",
        )
        if "canary" not in aliases:
            st.caption("No canary alias is set yet: promote a model to `canary` first, or the share has no effect.")
        if st.form_submit_button("Apply share") and session.attempt(client.set_canary, float(share)) is not None:
            session.flash(f"Canary share set to {share}%.")
            st.rerun()
    history = session.attempt(client.alias_history)
    if history:
        rows = [
            {
                "When": session.when(c["at"]),
                "Alias": c["alias"],
                "Now": c["model_name"],
                "Before": c["previous"] or "",
                "By": c["actor"],
            }
            for changes in history.values()
            for c in changes
        ]
        st.markdown("**Alias history**")
        st.dataframe(sorted(rows, key=lambda r: r["When"], reverse=True), hide_index=True, width="stretch")


def _numbers(data: Any, prefix: str = "") -> dict[str, float]:
    """Numeric fields (two levels deep) of a JSON report, shown as headline figures."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            if isinstance(v, bool):
                continue
            if isinstance(v, int | float):
                out[prefix + str(k)] = float(v)
            elif isinstance(v, dict) and not prefix:
                out.update(_numbers(v, f"{k}."))
    return out


def _show_report(path: str, content_type: str, body: bytes) -> None:
    if content_type.startswith("text/html"):
        # A data: URL gives the report its own origin: it cannot reach the app's page.
        st.iframe("data:text/html;charset=utf-8;base64," + base64.b64encode(body).decode(), height=720)
    elif content_type.startswith("image/"):
        st.image(body)
    elif path.endswith(".jsonl"):
        rows = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        curves = [r for r in rows if "step" in r and any(k in r for k in ("loss", "eval_loss"))]
        if curves:
            st.line_chart(curves, x="step", y=[k for k in ("loss", "eval_loss") if any(k in r for r in curves)])
        st.dataframe(rows[-200:], hide_index=True)
    elif content_type.startswith("application/json"):
        data = json.loads(body)
        if isinstance(data, dict) and data.get("eval_curve"):
            st.line_chart(data["eval_curve"], x="step", y="eval_loss")
        numbers = list(_numbers(data).items())[:8]
        for column, (name, value) in zip(st.columns(4) * 2, numbers):
            column.metric(name, f"{value:.4g}")
        st.json(data, expanded=1)
    else:
        st.markdown(body.decode(errors="replace"))


def _reports(client: GatewayClient) -> None:
    reports = session.attempt(client.reports)
    if reports is None:
        return
    if not reports:
        st.info("No reports yet: run an evaluation (`eval gate`, `eval regression`, ...) or a training job.")
        return
    path = st.selectbox(
        "Report",
        [r["path"] for r in reports],
        key="report_path",
        format_func=lambda p: f"{p} ({session.when(next(r['modified'] for r in reports if r['path'] == p))})",
    )
    fetched = session.attempt(client.report_file, path)
    if fetched is not None:
        content_type, body = fetched
        st.download_button("Download", body, file_name=path.rsplit("/", 1)[-1], icon=":material/download:")
        _show_report(path, content_type, body)


def _follow(client: GatewayClient, job_id: str) -> None:
    job = session.attempt(client.job, job_id, tail=300)
    if job is None:
        return
    status = job["status"]
    icon = {
        "queued": ":blue[:material/schedule:]",
        "running": ":blue[:material/progress_activity:]",
        "succeeded": ":green[:material/check_circle:]",
        "failed": ":red[:material/error:]",
    }.get(status, ":gray[:material/help:]")
    st.markdown(
        f"{icon} **{status}** · `helpline {job['command']} {shlex.join(job['args'])}` · started "
        f"{session.when(job['started_at'])}"
        + (f" · exit code {job['returncode']}" if job["returncode"] is not None else "")
    )
    st.progress(job["progress"] or 0.0, text=f"{round((job['progress'] or 0) * 100)}%" if job["progress"] else None)
    st.code(job["log"] or "(no output yet)", language=None, height=360)
    if status in ("queued", "running"):
        if st.button("Cancel job", icon=":material/stop:", key=f"cancel-{job_id}"):
            session.attempt(client.cancel_job, job_id)
            st.rerun()
    elif st.session_state.get("hl_job_running") == job_id:
        st.session_state.pop("hl_job_running")
        st.rerun()  # the job just ended: refresh the whole page (and stop polling)


EXAMPLES = {
    "train sft": "--config smollm2-135m-qlora-cpu max_steps=20",
    "train export": ".helpline/adapters/smollm2-135m-qlora-cpu",
    "data prepare": "--source reviewed:.helpline/datasets/reviewed/reviewed.jsonl --out reviewed",
    "eval gate": "--candidate NAME --baseline production --limit 20",
    "eval regression": "--suite helpline/evaluation/suites/support.yaml",
    "eval retrieval": "--dataset beir:../shared/data/DIR --limit 200",
}


def _start_form(client: GatewayClient) -> None:
    commands = session.attempt(client.job_commands) or []
    left, right = st.columns([1, 2])
    default = commands.index("train sft") if "train sft" in commands else 0
    command = left.selectbox("Command", commands, index=default if commands else None, key="job_command")
    example = EXAMPLES.get(command or "", "--help")
    args = right.text_input(
        "Arguments",
        key="job_args",
        placeholder=example,
        help=f"For example: {example}. Add --help to see the command's options.",
    )
    if st.button("Start job", type="primary", icon=":material/play_arrow:", key="job_start", disabled=not command):
        try:
            argv = shlex.split(args)
        except ValueError as e:
            st.error(f"The arguments cannot be read: {e}")
            return
        job = session.attempt(client.start_job, command, argv)
        if job is not None:
            st.session_state["job_selected"] = job["id"]
            st.rerun()


def _jobs(client: GatewayClient) -> None:
    st.caption(
        "Runs `helpline COMMAND ARGUMENTS` on the server, one job at a time; its output is kept in the workspace."
    )
    _start_form(client)
    jobs = session.attempt(client.jobs)
    if not jobs:
        st.caption("No jobs yet.")
        return
    st.dataframe(
        [
            {
                "Job": j["id"],
                "Command": j["command"],
                "Status": j["status"],
                "Started": session.when(j["started_at"]),
                "Finished": session.when(j["finished_at"]),
            }
            for j in jobs
        ],
        hide_index=True,
        width="stretch",
    )
    ids = [j["id"] for j in jobs]
    job_id = st.selectbox("Follow job", ids, key="job_selected")
    running = next(j for j in jobs if j["id"] == job_id)["status"] in ("queued", "running")
    if running:
        st.session_state["hl_job_running"] = job_id
    # While the job runs, only this part refreshes (every 2 s); the rest of the page stays put.
    st.fragment(_follow, run_every=2.0 if running else None)(client, job_id)


def render() -> None:
    st.title("Models")
    session.show_flash()
    client = session.client()
    registry, deploy, reports, jobs = st.tabs(["Registry", "Deploy", "Evaluations", "Jobs"])
    with registry:
        data = session.attempt(client.models)
        if data is not None:
            _registry(client, data)
    with deploy:
        if data is not None:
            _deploy(client, data)
        else:
            st.caption("The registry could not be read (see the Registry tab).")
    with reports:
        _reports(client)
    with jobs:
        _jobs(client)


render()

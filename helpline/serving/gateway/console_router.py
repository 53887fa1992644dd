"""Routes the web console needs beyond the public and admin API: identity, cited passages, the
knowledge-base view (documents with versions, file upload, re-sync from sources, search preview,
history), the review queue, alias history, reports, and training/evaluation jobs.

Every route checks the caller's role with ``requires``; hiding a page in the UI is not the
authorization. The workspace is the folder that holds the registry, so nothing new needs wiring.
"""

from __future__ import annotations

import json
import mimetypes
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from helpline.platform.errors import DataError, EngineError, HelplineError, NotFoundError
from helpline.platform.schemas import Access, ChatMessage
from helpline.platform.workspace import Workspace
from helpline.retrieval.ingest.loaders import load_file
from helpline.serving.gateway.auth import Principal, requires
from helpline.serving.gateway.conversations import audience, trusted_history

console = APIRouter(prefix="/console", tags=["console"])

#: Command groups an engineer may start as jobs from the console (each a `helpline GROUP CMD`; `improve` is a
#: command of its own, `helpline improve ARGS`).
JOB_GROUPS = ("data", "train", "eval", "bench", "improve")
REPORT_SUFFIXES = (".html", ".json", ".jsonl", ".png", ".svg", ".md", ".txt")
_lock = threading.Lock()  # guards the reviewed-examples file and each app's job table


class Conflict(HelplineError):
    http_status = 409


class ReviewRequest(BaseModel):
    answer: str = Field(min_length=1, max_length=8000, description="The answer the assistant should have given.")


def _workspace(request: Request) -> Workspace:
    return Workspace.at(request.app.state.router.registry.db_path.parent)


def _kb(request: Request) -> Any:
    if request.app.state.kb_admin is None:
        raise EngineError("this gateway has no knowledge base attached", hint="start it with `helpline run`")
    return request.app.state.kb_admin.kb


# identity and chat -------------------------------------------------------------------------


@console.get("/whoami")
def whoami(who: Principal = Depends(requires("customer"))) -> dict:
    """The caller's role and key name (the UI chooses its pages with it)."""
    return {"id": who.key.id, "role": who.role, "name": who.key.name, "prefix": who.key.prefix}


@console.get("/responses/{response_id}/passages")
def passages(response_id: str, request: Request, who: Principal = Depends(requires("customer"))) -> dict:
    """The passages an answer was given, with their text. Customers see only their own answers."""
    turn = request.app.state.store.turn(response_id)
    if who.role == "customer" and turn["key_id"] != who.key.id:
        raise NotFoundError(f"no response with id {response_id!r}", hint="use the `id` of one of your answers")
    shown = [] if turn["abstained"] and who.role == "customer" else turn["passages"]
    return {"response_id": response_id, "abstained": turn["abstained"], "passages": shown}


# knowledge base ------------------------------------------------------------------------------


@console.get("/kb/documents")
async def kb_documents(request: Request, _: Principal = Depends(requires("staff"))) -> dict:
    """Documents with chunk count, last update and the knowledge-base version that last changed them."""
    kb, registry = _kb(request), _kb_registry(request)
    records, versions = await anyio.to_thread.run_sync(lambda: (kb.documents(), registry.kb_versions()))
    rows = []
    for r in records:
        # A sync records its version after the documents it changed, so the first version at or
        # after a document's update is the one that holds it.
        version = next((v.id for v in versions if v.created_at >= r.updated_at), None)
        rows.append({"doc_id": r.doc_id, "title": r.title, "access": r.access, "chunks": len(r.chunk_ids),
                     "updated_at": r.updated_at, "version": version, "source": r.source, "state": r.state})  # fmt: skip
    return {"documents": rows}


@console.post("/kb/files")
async def kb_upload_file(
    request: Request,
    filename: str = Query(min_length=1, max_length=200),
    access: Access | None = Query(
        None, description="Who may see it (overrides the file's own); required unless the file says (front matter)."
    ),
    who: Principal = Depends(requires("staff")),
) -> dict:
    """Add or update one document from an uploaded file (the raw bytes are the request body)."""
    content = await request.body()
    doc = await anyio.to_thread.run_sync(lambda: _load_upload(filename, content, access, who))
    report = await anyio.to_thread.run_sync(lambda: request.app.state.kb_admin.upsert([doc]))
    store = request.app.state.store
    await anyio.to_thread.run_sync(lambda: store.audit(who.actor, "kb.upload", doc.doc_id, report))
    return {"doc_id": doc.doc_id, "title": doc.title, "access": doc.access, **report}


def _load_upload(filename: str, content: bytes, access: str | None, who: Principal) -> Any:
    name = Path(filename).name
    if not name or name.startswith(".") or "\x00" in name:
        raise DataError(f"{filename!r} is not a usable file name", hint="upload a file such as returns.md")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(content)
        doc = load_file(path, default_access=access)  # None: the file must say who may see it
    update: dict[str, Any] = {"source": f"upload:{who.actor}:{name}"}
    if access is not None:
        update["access"] = access
    return doc.model_copy(update=update)


@console.post("/kb/resync")
async def kb_resync(request: Request, who: Principal = Depends(requires("staff"))) -> dict:
    """Re-read every document that came from a file on the gateway's machine and re-index changed
    ones (and finish any sync that was interrupted). Uploaded documents are left as they are;
    documents whose source file is gone are listed, not deleted."""
    kb = _kb(request)
    report = await anyio.to_thread.run_sync(lambda: _resync(kb))
    store = request.app.state.store
    await anyio.to_thread.run_sync(lambda: store.audit(who.actor, "kb.resync", "", report))
    return report


def _resync(kb: Any) -> dict[str, Any]:
    docs, missing, failed = [], [], []
    for record in kb.documents():
        if not record.source or record.source.startswith("upload:"):
            continue
        path = Path(record.source)
        if not path.is_file():
            missing.append(record.doc_id)
            continue
        try:
            docs.append(load_file(path).model_copy(update={"doc_id": record.doc_id}))
        except (HelplineError, OSError) as e:
            failed.append({"doc_id": record.doc_id, "reason": str(e)})
    report = kb.sync(docs, delete_missing=False)
    return {"checked": len(docs), "updated": report.updated, "unchanged": report.unchanged,
            "chunks_embedded": report.chunks_embedded, "source_missing": missing, "failed": failed,
            "version": report.version.id if report.version else None}  # fmt: skip


@console.get("/kb/search")
async def kb_search(
    request: Request,
    q: str = Query(min_length=1, max_length=2000),
    k: int = Query(5, ge=1, le=20),
    role: Literal["customer", "staff"] = "customer",
    _: Principal = Depends(requires("staff")),
) -> dict:
    """Which chunks a question retrieves, and whether the chat would answer or hand over: the chat's
    own retrieval and abstention decision, seen as ``role``."""
    pipeline = request.app.state.chat_service.pipeline
    conversation = [ChatMessage(role="user", content=q)]

    def preview() -> tuple[list, bool]:
        hits = pipeline.search(q, k=k, role=role)
        return hits, pipeline.prepare(conversation, role=role).abstained

    hits, abstains = await anyio.to_thread.run_sync(preview)
    return {"query": q, "role": role, "would_abstain": abstains, "results": [h.model_dump() for h in hits]}


@console.get("/kb/versions")
def kb_versions(request: Request, _: Principal = Depends(requires("staff"))) -> dict:
    return {"versions": [v.model_dump() for v in reversed(_kb_registry(request).kb_versions())]}


def _registry(request: Request) -> Any:
    return request.app.state.router.registry


def _kb_registry(request: Request) -> Any:
    """Where the knowledge base records its versions (the gateway's registry, in a real gateway)."""
    return getattr(_kb(request), "registry", None) or _registry(request)


# review --------------------------------------------------------------------------------------


@console.get("/review")
def review_queue(
    request: Request,
    status: Literal["open", "reviewed", "all"] = "open",
    limit: int = Query(200, ge=1, le=2000),
    _: Principal = Depends(requires("staff")),
) -> dict:
    """Answers rated down or abstained, newest first, with the passages the assistant saw."""
    turns = request.app.state.store.review_items(status, limit=limit)
    items = [{**t, "reviewed": t.get("correction") is not None, "question": _last_user(t["messages"])} for t in turns]
    return {"items": items}


@console.post("/review/{response_id}")
def save_review(
    response_id: str, body: ReviewRequest, request: Request, who: Principal = Depends(requires("staff"))
) -> dict:
    """Store the staff's correct answer on the turn and as a reviewed training example
    (``<workspace>/datasets/reviewed/reviewed.jsonl``, the ``reviewed:`` source of `helpline data prepare`).

    As in the export (``conversations.py``): the example keeps no assistant turn the client wrote, and a
    staff answer generated from internal passages goes to ``reviewed-staff.jsonl`` instead, so the
    customer-facing file never holds it."""
    store = request.app.state.store
    turn = store.turn(response_id)  # 404 for an unknown id
    # The latest feedback (the customer's rating and comment) is kept with the correction.
    store.add_feedback(response_id, rating=turn.get("rating") or "down", comment=turn.get("comment") or "",
                       correction=body.answer, key_id=who.key.id)  # fmt: skip
    example = {
        "messages": [*trusted_history(turn),
                     # what the assistant said, or the draft the hallucination check withdrew
                     {"role": "assistant", "content": turn.get("withdrawn") or turn["answer"] or "(no answer)"}],
        "corrected_answer": body.answer.strip(),
        "response_id": response_id,
        "reviewed_by": who.actor,
        "reviewed_at": time.time(),
    }  # fmt: skip
    name = "reviewed-staff.jsonl" if audience(turn) == "staff" else "reviewed.jsonl"
    path = _workspace(request).datasets / "reviewed" / name
    count = _upsert_example(path, example)
    store.audit(who.actor, "review.save", response_id, {"examples": count})
    return {"response_id": response_id, "path": str(path), "examples": count}


def _last_user(messages: list[dict]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def _upsert_example(path: Path, example: dict) -> int:
    """Replace this response's earlier review (if any) and write the file atomically."""
    with _lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        kept = [ln for ln in lines if ln.strip() and json.loads(ln).get("response_id") != example["response_id"]]
        kept.append(json.dumps(example, ensure_ascii=False))
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(kept) + "\n", encoding="utf-8")
        tmp.replace(path)
        return len(kept)


# models and reports --------------------------------------------------------------------------


@console.get("/models/history")
def alias_history(request: Request, _: Principal = Depends(requires("engineer"))) -> dict:
    """Every change of the production and canary aliases, oldest first."""
    registry = _registry(request)
    return {"history": {a: [c.model_dump() for c in registry.alias_history(a)] for a in ("production", "canary")}}


@console.get("/reports")
def reports(request: Request, _: Principal = Depends(requires("engineer"))) -> dict:
    """Evaluation reports (``reports/``) and training summaries and curves (``adapters/*/``), newest first."""
    ws = _workspace(request)
    found = []
    for root in (ws.reports, ws.adapters):
        if not root.is_dir():
            continue
        for p in root.rglob("*"):
            if p.suffix not in REPORT_SUFFIXES or not p.is_file() or "checkpoint" in str(p.relative_to(root)):
                continue
            if root == ws.adapters and p.name not in ("training_summary.json", "metrics.jsonl"):
                continue
            st = p.stat()
            found.append({"path": str(p.relative_to(ws.root)), "size": st.st_size, "modified": st.st_mtime})
    return {"reports": sorted(found, key=lambda r: -r["modified"])}


@console.get("/reports/file")
def report_file(request: Request, path: str = Query(max_length=500), _: Principal = Depends(requires("engineer"))):
    """One report file; only files inside ``reports/`` and ``adapters/`` of the workspace."""
    ws = _workspace(request)
    if "\x00" in path:  # no file has one in its name; resolving it would raise
        raise NotFoundError(f"no report {path!r}", hint="GET /console/reports lists them")
    target = (ws.root / path).resolve()
    allowed = any(target.is_relative_to(root.resolve()) for root in (ws.reports, ws.adapters))
    if not allowed or target.suffix not in REPORT_SUFFIXES or not target.is_file():
        raise NotFoundError(f"no report {path!r}", hint="GET /console/reports lists them")
    return FileResponse(target, media_type=mimetypes.guess_type(target.name)[0] or "text/plain")

"""Admin routes: knowledge base (staff), models (engineer), keys and audit (admin).

Every change goes to the audit log with the caller's key id and role.
"""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from helpline.platform.durations import parse_duration
from helpline.platform.errors import EngineError, NotFoundError
from helpline.platform.schemas import Document
from helpline.platform.workspace import Workspace
from helpline.serving.connectors import check_connector, staff_may_connect
from helpline.serving.gateway.auth import Principal, requires
from helpline.serving.gateway.conversations import export_lines
from helpline.serving.gateway.protocol import (
    CanaryRequest,
    ConnectorRequest,
    DocumentsUpload,
    KeyRequest,
    PromoteRequest,
    RollbackRequest,
    SyncRequest,
)
from helpline.serving.kb_admin import KBAdmin

admin = APIRouter(prefix="/admin")


def _kb(request: Request) -> KBAdmin:
    if request.app.state.kb_admin is None:
        raise EngineError("this gateway has no knowledge base attached", hint="start it with `helpline run`")
    return request.app.state.kb_admin


async def _audit(request: Request, who: Principal, action: str, target: str, detail: dict) -> None:
    """Audit from an async route: the SQLite write runs in a worker thread, off the event loop."""
    store = request.app.state.store
    await anyio.to_thread.run_sync(lambda: store.audit(who.actor, action, target, detail))


# knowledge base -----------------------------------------------------------------------------


@admin.get("/kb/documents")
async def kb_list(request: Request, _: Principal = Depends(requires("staff"))) -> dict:
    return {"documents": await anyio.to_thread.run_sync(_kb(request).list_documents)}


@admin.post("/kb/documents")
async def kb_upload(body: DocumentsUpload, request: Request, who: Principal = Depends(requires("staff"))) -> dict:
    """Add or update documents (sent as JSON); unchanged ones are skipped."""
    docs = [Document(**d.model_dump(), source=f"upload:{who.actor}") for d in body.documents]
    report = await anyio.to_thread.run_sync(lambda: _kb(request).upsert(docs))
    await _audit(request, who, "kb.upload", ",".join(d.doc_id for d in docs), report)
    return report


@admin.delete("/kb/documents/{doc_id:path}")
async def kb_delete(doc_id: str, request: Request, who: Principal = Depends(requires("staff"))) -> dict:
    report = await anyio.to_thread.run_sync(lambda: _kb(request).delete(doc_id))
    await _audit(request, who, "kb.delete", doc_id, report)
    return report


@admin.post("/kb/sync")
async def kb_sync(body: SyncRequest, request: Request, who: Principal = Depends(requires("admin"))) -> dict:
    """Mirror a folder or a help-centre export on the gateway's machine, or a website (admin only: it reads the
    server's disk and fetches from its network)."""
    crawl_state = Workspace.at(request.app.state.router.registry.db_path.parent).crawl_state
    report = await anyio.to_thread.run_sync(lambda: _kb(request).sync_source(body.folder, crawl_state=crawl_state))
    await _audit(request, who, "kb.sync", body.folder, report)
    return report


@admin.get("/kb/connectors")
def kb_connectors(request: Request, _: Principal = Depends(requires("staff"))) -> dict:
    """The knowledge base's connectors with their schedule and last run."""
    return {"connectors": request.app.state.store.connectors()}


def _may_connect(request: Request, who: Principal, name: str, source: str | None) -> None:
    """Staff add, change and remove connectors to public websites; anything else needs an admin key (403)."""
    if who.role == "admin":
        return
    current = next((c for c in request.app.state.store.connectors() if c["name"] == name), None)
    for checked in [s for s in (source, current and current["source"]) if s]:
        if (why := staff_may_connect(checked)) is not None:
            raise HTTPException(403, f"{why}: an admin key adds, changes or removes this connector")


@admin.post("/kb/connectors")
async def kb_connect(body: ConnectorRequest, request: Request, who: Principal = Depends(requires("staff"))) -> dict:
    """Add a connector (or change one): the gateway that writes the knowledge base syncs it every ``every``. Staff
    connect public websites; exports (the gateway's disk) and private addresses need an admin key."""
    every_s = parse_duration(body.every)
    check_connector(body.name, body.source, every_s)
    await anyio.to_thread.run_sync(lambda: _may_connect(request, who, body.name, body.source))
    request.app.state.store.save_connector(body.name, source=body.source, every_s=every_s, actor=who.actor)
    await _audit(request, who, "kb.connect", body.name, {"source": body.source, "every_s": every_s})
    return next(c for c in request.app.state.store.connectors() if c["name"] == body.name)


@admin.delete("/kb/connectors/{name}")
async def kb_disconnect(name: str, request: Request, who: Principal = Depends(requires("staff"))) -> dict:
    """Remove a connector (staff: one to a public website); the documents it brought stay until removed
    (`helpline kb remove`)."""
    await anyio.to_thread.run_sync(lambda: _may_connect(request, who, name, None))
    if not request.app.state.store.remove_connector(name):
        raise NotFoundError(f"no connector {name!r}", hint="GET /admin/kb/connectors lists them")
    await _audit(request, who, "kb.disconnect", name, {})
    return {"removed": name}


@admin.post("/kb/connectors/{name}/sync")
async def kb_connector_sync(name: str, request: Request, who: Principal = Depends(requires("staff"))) -> dict:
    """Sync a connector now (staff: its source is fixed by an admin), and record the run."""
    store = request.app.state.store
    connector = next((c for c in store.connectors() if c["name"] == name), None)
    if connector is None:
        raise NotFoundError(f"no connector {name!r}", hint="GET /admin/kb/connectors lists them")
    crawl_state = Workspace.at(request.app.state.router.registry.db_path.parent).crawl_state
    report = await anyio.to_thread.run_sync(
        lambda: _kb(request).sync_source(connector["source"], crawl_state=crawl_state)
    )
    store.connector_ran(name, status="ok", summary=report)
    await _audit(request, who, "kb.sync", name, report)
    return report


# models ---------------------------------------------------------------------------------------


@admin.get("/models")
def models_list(request: Request, _: Principal = Depends(requires("engineer"))) -> dict:
    router = request.app.state.router
    return {
        "models": [m.model_dump() for m in router.registry.list_models()],
        "aliases": router.registry.aliases(),
        "canary_share": router.canary_share,
    }


@admin.post("/models/promote")
async def models_promote(
    body: PromoteRequest, request: Request, who: Principal = Depends(requires("engineer"))
) -> dict:
    """Load the model into the engine, then switch the alias atomically."""
    router = request.app.state.router
    if body.force and who.role != "admin":
        raise HTTPException(403, "promoting without a passing gate report (force) needs the admin role")
    change = await anyio.to_thread.run_sync(
        lambda: router.promote(body.name, alias=body.alias, actor=who.actor, force=body.force)
    )
    action = "model.promote.forced" if body.force else "model.promote"
    request.app.state.store.audit(who.actor, action, body.alias, change.model_dump())
    return change.model_dump()


@admin.post("/models/rollback")
async def models_rollback(
    body: RollbackRequest, request: Request, who: Principal = Depends(requires("engineer"))
) -> dict:
    router = request.app.state.router
    change = await anyio.to_thread.run_sync(lambda: router.rollback(body.alias, actor=who.actor))
    request.app.state.store.audit(who.actor, "model.rollback", body.alias, change.model_dump())
    return change.model_dump()


@admin.put("/models/canary")
def models_canary(body: CanaryRequest, request: Request, who: Principal = Depends(requires("engineer"))) -> dict:
    """Send ``percent`` of new conversations on helpline-support to the canary alias."""
    request.app.state.router.set_canary_share(body.percent)
    request.app.state.store.set_setting("canary_share", str(body.percent))
    request.app.state.store.audit(who.actor, "model.canary_share", "canary", {"percent": body.percent})
    return {"canary_share": body.percent}


# conversations --------------------------------------------------------------------------------


@admin.get("/conversations")
def conversations(
    request: Request,
    limit: int = Query(100, ge=1, le=1000),
    rating: str | None = None,
    _: Principal = Depends(requires("staff")),
) -> dict:
    return {"conversations": request.app.state.store.turns(limit=limit, rating=rating)}


@admin.get("/conversations/export")
def conversations_export(
    request: Request,
    staff_facing: bool = Query(False, description="Also staff answers drawn from internal passages."),
    who: Principal = Depends(requires("engineer")),
) -> Response:
    """Rated-up and corrected answers as training chat JSONL (`{"messages": [...]}` per line): customer-facing
    by default; ``staff_facing=true`` adds the staff answers generated from internal passages."""
    lines = export_lines(request.app.state.store, staff_facing=staff_facing)
    detail = {"rows": len(lines), "staff_facing": staff_facing}
    request.app.state.store.audit(who.actor, "conversations.export", "", detail)
    return Response("".join(lines), media_type="application/jsonl")


# keys and audit -------------------------------------------------------------------------------


@admin.post("/keys")
def keys_create(body: KeyRequest, request: Request, who: Principal = Depends(requires("admin"))) -> dict:
    key, record = request.app.state.store.create_key(body.role, name=body.name, actor=who.actor)
    return {"key": key, **record.model_dump()}


@admin.get("/keys")
def keys_list(request: Request, _: Principal = Depends(requires("admin"))) -> dict:
    return {"keys": [k.model_dump() for k in request.app.state.store.list_keys()]}


@admin.delete("/keys/{key_id}")
def keys_revoke(key_id: int, request: Request, who: Principal = Depends(requires("admin"))) -> dict:
    request.app.state.store.revoke_key(key_id, actor=who.actor)
    return {"revoked": key_id}


@admin.get("/audit")
def audit(request: Request, limit: int = Query(200, ge=1, le=5000), _: Principal = Depends(requires("admin"))) -> dict:
    return {"audit": request.app.state.store.audit_log(limit=limit)}

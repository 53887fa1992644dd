"""A backup taken while a real gateway serves (SmolLM2 in transformers, MiniLM over embedded Chroma, the
bundled detector), restored into a new folder after the original is gone: the restored copy serves answers with
citations, and the old conversation and keys are there."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from helpline.evaluation.load import serve_app
from helpline.platform.context import Context
from helpline.platform.settings import load_settings
from helpline.platform.workspace import Workspace
from helpline.serving.backup import backup_workspace, restore_workspace
from helpline.serving.factory import build_gateway

pytestmark = pytest.mark.integration

RETURN_Q = "How do I send something back to you?"


def _chat(client: httpx.Client | TestClient, key: str, question: str = RETURN_Q) -> dict:
    body = {"model": "helpline-support", "messages": [{"role": "user", "content": question}], "max_tokens": 24}
    response = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()


def _own_workspace(shared: Path, tmp_path: Path, settings_for) -> Path:
    """A private copy of the session's initialised workspace (its own keys, log and index lock)."""
    root = tmp_path / "source" / ".helpline"
    backup_workspace(Workspace.at(shared), tmp_path / "seed", settings=settings_for(shared))
    restore_workspace(tmp_path / "seed", root, settings=settings_for(root))
    return root


def test_a_backup_taken_while_serving_restores_into_a_new_folder_that_serves(
    workspace_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("HELPLINE_")]:
        monkeypatch.delenv(key)

    def settings_for(root: Path):
        return load_settings(workspace=root)

    source = _own_workspace(workspace_dir / ".helpline", tmp_path, settings_for)
    app = build_gateway(Context(settings_for(source)), engine="transformers")
    keys = {role: app.state.store.create_key(role, name=f"it-{role}")[0] for role in ("customer", "admin")}
    server, thread, url = serve_app(app)
    try:
        with httpx.Client(base_url=url, timeout=300) as client:
            first = _chat(client, keys["customer"])
            assert first["citations"]
            feedback = {"response_id": first["id"], "rating": "up", "comment": "clear"}
            headers = {"Authorization": f"Bearer {keys['customer']}"}
            assert client.post("/v1/feedback", json=feedback, headers=headers).status_code == 200
            # A customer keeps chatting while the backup is taken.
            served: list[dict] = []
            during = threading.Thread(target=lambda: served.append(_chat(client, keys["customer"], "Shipping fees?")))
            during.start()
            manifest = backup_workspace(Workspace.at(source), tmp_path / "backup", settings=settings_for(source))
            during.join(300)
            assert served  # answered while the backup ran
    finally:
        server.should_exit = True
        thread.join(30)
        app.state.kb_admin.kb.close()
    assert manifest["index"] == "served by a gateway: unchanged during the copy"
    shutil.rmtree(tmp_path / "source")  # the restored copy must not lean on the original

    restored = tmp_path / "restored" / ".helpline"
    restore_workspace(tmp_path / "backup", restored, settings=settings_for(restored))
    ctx = Context(settings_for(restored))
    assert all(Path(m.path).is_relative_to(restored) for m in ctx.registry.list_models())
    app = build_gateway(ctx, engine="transformers")
    try:
        with TestClient(app) as client:
            old = app.state.store.turn(first["id"])  # the conversation from before the backup
            assert (old["answer"], old["rating"], old["comment"]) == (first["choices"][0]["message"]["content"], "up",
                                                                      "clear")  # fmt: skip
            assert {k.name for k in app.state.store.list_keys()} >= {"it-customer", "it-admin"}
            answer = _chat(client, keys["customer"])  # the old key still works
            assert answer["citations"] and answer["citations"][0]["doc_id"].startswith("returns-")
    finally:
        app.state.kb_admin.kb.close()

"""The engine on its own host: `helpline engine` runs the real vLLM (CPU, SmolLM2); two gateway replicas reach it by
vllm.url, as gateways on other machines would. A promotion made through one replica is served by the other, adapters
go in through vLLM's runtime LoRA API under the path the engine host mounts the workspace at, and an engine restarted
under the gateways gets its adapters back without a gateway restart."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from helpline.platform.context import Context
from helpline.platform.registry import Registry
from helpline.platform.workspace import Workspace
from helpline.testing.serving import PASSED_GATE

pytestmark = pytest.mark.integration

QUESTION = "How do I send something back to you?"


@dataclass
class Engine:
    """`helpline engine` as a process of its own; ``restart`` stops it and starts it again."""

    cwd: Path
    env: dict[str, str]
    log: Path
    url: str
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "helpline", "engine"], cwd=self.cwd, env=self.env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise AssertionError(f"`helpline engine` did not become ready: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # as `docker stop` would
            self.proc.wait(timeout=120)


@dataclass
class Replicas:
    engine: Engine
    urls: list[str]
    apps: list
    servers: list
    keys: dict[str, str]

    def ask(self, replica: int, conversation_id: str) -> dict:
        resp = httpx.post(
            f"{self.urls[replica]}/v1/chat/completions",
            json={"model": "helpline-support", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8,
                  "conversation_id": conversation_id},
            headers={"Authorization": f"Bearer {self.keys['customer']}"}, timeout=300,
        )  # fmt: skip
        assert resp.status_code == 200, resp.text
        return resp.json()


@pytest.fixture(scope="module")
def replicas(workspace_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    from helpline.bench.serving import random_adapter
    from helpline.engines.vllm_external import ExternalVLLM
    from helpline.evaluation.load import free_port, serve_app
    from helpline.platform.settings import load_settings
    from helpline.serving.factory import build_gateway

    tmp = tmp_path_factory.mktemp("external")
    ws = Workspace.at(workspace_dir / ".helpline")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPLINE_")}
    env |= {"HELPLINE_WORKSPACE": str(ws.root), "HELPLINE_VLLM__PORT": str(port)}
    engine = Engine(cwd=workspace_dir, env=env, log=tmp / "engine.log", url=f"http://127.0.0.1:{port}")
    engine.start()

    # The gateways' storage, mounted on the engine host at another path (a symlink here).
    gateway_side = tmp / "gateway-side"
    with sqlite3.connect(ws.registry_db) as src, sqlite3.connect(tmp / "registry.sqlite") as dst:
        src.backup(dst)  # a copy the promotions may change, shared by both replicas
    registry = Registry(tmp / "registry.sqlite")
    base = registry.get_model("smollm2-135m-instruct")
    adapter = random_adapter(base.path, gateway_side / "adapters" / "ext-lora", rank=8)
    registry.register_model("ext-lora", kind="adapter", path=adapter, base_model=base.name, metadata=PASSED_GATE)
    (tmp / "engine-side").symlink_to(gateway_side)

    settings = load_settings(workspace=ws.root)
    vllm = settings.vllm.model_copy(
        update={"url": engine.url, "workspace_path": str(tmp / "engine-side"), "health_interval_s": 1.0}
    )
    settings = settings.model_copy(update={"vllm": vllm})
    apps, servers, urls, gateways = [], [], [], []
    try:
        for _ in range(2):
            server = ExternalVLLM(served_name=base.name, settings=vllm, workspace_root=gateway_side).start()
            servers.append(server)
            ctx = Context(settings, workspace=ws, registry=registry)
            app = build_gateway(ctx, server=server, store_path=tmp / "gateway.sqlite")
            gateway, _, url = serve_app(app)
            apps.append(app)
            gateways.append(gateway)
            urls.append(url)
        keys = {r: apps[0].state.store.create_key(r)[0] for r in ("customer", "engineer")}
        yield Replicas(engine=engine, urls=urls, apps=apps, servers=servers, keys=keys)
    finally:
        for gateway in gateways:
            gateway.should_exit = True
        for server in servers:
            server.stop()
        engine.stop()


def test_a_promotion_through_one_replica_is_served_by_the_other_from_the_external_engine(replicas: Replicas) -> None:
    store = replicas.apps[1].state.store
    first = replicas.ask(1, "ext-1")
    assert store.turn(first["id"])["adapter"] is None  # the base model, before the promotion
    engineer = {"Authorization": f"Bearer {replicas.keys['engineer']}"}
    promoted = httpx.post(f"{replicas.urls[0]}/admin/models/promote", json={"name": "ext-lora"}, headers=engineer)
    assert promoted.status_code == 200, promoted.text

    # replica B's next request: the adapter, which replica A loaded into the engine by its mounted path
    turn = store.turn(replicas.ask(1, "ext-2")["id"])
    assert turn["adapter"] == "ext-lora" and turn["served_model"].startswith("ext-lora-")
    served = httpx.get(f"{replicas.engine.url}/v1/models").json()["data"]
    lora = next(m for m in served if m["id"] == turn["served_model"])
    assert "engine-side" in lora["root"]  # loaded from the engine's mount, not the gateways' path

    # a conversation started on A goes on on B, in the one store both replicas write
    replicas.ask(0, "ext-3")
    replicas.ask(1, "ext-3")
    assert len([t for t in store.turns(limit=50) if t["conversation_id"] == "ext-3"]) == 2


def test_an_engine_restarted_under_the_gateways_serves_the_promoted_adapter_again(replicas: Replicas) -> None:
    engineer = {"Authorization": f"Bearer {replicas.keys['engineer']}"}
    httpx.post(f"{replicas.urls[0]}/admin/models/promote", json={"name": "ext-lora"}, headers=engineer)
    replicas.engine.stop()
    replicas.engine.start()  # comes back with its base only
    deadline = time.monotonic() + 60
    while sum(s.reloads for s in replicas.servers) < 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    # the first replica to look loads it again; the other then finds it served (the engine is shared)
    assert sum(s.reloads for s in replicas.servers) >= 1
    for i in (0, 1):
        turn = replicas.apps[i].state.store.turn(replicas.ask(i, f"after-restart-{i}")["id"])
        assert turn["adapter"] == "ext-lora" and turn["status"] == "ok"

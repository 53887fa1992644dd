"""A vLLM server run elsewhere (``vllm.url``): on a GPU host, shared by several gateways.

helpline neither starts nor stops it. What it does here, in place of the supervisor's restarts:

1. ``start`` waits (up to ``vllm.startup_timeout_s``) for the server to answer, then checks that it serves
   the chat model's base, so a gateway pointed at the wrong engine fails at start with the fix, not on the
   first customer's question;
2. adapters go in through vLLM's runtime LoRA API (``/v1/load_lora_adapter``), named by path as the engine
   host mounts the workspace (``vllm.workspace_path``);
3. a watcher asks ``/v1/models`` every ``vllm.health_interval_s``: a server restarted elsewhere comes back
   with its base only, and every adapter this gateway loaded is loaded again before it is asked for.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path, PurePosixPath

import httpx

from helpline.engines.vllm_server import load_lora_adapter
from helpline.platform.errors import EngineError
from helpline.platform.settings import VLLMSettings


class ExternalVLLM:
    """The engine side of a gateway whose vLLM runs elsewhere; the interface `helpline run` and the gateway's
    backend use of a supervised :class:`~helpline.engines.vllm_server.VLLMServer` (``lora_modules``, ``load_lora``,
    ``base_url``, ``start``, ``stop``)."""

    def __init__(
        self,
        *,
        served_name: str,
        settings: VLLMSettings,
        workspace_root: Path,
        lora_modules: dict[str, str] | None = None,
    ) -> None:
        if settings.url is None:
            raise EngineError("no vllm.url: there is no external vLLM server to use", hint="set vllm.url")
        self.served_name = served_name
        self.settings = settings
        self.root_url = settings.url
        self.workspace_root = Path(workspace_root)
        self.log_path = None  # its log is on its own host
        #: Served name -> adapter path here; what the engine must hold, loaded again when it does not.
        self.lora_modules = dict(lora_modules or {})
        #: Adapters loaded again after the server came back without them.
        self.reloads = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def engine_path(self, path: str | Path) -> str:
        """``path`` as the engine host sees it: under ``vllm.workspace_path`` when the adapter is in this
        workspace and the engine mounts it elsewhere; else unchanged (the same storage, the same path)."""
        mount = self.settings.workspace_path
        if mount is None:
            return str(path)
        try:
            inside = Path(path).resolve().relative_to(self.workspace_root.resolve())
        except ValueError:
            return str(path)
        return str(PurePosixPath(mount) / inside.as_posix())

    def served_models(self, *, timeout_s: float = 5.0) -> list[str] | None:
        """Model ids the server lists (its base and the adapters it holds); None when it does not answer."""
        try:
            resp = httpx.get(f"{self.base_url}/models", timeout=timeout_s)
            return [m["id"] for m in resp.json()["data"]] if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    def start(self, *, supervise: bool = True) -> ExternalVLLM:
        """Wait for the server, check it serves our base, load the adapters it must hold; then watch it."""
        deadline = time.monotonic() + self.settings.startup_timeout_s
        served = self.served_models()
        while served is None:
            if time.monotonic() > deadline:
                raise EngineError(
                    f"no vLLM server answered at {self.root_url} within {self.settings.startup_timeout_s:.0f} s",
                    hint="start it there (`helpline engine`, or `vllm serve <base> --enable-lora`), or fix vllm.url",
                )
            if self._stopping.wait(2.0):
                raise EngineError("cancelled while waiting for the external vLLM server")
            served = self.served_models()
        if self.served_name not in served:
            raise EngineError(
                f"the vLLM server at {self.root_url} serves {', '.join(served)}, not {self.served_name!r}",
                hint=f"start it for {self.served_name} (--served-model-name {self.served_name}), or set chat_model to "
                "a model of the base it serves",
            )
        self.resync(served)
        if supervise:
            self._watcher = threading.Thread(target=self._watch, name="vllm-external-watch", daemon=True)
            self._watcher.start()
        return self

    def load_lora(self, name: str, path: str | Path, *, timeout_s: float = 120.0) -> None:
        """Load an adapter into the server under ``name`` (idempotent) and remember it."""
        load_lora_adapter(self.root_url, name, self.engine_path(path), timeout_s=timeout_s)
        with self._lock:
            self.lora_modules[name] = str(path)

    def resync(self, served: list[str] | None = None) -> list[str]:
        """Load every remembered adapter the server does not list; the names loaded again. A server that does not
        answer is left alone (the next look tries again)."""
        served = self.served_models() if served is None else served
        if served is None:
            return []
        with self._lock:
            missing = {n: p for n, p in self.lora_modules.items() if n not in served}
        again = []
        for name, path in missing.items():
            try:
                load_lora_adapter(self.root_url, name, self.engine_path(path))
                again.append(name)
                self.reloads += 1
            except EngineError as e:  # one adapter it refuses must not keep the others out
                print(f"external vLLM: could not load {name!r} again: {e}", file=sys.stderr)
        return again

    def _watch(self) -> None:
        while not self._stopping.wait(self.settings.health_interval_s):
            again = self.resync()
            if again:
                print(f"external vLLM came back without {', '.join(again)}; loaded again", file=sys.stderr)

    def stop(self) -> None:
        """Stop watching (the server itself runs on)."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)

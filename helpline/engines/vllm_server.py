"""Launch and supervise `vllm serve` as a subprocess bound to loopback.

The supervisor restarts a crashed server with backoff. Adapters loaded at run time are
remembered in ``lora_modules``, so a restarted server comes back with every adapter it served.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from helpline.platform.errors import EngineError
from helpline.platform.files import has_chat_template
from helpline.platform.settings import VLLMSettings


class VLLMServer:
    """One vLLM OpenAI-compatible server for a base model, with LoRA enabled."""

    def __init__(
        self,
        *,
        model_path: str | Path,
        served_name: str,
        settings: VLLMSettings,
        log_path: Path | None,
        lora_modules: dict[str, str] | None = None,
    ) -> None:
        self.model_path = str(model_path)
        self.served_name = served_name
        self.settings = settings
        self.log_path = log_path
        self.lora_modules = dict(lora_modules or {})
        self.restarts = 0
        self._proc: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    @property
    def root_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def command(self) -> list[str]:
        s = self.settings
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model_path,
            "--served-model-name", self.served_name,
            "--host", s.host,
            "--port", str(s.port),
            "--dtype", s.dtype,
            "--max-model-len", str(s.max_model_len),
            "--gpu-memory-utilization", str(s.gpu_memory_utilization),
            "--enable-lora",
            "--max-lora-rank", str(s.max_lora_rank),
            "--max-loras", str(s.max_loras),
        ]  # fmt: skip
        for name, path in self.lora_modules.items():
            cmd += ["--lora-modules", f"{name}={path}"]
        template = self.chat_template()
        if template is not None:
            cmd += ["--chat-template", str(template)]
        return cmd

    def chat_template(self) -> Path | None:
        """For a base model without a chat template (Gemma 3 270M), the template its adapters were trained
        with (saved beside each adapter), so chat completions render as in training; None otherwise."""
        if has_chat_template(self.model_path):
            return None
        for path in self.lora_modules.values():
            if (Path(path) / "chat_template.jinja").exists():
                return Path(path) / "chat_template.jinja"
        return None

    def is_ready(self) -> bool:
        try:
            return httpx.get(f"{self.root_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _spawn(self) -> None:
        log_path = self.log_path or Path(os.devnull)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # Runtime LoRA loading is how a promotion reaches the running server without a restart.
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
        if self.settings.cpu_reserved_cpus is not None:
            env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(self.settings.cpu_reserved_cpus)
        elif (os.cpu_count() or 1) <= 4:  # see VLLMSettings.cpu_reserved_cpus
            env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        with log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise EngineError(
                    f"vLLM exited with code {self._proc.returncode} while starting",
                    hint=f"see {self.log_path}; on CPU, try a larger vllm.gpu_memory_utilization",
                )
            if self.is_ready():
                return
            time.sleep(1.0)
        self._terminate()
        raise EngineError(
            f"vLLM did not become ready within {self.settings.startup_timeout_s:.0f} s",
            hint=f"see {self.log_path}",
        )

    def start(self, *, supervise: bool = True) -> VLLMServer:
        """Start the server and wait until it is ready; then watch it and restart it if it dies."""
        if self.is_ready():
            raise EngineError(
                f"something already answers on {self.root_url}",
                hint="stop the other `helpline run`, or set HELPLINE_VLLM__PORT to a free port",
            )
        self._stopping.clear()
        self._spawn()
        self._wait_ready()
        if supervise:
            self._supervisor = threading.Thread(target=self._supervise, name="vllm-supervisor", daemon=True)
            self._supervisor.start()
        return self

    def _supervise(self) -> None:
        backoff = 2.0
        while not self._stopping.wait(1.0):
            if self._proc is None or self._proc.poll() is None:
                continue
            code = self._proc.returncode
            print(f"vLLM exited with code {code}; restarting (log: {self.log_path})", file=sys.stderr)
            self._stopping.wait(backoff)
            if self._stopping.is_set():
                return
            try:
                self._spawn()
                self._wait_ready()
                self.restarts += 1
                backoff = 2.0
                print(f"vLLM is back (restart {self.restarts})", file=sys.stderr)
            except EngineError as e:
                backoff = min(backoff * 2, 60.0)
                print(f"vLLM restart failed: {e}; next try in {backoff:.0f} s", file=sys.stderr)

    def load_lora(self, name: str, path: str | Path, *, timeout_s: float = 120.0) -> None:
        """Load a PEFT adapter into the running server under ``name`` (idempotent)."""
        load_lora_adapter(self.root_url, name, path, timeout_s=timeout_s)
        self.lora_modules[name] = str(path)

    def _terminate(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop supervising and terminate the server."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        self._terminate()
        self._proc = None


def _die_with_parent() -> None:
    """Linux: the engine gets SIGTERM if `helpline run` dies without cleaning up (no orphan
    holding the port and gigabytes of memory)."""
    if sys.platform.startswith("linux"):

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def load_lora_adapter(root_url: str, name: str, path: str | Path, *, timeout_s: float = 120.0) -> None:
    """Ask the vLLM server at ``root_url`` to load a PEFT adapter under ``name`` (idempotent)."""
    try:
        resp = httpx.post(
            f"{root_url}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)}, timeout=timeout_s
        )
    except httpx.HTTPError as e:
        raise EngineError(f"could not reach vLLM to load adapter {name!r}: {e}") from e
    if resp.status_code != 200 and "already been loaded" not in resp.text:
        raise EngineError(
            f"vLLM refused adapter {name!r} from {path}: {resp.text[:300]}",
            hint="check the adapter's rank (vllm.max_lora_rank) and that its base model matches",
        )

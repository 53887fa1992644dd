"""Launch and supervise `vllm serve` as a subprocess bound to loopback.

The supervisor restarts, with backoff, a server that exited and one that is alive but stopped
answering (SIGSTOP, a deadlock: its pid stays, so waiting for it to exit never ends); see ``HangWatch``.
Adapters loaded at run time are remembered in ``lora_modules``, so a restarted server comes back with
every adapter it served. The server runs in its own process group, so stopping it also stops the
processes it forked (the engine core).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from helpline.platform.errors import EngineError
from helpline.platform.files import has_chat_template
from helpline.platform.processes import die_with_parent, kill_group, stop_group
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
        #: Times the supervisor found the server alive but not answering, and why it last restarted it.
        self.hangs = 0
        self.last_restart_reason: str | None = None
        self._proc: subprocess.Popen | None = None
        self._watch = HangWatch(probes=settings.hang_probes, timeout_s=settings.hang_timeout_s)
        self._next_probe = 0.0
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
            # the supervisor asks /health every few seconds; that is not worth a log line each time
            "--disable-access-log-for-endpoints", "/health",
        ]  # fmt: skip
        for name, path in self.lora_modules.items():
            cmd += ["--lora-modules", f"{name}={path}"]
        template = self.chat_template()
        if template is not None:
            cmd += ["--chat-template", str(template)]
        for flag, size in (("--tensor-parallel-size", s.tensor_parallel_size),
                           ("--pipeline-parallel-size", s.pipeline_parallel_size),
                           ("--data-parallel-size", s.data_parallel_size)):  # fmt: skip
            if size > 1:  # 1 is vLLM's own default: the command on one device is as before
                cmd += [flag, str(size)]
        return cmd + list(s.extra_args)

    def chat_template(self) -> Path | None:
        """For a base model without a chat template (Gemma 3 270M), the template its adapters were trained
        with (saved beside each adapter), so chat completions render as in training; None otherwise."""
        if has_chat_template(self.model_path):
            return None
        for path in self.lora_modules.values():
            if (Path(path) / "chat_template.jinja").exists():
                return Path(path) / "chat_template.jinja"
        return None

    def is_ready(self, *, timeout_s: float = 2.0) -> bool:
        try:
            return httpx.get(f"{self.root_url}/health", timeout=timeout_s).status_code == 200
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
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: stopping it reaches the engine core too
                preexec_fn=die_with_parent,
            )
        self._watch = HangWatch(probes=self.settings.hang_probes, timeout_s=self.settings.hang_timeout_s)
        self._next_probe = 0.0

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
            if self._stopping.wait(1.0):
                raise EngineError("vLLM start cancelled: the server is being stopped")
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
        """Restart the server when it exits or stops answering, backing off while restarts fail."""
        backoff = 2.0
        while not self._stopping.wait(1.0):
            reason = self._failure()
            if reason is None:
                continue
            self.last_restart_reason = reason
            print(f"{reason}; restarting (log: {self.log_path})", file=sys.stderr)
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
                if self._stopping.is_set():
                    return
                backoff = min(backoff * 2, 60.0)
                print(f"vLLM restart failed: {e}; next try in {backoff:.0f} s", file=sys.stderr)

    def _failure(self) -> str | None:
        """Why the server needs a restart now: it exited, or it is alive and hung (then it is killed here)."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is not None:
            stop_group(proc)  # what it forked (the engine core) must not hold the memory the next one needs
            return f"vLLM exited with code {proc.returncode}"
        hung_s = self._probe()
        if hung_s is None or self._stopping.is_set():
            return None
        self.hangs += 1
        kill_group(proc)  # SIGTERM would wait in vain on a stopped process; SIGKILL needs no SIGCONT
        return f"vLLM stopped answering for {hung_s:.0f} s"

    def _probe(self) -> float | None:
        """Ask /health when a probe is due; the seconds the server has been hung once that is a hang."""
        s = self.settings
        started = time.monotonic()
        if s.hang_timeout_s <= 0 or started < self._next_probe:
            return None
        ok = self.is_ready(timeout_s=s.health_timeout_s)
        now = time.monotonic()
        self._next_probe = now + s.health_interval_s
        return self._watch.record(ok, started=started, now=now)

    def load_lora(self, name: str, path: str | Path, *, timeout_s: float = 120.0) -> None:
        """Load a PEFT adapter into the running server under ``name`` (idempotent)."""
        load_lora_adapter(self.root_url, name, path, timeout_s=timeout_s)
        self.lora_modules[name] = str(path)

    def _terminate(self) -> None:
        if self._proc is not None:
            stop_group(self._proc, timeout_s=30)

    def stop(self) -> None:
        """Stop supervising and terminate the server."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=self.settings.health_timeout_s + 5)  # it may be in a probe
        self._terminate()
        self._proc = None


@dataclass
class HangWatch:
    """Counts consecutive failed /health probes of a server whose process is alive.

    A hang is at least ``probes`` failures in a row spanning at least ``timeout_s`` seconds (from the start
    of the first to the end of the last). Both must hold: a server answering slowly while it generates on
    a few cores fails a probe now and then, and a burst of quick refusals is over in a second; neither is
    a hang. One answered probe starts the count again.
    """

    probes: int
    timeout_s: float
    failures: int = 0
    since: float | None = None

    def record(self, ok: bool, *, started: float, now: float) -> float | None:
        """Record one probe that began at ``started`` and ended at ``now``; the hang's length once it is one."""
        if ok:
            self.failures, self.since = 0, None
            return None
        self.failures += 1
        self.since = started if self.since is None else self.since
        hung_s = now - self.since
        return hung_s if self.failures >= self.probes and hung_s >= self.timeout_s else None


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

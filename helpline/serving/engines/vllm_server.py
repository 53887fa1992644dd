"""Launch and supervise `vllm serve` as a subprocess bound to loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from helpline.platform.errors import EngineError
from helpline.platform.settings import VLLMSettings


class VLLMServer:
    """One vLLM OpenAI-compatible server for a base model, with LoRA enabled."""

    def __init__(
        self,
        *,
        model_path: str | Path,
        served_name: str,
        settings: VLLMSettings,
        log_path: Path,
        lora_modules: dict[str, str] | None = None,
    ) -> None:
        self.model_path = str(model_path)
        self.served_name = served_name
        self.settings = settings
        self.log_path = log_path
        self.lora_modules = lora_modules or {}
        self._proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}/v1"

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
        return cmd

    def is_ready(self) -> bool:
        try:
            return httpx.get(f"http://{self.settings.host}:{self.settings.port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> VLLMServer:
        """Start the server (if it is not already up on that port) and wait until it is ready."""
        if self.is_ready():
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EngineError(
                    f"vLLM exited with code {self._proc.returncode} while starting",
                    hint=f"see {self.log_path}; on CPU, try a larger vllm.gpu_memory_utilization",
                )
            if self.is_ready():
                return self
            time.sleep(1.0)
        self.stop()
        raise EngineError(
            f"vLLM did not become ready within {self.settings.startup_timeout_s:.0f} s",
            hint=f"see {self.log_path}",
        )

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None

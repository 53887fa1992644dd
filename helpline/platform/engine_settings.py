"""The engine's settings (`vllm serve`, supervised or run elsewhere): a part of ``Settings``, split out by role."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field, model_validator

#: `vllm serve` arguments helpline sets from its own settings (``vllm.extra_args`` may not repeat them).
VLLM_OWN_ARGS = frozenset({
    "--model", "--served-model-name", "--host", "--port", "--dtype", "--max-model-len", "--gpu-memory-utilization",
    "--enable-lora", "--max-lora-rank", "--max-loras", "--lora-modules", "--chat-template", "--tensor-parallel-size",
    "--pipeline-parallel-size", "--data-parallel-size", "-tp", "-pp", "-dp",
})  # fmt: skip


class VLLMSettings(BaseModel):
    """The `vllm serve` the gateway talks to: supervised by `helpline run` on loopback, or run elsewhere (``url``)."""

    host: str = Field(
        "127.0.0.1",
        description="Interface vLLM binds to. Keep it on loopback; `helpline engine` on a GPU host binds it to the "
        "private network the gateways reach it on.",
    )
    port: int = Field(8001, description="vLLM's OpenAI-compatible port.")
    url: str | None = Field(
        None,
        description="A vLLM server run elsewhere, e.g. http://engine:8001 (`helpline engine` there, or `vllm serve "
        "<base> --enable-lora` with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True). Set, `helpline run` starts no vLLM: the "
        "gateway waits for this one, checks that it serves the chat model's base, and loads adapters into it through "
        "vLLM's runtime LoRA API (again when the server comes back without them). host and port are then unused.",
    )
    workspace_path: str | None = Field(
        None,
        description="Where the engine host mounts this workspace (with url): adapter paths are sent to the engine "
        "under it, e.g. /models/helpline for /srv/helpline/.helpline here. None: the same path on both sides.",
    )
    gpu_memory_utilization: float = Field(
        0.3, gt=0.0, le=0.95, description="Fraction of (GPU, or on CPU system) memory reserved."
    )
    max_model_len: int = Field(2048, ge=256, description="Context length served.")
    max_lora_rank: int = Field(
        16,
        ge=1,
        description="Largest LoRA rank the server accepts. vLLM pads every adapter to it, so keep it at the rank "
        "you train (all presets: 16): on CPU, serving a rank-16 adapter at 64 cost 0.54 of base throughput "
        "against 0.70 at 16.",
    )
    max_loras: int = Field(4, ge=1, description="Adapters resident at once.")
    startup_timeout_s: float = Field(600.0, gt=0, description="How long to wait for readiness.")
    dtype: str = Field("bfloat16", description="Serving dtype.")
    cpu_reserved_cpus: int | None = Field(
        None,
        ge=0,
        description="vLLM CPU backend only: cores kept free of model compute for vLLM's front end "
        "(VLLM_CPU_NUM_OF_RESERVED_CPU). None: 0 on machines with up to 4 cores, where vLLM's own default of "
        "one reserved core halves the compute (on 2 cores: 120.7 against 71.2 output tokens/s at concurrency "
        "16), and vLLM's default on larger machines.",
    )
    health_interval_s: float = Field(
        5.0, gt=0, description="How often the supervisor asks the running server's /health whether it still answers."
    )
    health_timeout_s: float = Field(
        10.0, gt=0, description="How long one /health probe may wait for its answer before it counts as failed."
    )
    hang_probes: int = Field(
        3, ge=1, description="Failed /health probes in a row that, spanning hang_timeout_s, make a hang."
    )
    hang_timeout_s: float = Field(
        30.0,
        ge=0,
        description="A server whose process is alive but has failed hang_probes /health probes in a row over at "
        "least this many seconds is hung (stopped, deadlocked): the supervisor kills its process group and "
        "restarts it. vLLM answers /health from its API process without waiting for the engine, so a busy server "
        "answers fast (SmolLM2 generating for 16 requests on 2 shared cores, load 9: median 0.08 s, slowest 0.66 s "
        "of 53 probes); a hang needs every probe, each allowed health_timeout_s, to fail for this long, which a "
        "busy server does not do. 0 turns hang detection off.",
    )
    tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs one copy of the model is split across (vLLM --tensor-parallel-size): for a model "
        "larger than one GPU. 1 on CPU."
    )
    pipeline_parallel_size: int = Field(
        1, ge=1, description="Stages the model's layers are split into, across GPUs or hosts "
        "(--pipeline-parallel-size)."
    )
    data_parallel_size: int = Field(
        1, ge=1, description="Copies of the model one server runs, for throughput (--data-parallel-size)."
    )
    extra_args: list[str] = Field(
        default_factory=list,
        description="More `vllm serve` arguments, appended as given (e.g. ['--enable-prefix-caching', "
        "'--quantization', 'fp8']). Those helpline sets itself (model, names, address, LoRA, context, dtype, memory, "
        "parallelism) are refused here: set them through their own settings.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> VLLMSettings:
        problems = []
        ours = sorted({a.split("=", 1)[0] for a in self.extra_args} & VLLM_OWN_ARGS)
        if ours:
            problems.append(
                f"vllm.extra_args may not set {', '.join(ours)}: helpline sets them (vllm.port, vllm.max_model_len, "
                "vllm.tensor_parallel_size, ... or chat_model)"
            )
        if self.url is not None:
            if not re.fullmatch(r"https?://[^/\s]+(/v1)?/?", self.url):
                problems.append(f"vllm.url {self.url!r} is not a server address such as http://engine:8001")
            else:
                self.url = self.url.rstrip("/").removesuffix("/v1")
        if self.workspace_path is not None and (self.url is None or not self.workspace_path.startswith("/")):
            problems.append("vllm.workspace_path must be an absolute path, and is only used with vllm.url")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def root_url(self) -> str:
        """The server's address without /v1: ``url`` when it runs elsewhere, else host and port."""
        return self.url or f"http://{self.host}:{self.port}"

"""Generate greedily with vLLM (base + LoRA adapter) on pre-tokenized prompts, in its own process.

Run as ``python -m helpline.training.vllm_check REQUEST.json RESULT.json``; the export gate starts
it in a subprocess, so vLLM's engine (and its memory) goes away when it is done. Prompts are token
ids rendered by the training tokenizer, so vLLM and PEFT see exactly the same input.
"""

from __future__ import annotations

import json
import sys
import time

from helpline.platform.lazy_imports import require


def main(request_path: str, result_path: str) -> None:
    """Read the request, generate, write ``{"outputs": [[token ids], ...], ...}``."""
    LLM = require("vllm", "serve-cpu").LLM
    SamplingParams = require("vllm", "serve-cpu").SamplingParams
    TokensPrompt = require("vllm.inputs", "serve-cpu").TokensPrompt
    LoRARequest = require("vllm.lora.request", "serve-cpu").LoRARequest

    with open(request_path) as fh:
        req = json.load(fh)
    started = time.perf_counter()
    llm = LLM(
        model=req["base_model"],
        dtype=req.get("dtype", "bfloat16"),
        max_model_len=req.get("max_model_len", 2048),
        gpu_memory_utilization=req.get("gpu_memory_utilization", 0.3),
        enable_lora=True,
        max_lora_rank=req["max_lora_rank"],
        max_loras=1,
        seed=0,
    )
    load_s = time.perf_counter() - started
    params = SamplingParams(temperature=0.0, max_tokens=req["max_tokens"])
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in req["prompts"]]
    lora = LoRARequest("candidate", 1, req["adapter"])
    started = time.perf_counter()
    outs = llm.generate(prompts, params, lora_request=lora, use_tqdm=False)
    result = {
        "outputs": [list(o.outputs[0].token_ids) for o in outs],
        "load_seconds": round(load_s, 1),
        "generate_seconds": round(time.perf_counter() - started, 1),
    }
    with open(result_path, "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":  # vLLM spawns workers: starting it needs this guard
    main(sys.argv[1], sys.argv[2])

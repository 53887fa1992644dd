"""Memory and single-stream speed of one model in the in-process engine, measured in a fresh process.

    python -m helpline.evaluation.model_probe --model DIR [--adapter DIR] --prompts FILE --out FILE

A fresh process per model, so its peak resident memory (``VmHWM``, which starts afresh at exec) is
that model's alone: weights, tokenizer, activations and the KV cache of the longest prompt. The
prompts file holds chat conversations (JSON list of message lists), the same ones every model of a
report answers.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from helpline.engines.hf import TransformersGenerator
from helpline.evaluation.load import sequential
from helpline.platform.schemas import ChatMessage


def peak_rss_mb() -> float:
    """This process's peak resident memory since exec (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def probe(model: str, adapter: str | None, prompts: list[list[dict]], *, n: int, max_tokens: int) -> dict:
    """Load the model (and adapter) with the transformers engine and answer ``n`` prompts one at a time."""

    start = time.perf_counter()
    gen = TransformersGenerator(model, adapter_path=adapter)
    load_s = time.perf_counter() - start
    loaded_mb = peak_rss_mb()
    conversations = [[ChatMessage(**m) for m in p] for p in prompts]
    speed = sequential(gen, conversations, n=n, max_tokens=max_tokens)
    params = sum(p.numel() for p in gen.model.parameters())
    return {
        "engine": "transformers (fp32, in-process)",
        "parameters_m": round(params / 1e6, 1),
        "load_s": round(load_s, 2),
        "rss_after_load_mb": loaded_mb,
        "peak_rss_mb": peak_rss_mb(),
        **speed,
    }


def run_probe(model: str, adapter: str | None, prompts: list[list[dict]], *, n: int, max_tokens: int,
              workdir: Path) -> dict:  # fmt: skip
    """:func:`probe` in a child process (its own memory); raises with the child's stderr on failure."""
    prompts_path, out_path = workdir / "probe-prompts.json", workdir / "probe-out.json"
    prompts_path.write_text(json.dumps(prompts), encoding="utf-8")
    out_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "helpline.evaluation.model_probe", "--model", model, "--prompts", str(prompts_path),
           "--out", str(out_path), "--n", str(n), "--max-tokens", str(max_tokens)]  # fmt: skip
    if adapter:
        cmd += ["--adapter", adapter]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not out_path.exists():
        raise RuntimeError(f"model probe failed for {model}: {done.stderr[-2000:]}")
    return json.loads(out_path.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    prompts = json.loads(Path(args.prompts).read_text(encoding="utf-8"))
    result = probe(args.model, args.adapter, prompts, n=args.n, max_tokens=args.max_tokens)
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()

"""`helpline eval ...`: this package owns the group; each module registers its commands on ``eval_app``.

answers.py (what customers are served), corrections.py (staff corrections asked again), retrieval.py (the
knowledge base's search), models.py (sft, regression, gate, rag, distill-report) and detector.py (the
hallucination detector).
"""

from __future__ import annotations

from pathlib import Path

import typer

from helpline.evaluation.judge.judge import Judge
from helpline.platform.context import Context
from helpline.platform.errors import ConfigError

eval_app = typer.Typer(no_args_is_help=True, help="Evaluate retrieval, models and answers.")

DETECTOR_HELP = "Registry name or folder of the hallucination detector."
DATA_DIR_HELP = "Folder that generated suites read datasets from (e.g. ../shared/data)."
JUDGE_URL_HELP = (
    "An OpenAI-compatible judge (e.g. a vLLM's /v1): also score answers by rubric (correctness, helpfulness, "
    "brand voice) and report its agreement with the rule-based checks."
)


def llm_judge(
    ctx: Context, *, url: str | None, model: str | None, key_env: str | None, voice: Path | None
) -> Judge | None:
    """The judge the ``--judge-*`` options name (None when none), its verdicts cached in the workspace's reports."""
    if (url is None) != (model is None):
        raise ConfigError("--judge-url and --judge-model go together", hint="name the judge's address and model")
    if url is None:
        return None
    return Judge(
        base_url=url, model=model, api_key_env=key_env, cache_path=ctx.workspace.reports / "judge-cache.sqlite",
        voice=voice.read_text() if voice else None,
    )  # fmt: skip


# The modules add their commands to eval_app when imported, so they are imported after it.
from helpline.cli.eval import answers, corrections, detector, models, retrieval  # noqa: E402, F401

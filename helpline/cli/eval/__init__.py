"""`helpline eval ...`: this package owns the group; each module registers its commands on ``eval_app``.

answers.py (what customers are served), corrections.py (staff corrections asked again), retrieval.py (the
knowledge base's search), models.py (sft, regression, gate, rag, distill-report) and detector.py (the
hallucination detector).
"""

from __future__ import annotations

import typer

eval_app = typer.Typer(no_args_is_help=True, help="Evaluate retrieval, models and answers.")

DETECTOR_HELP = "Registry name or folder of the hallucination detector."
DATA_DIR_HELP = "Folder that generated suites read datasets from (e.g. ../shared/data)."

# The modules add their commands to eval_app when imported, so they are imported after it.
from helpline.cli.eval import answers, corrections, detector, models, retrieval  # noqa: E402, F401

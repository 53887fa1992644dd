"""`helpline eval ...` and `helpline bench hallucination`."""

from __future__ import annotations

import typer

eval_app = typer.Typer()
bench_app = typer.Typer()

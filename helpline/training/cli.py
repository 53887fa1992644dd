"""`helpline data ...`, `helpline train ...` and this area's eval/bench commands."""

from __future__ import annotations

import typer

data_app = typer.Typer()
train_app = typer.Typer()
eval_app = typer.Typer()
bench_app = typer.Typer()

"""What every command group shares: the console, the `--json` output contract and the error exit."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console

from helpline.platform.errors import HelplineError

console = Console(stderr=True)


def print_json(data: Any) -> None:
    """Print one JSON object on stdout (the contract for every `--json`)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@contextlib.contextmanager
def json_stdout(active: bool) -> Iterator[None]:
    """While ``active`` (a `--json` command at work), what libraries print on stdout goes to stderr: the
    trainer's progress bar writes each logged step there, and stdout must hold only the one JSON object."""
    if not active:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def fail(error: HelplineError) -> None:
    """Print an error with its hint and exit with the error's code."""
    console.print(f"[bold red]error:[/] {error.message}", highlight=False)
    if error.hint:
        console.print(f"[yellow]hint:[/] {error.hint}", highlight=False)
    sys.exit(error.exit_code)


def show(data: Any, as_json: bool) -> None:
    """A command's result: JSON on stdout with ``--json``, else rich's rendering on the terminal."""
    if as_json:
        print_json(data)
    else:
        console.print(data)

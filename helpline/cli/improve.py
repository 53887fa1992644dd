"""`helpline improve`: staff corrections to a better model in production, in one resumable command (#26).

torch, transformers, TRL and vLLM load only when a run trains, exports or gates.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import typer

from helpline.cli.output import console, json_stdout, print_json
from helpline.improve import ImproveOptions, improve, load_options, parse_duration, run_every, terminate_as_interrupt
from helpline.platform.context import Context

improve_app = typer.Typer()
EXIT = {"refused": 1, "rolled_back": 1}  # a candidate that did not make it, as a failed `eval gate` exits 1


@improve_app.command("improve")
def improve_command(
    every: str | None = typer.Option(
        None, "--every", help="Run again every DURATION (6h, 30m, 1h30m), one run at a time; Ctrl-C or SIGTERM stops."
    ),
    min_corrections: int = typer.Option(1, help="Do nothing (recorded) with fewer new staff corrections than this."),
    staff_facing: bool = typer.Option(False, help="The model answers staff: internal-passage turns may teach it."),
    heldout_share: float = typer.Option(0.2, help="Share of corrected conversations held out for the gate."),
    replay_rows: int = typer.Option(200, help="Rows of production's own training set mixed in (keeps old behaviour)."),
    sft_config: str = typer.Option("smollm2-135m-grounded-cpu", help="SFT preset (YAML file or shipped name)."),
    sft_steps: int | None = typer.Option(None, help="SFT steps (default: the preset's)."),
    sft_set: list[str] = typer.Option([], "--sft-set", help="KEY=VALUE override of the SFT preset (repeatable)."),
    pref_config: str = typer.Option("smollm2-135m-dpo-cpu", help="Preference preset (YAML file or shipped name)."),
    pref_steps: int | None = typer.Option(None, help="Preference steps (default: the preset's)."),
    pref_set: list[str] = typer.Option([], "--pref-set", help="KEY=VALUE override of the preference preset."),
    method: str = typer.Option("dpo", help="Preference method on the (correction, replaced draft) pairs: dpo or orpo."),
    gate_config: Path | None = typer.Option(None, help="Promotion gate YAML (default: helpline/evaluation/gate.yaml)."),
    gate_limit: int | None = typer.Option(None, help="Cases per gate suite (default: the gate config's)."),
    data_dir: Path = typer.Option(Path("../shared/data"), help="Folder the gate's data-driven suites read."),
    canary_share: float = typer.Option(10.0, help="Percent of new conversations the canary answers."),
    canary_wait: str = typer.Option(
        "0s", help="How long to watch the canary before leaving it running (0s: look once); the next run resumes it."
    ),
    canary_poll: str = typer.Option("1m", help="Time between two looks at the canary while watching."),
    skip_canary: bool = typer.Option(
        False, help="Promote right after the gate, with no canary: only for a workspace with no live traffic to split."
    ),
    abandon: bool = typer.Option(False, help="Give up the unfinished run (recorded) and start a new one."),
    seed: int = typer.Option(0, help="Seed of the split, the replay sample and training."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one object per run)."),
) -> None:
    """Collect new staff corrections and rated answers, train (SFT, then DPO/ORPO on the pairs), export, gate with
    the held-out corrections, canary, then promote or roll back. Killed at any step, running it again resumes."""
    options = load_options(
        min_corrections=min_corrections, staff_facing=staff_facing, heldout_share=heldout_share,
        replay_rows=replay_rows, sft_config=sft_config, sft_steps=sft_steps, sft_set=sft_set, pref_config=pref_config,
        pref_steps=pref_steps, pref_set=pref_set, method=method, gate_config=gate_config, gate_limit=gate_limit,
        data_dir=data_dir, canary_share=canary_share, canary_wait_s=parse_duration(canary_wait),
        canary_poll_s=parse_duration(canary_poll), skip_canary=skip_canary, abandon=abandon, seed=seed,
    )  # fmt: skip
    status = _run(options, every=parse_duration(every) if every else None, as_json=as_json)
    raise typer.Exit(EXIT.get(status, 0))


def _run(options: ImproveOptions, *, every: float | None, as_json: bool) -> str:
    """One run, or one every ``every`` seconds until Ctrl-C or SIGTERM; returns the last run's status."""
    ctx = Context.load()
    last: dict[str, Any] = {}

    def once() -> dict[str, Any]:
        try:
            with json_stdout(as_json):
                return improve(ctx, options, console=None if as_json else console)
        finally:
            options.abandon = False  # only the first run gives an unfinished one up

    def report(result: dict[str, Any]) -> None:
        last.clear()
        last.update(result)
        if as_json:
            print_json(result)
        else:
            _show(result)

    try:
        with terminate_as_interrupt():
            if every is None:
                report(once())
            else:
                run_every(once, every, wait=threading.Event().wait, report=report)
    except KeyboardInterrupt:
        console.print("stopped; `helpline improve` resumes the run where it stopped")
        raise typer.Exit(130) from None
    return str(last.get("status", ""))


def _show(result: dict[str, Any]) -> None:
    """A run's outcome and steps on the terminal."""
    if result.get("status") == "error":
        console.print(f"[red]run failed:[/] {result['error']} ({result.get('hint')}); the next run resumes it")
        return
    console.print(
        f"run {result['run']} ({'resumed' if result['resumed'] else 'new'}): [bold]{result['status']}[/]"
        + (f" ({result['reason']})" if result.get("reason") else ""),
        highlight=False,
    )
    for name, step in result["steps"].items():
        seconds = f"{step['seconds']:.1f} s" if step["seconds"] is not None else ""
        note = step["outputs"].get("skipped") or step["error"] or ""
        note = "" if note == result.get("reason") and name != "collect" else note  # said once is enough
        console.print(f"  {name:<17} {step['status']:<8} {seconds:>9}  {note}", highlight=False)
    gate = result.get("gate") or {}
    if gate.get("report"):
        console.print(f"gate: {'passed' if gate.get('passed') else 'FAILED'}; report {gate['report']}")
    console.print(f"candidate {result.get('candidate')}; production is {result.get('production')}")

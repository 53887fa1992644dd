"""`python -m helpline.bench.tracking`: what run tracking adds to one run, by part."""

from __future__ import annotations

import pytest


def test_the_tracking_bench_times_the_import_the_first_run_and_a_later_run() -> None:
    pytest.importorskip("mlflow")
    from helpline.bench.tracking import measure

    report = measure(runs=1, steps=3)
    parts = ("import_mlflow_s", "first_run_in_a_workspace_s", "later_run_s")
    assert all(0 < report[p]["min"] <= report[p]["median"] <= report[p]["max"] for p in parts)
    assert report["runs"] == 1 and report["steps_logged_per_run"] == 3

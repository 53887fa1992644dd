"""The fuzz section against an in-process gateway over fakes (a handful of examples: this proves the
wiring; `helpline bench reliability --section fuzz` runs the real numbers against `helpline run`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

from helpline.bench.reliability.fuzz import GUARDED, ROLES, run_fuzz
from helpline.testing.serving import Gateway, make_gateway, serve_in_thread


@contextmanager
def live(gateway: Gateway, workspace: Path) -> Iterator[SimpleNamespace]:
    with serve_in_thread(gateway.client.app) as port:
        yield SimpleNamespace(base_url=f"http://127.0.0.1:{port}", keys=gateway.keys, workspace=workspace)


def test_every_operation_is_fuzzed_without_a_server_error(tmp_path: Path) -> None:
    gateway = make_gateway(tmp_path)
    docs_before = {d.doc_id for d in gateway.kb.documents()}
    with live(gateway, tmp_path) as target:
        report = run_fuzz(target, max_examples=1, roles=("customer", "admin"))
    assert set(report["roles"]) == {"customer", "admin"} and set(ROLES) > {"customer", "admin"}
    assert report["server_errors"] == 0, [r["server_errors"] for r in report["roles"].values()]
    assert report["operations"] >= 30 and report["cases"] > report["operations"]
    customer, admin = report["roles"]["customer"], report["roles"]["admin"]
    assert customer["operations"] == report["operations"]  # refused keys fuzz even the guarded routes
    assert {s["operation"] for s in admin["skipped"]} >= {f"{g.method} {g.path}" for g in GUARDED}
    assert customer["statuses"]["403"] > 0 and admin["statuses"]["200"] > 0
    # what fuzzing added is gone, and the canary share is what it was
    assert {d.doc_id for d in gateway.kb.documents()} == docs_before
    assert report["cleanup"]["canary_share_restored"] == gateway.client.app.state.router.canary_share


def test_a_server_error_is_reported_with_the_smallest_request_that_causes_it(tmp_path: Path) -> None:
    gateway = make_gateway(tmp_path)

    def broken(n: int) -> dict:
        if n > 2:
            raise RuntimeError("a bug")
        return {"n": n}

    gateway.client.app.add_api_route("/v1/broken", broken, methods=["GET"])
    with live(gateway, tmp_path) as target:
        report = run_fuzz(target, max_examples=20, roles=("anonymous",), only=("GET /v1/broken", "GET /health"))
    assert report["operations"] == 2
    [error] = report["roles"]["anonymous"]["server_errors"]  # one fault, found by valid and invalid data
    assert (error["method"], error["path"], error["status"]) == ("GET", "/v1/broken", 500)
    assert error["query"] == {"n": 3}  # shrunk to the boundary
    assert "/v1/broken?n=3" in error["curl"] and error["request_id"] in error["response"]
    assert error["modes"] == ["negative", "positive"]
    assert report["server_errors"] == 1 and report["passed"] is False

"""What the gateway shows and to whom: API docs, model names, list limits, body limits, feedback
ownership, and an audit trail of refusals and failures that never holds a presented key."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from helpline.testing.serving import Gateway

RETURN_Q = "How do I return an item?"


def test_the_api_description_needs_an_engineer_key(gateway: Gateway) -> None:
    assert gateway.client.get("/openapi.json").status_code == 401
    assert gateway.client.get("/openapi.json", headers=gateway.headers("customer")).status_code == 403
    spec = gateway.client.get("/openapi.json", headers=gateway.headers("engineer"))
    assert spec.status_code == 200 and "/v1/chat/completions" in spec.json()["paths"]
    for page in ("/docs", "/redoc"):
        assert gateway.client.get(page).status_code in (401, 404)


def test_customers_see_only_the_public_model_names(gateway: Gateway) -> None:
    customer = gateway.client.get("/v1/models", headers=gateway.headers("customer")).json()
    assert [m["id"] for m in customer["data"]] == ["helpline-support"]
    staff = gateway.client.get("/v1/models", headers=gateway.headers("staff")).json()
    assert "fake-adapter" in [m["id"] for m in staff["data"]]


@pytest.mark.parametrize(
    ("path", "role"),
    [
        ("/admin/conversations?limit=-1", "staff"),
        ("/admin/conversations?limit=0", "staff"),
        ("/admin/conversations?limit=1001", "staff"),
        ("/admin/audit?limit=-1", "admin"),
        ("/admin/audit?limit=5001", "admin"),
    ],
)
def test_list_limits_outside_their_range_are_refused(gateway: Gateway, path: str, role: str) -> None:
    resp = gateway.client.get(path, headers=gateway.headers(role))
    assert resp.status_code == 400, resp.text
    assert "limit" in resp.json()["error"]["message"]


def test_a_chunked_body_over_the_limit_is_413(gateway: Gateway) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the size is only known while reading
        for _ in range(300):
            yield b"x" * 1024

    resp = gateway.client.post(
        "/v1/chat/completions",
        content=chunks(),
        headers={**gateway.headers("customer"), "content-type": "application/json"},
    )
    assert resp.status_code == 413, resp.text


def test_only_the_key_that_had_the_conversation_or_staff_may_rate_or_correct_it(gateway: Gateway) -> None:
    answer = gateway.chat("customer", RETURN_Q).json()
    other, _ = gateway.store.create_key("customer", name="another customer")
    feedback = {"response_id": answer["id"], "rating": "down", "comment": "spam"}
    resp = gateway.client.post("/v1/feedback", json=feedback, headers={"Authorization": f"Bearer {other}"})
    assert resp.status_code == 404
    assert gateway.store.turn(answer["id"]).get("rating") is None
    assert gateway.store.turns(rating="down") == []
    for role in ("customer", "staff"):
        assert gateway.client.post("/v1/feedback", json=feedback, headers=gateway.headers(role)).status_code == 200


def test_refusals_and_failed_actions_are_audited_without_the_presented_key(gateway: Gateway) -> None:
    bogus = "hl-not-a-real-key-but-a-secret-guess"
    assert gateway.client.get("/admin/keys", headers={"Authorization": f"Bearer {bogus}"}).status_code == 401
    assert gateway.client.get("/admin/keys", headers=gateway.headers("customer")).status_code == 403
    assert gateway.client.delete("/admin/keys/999", headers=gateway.headers("admin")).status_code == 404
    log = gateway.store.audit_log()
    denied = sorted((a["detail"]["status"], a["actor"].split(":")[0]) for a in log if a["action"] == "auth.denied")
    assert denied == [(401, "anonymous"), (403, "customer")]
    failed = [a for a in log if a["action"] == "request.failed"]
    assert len(failed) == 1 and failed[0]["target"] == "DELETE /admin/keys/999"
    assert failed[0]["detail"]["status"] == 404 and failed[0]["actor"].startswith("admin:")
    assert bogus not in json.dumps(log) and bogus[:10] not in json.dumps(log)


def test_a_nul_byte_in_a_file_name_or_report_path_is_a_clear_4xx(gateway: Gateway) -> None:
    """Found by fuzzing: both names reach the file system, which refuses a NUL byte with a ValueError (500)."""
    upload = gateway.client.post(
        "/console/kb/files?filename=%00&access=public", content=b"# Title\n\ntext", headers=gateway.headers("staff")
    )
    assert upload.status_code == 422, upload.text
    report = gateway.client.get("/console/reports/file?path=%00", headers=gateway.headers("engineer"))
    assert report.status_code == 404, report.text

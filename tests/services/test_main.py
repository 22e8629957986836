"""services/main.py, the composed app: an unknown route answers JSON, and the OpenAPI document
lists every endpoint.
"""

from __future__ import annotations


def _error(r, status: int, code: str, message: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code
    if message is not None:
        assert body["message"] == message


def test_unknown_route_is_json(client):
    _error(client.get("/api/v1/nothing"), 404, "not_found", "Not Found")


def test_openapi_documents_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/v1/health",
        "/api/v1/tiers",
        "/api/v1/tiers/{tier}/measurement",
        "/api/v1/submissions",
        "/api/v1/submissions/{submission_id}",
        "/api/v1/leaderboard",
        "/api/v1/admin/tiers/{tier}/dataset",
        "/api/v1/admin/submissions/{submission_id}/rescore",
        "/api/v1/admin/participants",
    ):
        assert path in paths, path
    assert client.get("/docs").status_code == 200

"""Requests that used to be a 500 (issues 15 and 22), each with its own regression test, and
the shape every error keeps: JSON ``{"error": {"code", "message"}}``, an ``X-Request-ID`` on
every response, and for an unexpected error a 500 carrying that id and a log line with it.

Most go over real HTTP to the API as production runs it (``edx-arena serve``), so what the
server receives is the raw bytes a hostile client sends, not what a test client re-encodes.
"""

from __future__ import annotations

import io
import json
import logging
from types import SimpleNamespace

import httpx
import pytest
from arena_testing import ORG, add_participant, serve_api
from database_testing import drop_backend, make_backend
from fastapi.testclient import TestClient

from harness.errors import ImageError

#: A participant's raw latin-1 token bytes: "été" (0xE9 74 0xE9).
LATIN1_TOKEN = b"\xe9t\xe9"


def _error(r: httpx.Response, status: int, code: str, message: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()["error"]
    assert body["code"] == code, body
    if message is not None:
        assert body["message"] == message, body["message"]
    return body


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The API over HTTP on SQLite, the Hidden tier seeded; yields (base url, alice's headers)."""
    from services.main import app

    tmp = tmp_path_factory.mktemp("hostile")
    with pytest.MonkeyPatch.context() as mp:
        _backend, db_name = make_backend("sqlite", tmp, mp)
        try:
            with TestClient(app) as client:
                r = client.post("/api/v1/admin/tiers/hidden/dataset", json={"seed": 5, "preset": "small"}, headers=ORG)
                assert r.status_code == 201, r.text
                alice = add_participant(client, "alice")
            with serve_api(tmp / "api.log") as base:
                yield SimpleNamespace(base=base, alice=alice, log=tmp / "api.log")
        finally:
            drop_backend(db_name)


# -- issue 22: GET /admin/runs?older_than_minutes=3.87e+280 overflowed timedelta -----------------


def test_runs_window_beyond_the_schema_bound_is_422(live):
    with httpx.Client(base_url=live.base, headers=ORG) as http:
        body = _error(
            http.get("/api/v1/admin/runs", params={"older_than_minutes": "3.874562463791112e+280", "state": "retried"}),
            422,
            "invalid_request",
        )
        assert body["message"].startswith("older_than_minutes: Input should be less than or equal to ")
        for value in ("inf", "nan", "-1", "0"):
            _error(
                http.get("/api/v1/admin/runs", params={"older_than_minutes": value, "state": "stuck"}),
                422,
                "invalid_request",
            )
        # The bound the schema publishes is accepted.
        bound = http.get("/openapi.json").json()["paths"]["/api/v1/admin/runs"]["get"]["parameters"]
        maximum = next(p for p in bound if p["name"] == "older_than_minutes")["schema"]["anyOf"][0]["maximum"]
        r = http.get("/api/v1/admin/runs", params={"older_than_minutes": maximum, "state": "stuck"})
        assert r.status_code == 200 and r.json() == {"data": [], "count": 0}, r.text


def test_numbers_past_the_database_range_are_422(live):
    """Row ids are 32-bit keys and a board has under a million pages: larger numbers were a 500
    (SQLite's driver overflowed) and are now refused by the schema."""
    huge = str(2**80)
    with httpx.Client(base_url=live.base, headers=ORG) as http:
        _error(http.delete(f"/api/v1/admin/tokens/{huge}"), 422, "invalid_request")
        _error(http.post(f"/api/v1/admin/participants/{2**31}/tokens"), 422, "invalid_request")
        _error(http.get("/api/v1/leaderboard", params={"page": huge}), 422, "invalid_request")
        _error(http.get("/", params={"page": huge}), 422, "invalid_request")  # the web page, same bound
        _error(http.delete(f"/api/v1/admin/tokens/{2**31 - 1}"), 404, "not_found")


# -- issue 15: a non-ASCII bearer token made hmac.compare_digest raise ---------------------------


def test_non_ascii_bearer_token_is_401(live):
    header = {"Authorization": b"Bearer " + LATIN1_TOKEN}  # bytes: httpx sends them as they are
    with httpx.Client(base_url=live.base) as http:
        for method, path in (
            ("GET", "/api/v1/submissions/abc"),
            ("GET", "/api/v1/submissions/abc/provenance"),  # optional viewer: a bad token is still refused
            ("GET", "/api/v1/admin/participants"),
            ("POST", "/api/v1/submissions/container"),
        ):
            _error(
                http.request(method, path, headers=header, json={"image": "x"}), 401, "unauthorized", "invalid token"
            )
        # A page reads the same token from the header or the session cookie.
        _error(http.get("/submissions/abc", headers=header), 401, "unauthorized")
        r = http.get("/submissions/abc", headers={"Cookie": b"edx_token=" + LATIN1_TOKEN})
        _error(r, 401, "unauthorized")
        # The same requests with a good token pass, so the 401 above is about the bytes.
        assert http.get("/api/v1/admin/participants", headers=ORG).status_code == 200


# -- request ids and the last-resort 500 --------------------------------------------------------


def test_every_response_carries_a_request_id(live):
    with httpx.Client(base_url=live.base) as http:
        assert http.get("/api/v1/health", headers={"X-Request-ID": "lb-1f2e.3:4_5"}).headers["x-request-id"] == (
            "lb-1f2e.3:4_5"
        )
        for insane in (b"two words", b"x" * 129, b"\xe9t\xe9", b"a\tb"):
            rid = http.get("/api/v1/health", headers={"X-Request-ID": insane}).headers["x-request-id"]
            assert len(rid) == 32 and rid.isalnum(), rid
        first = http.get("/api/v1/leaderboard").headers["x-request-id"]
        assert http.get("/api/v1/leaderboard").headers["x-request-id"] != first  # not replayed from the cache
        r = http.get("/api/v1/submissions/abc")  # an error response too
        assert r.status_code == 401 and len(r.headers["x-request-id"]) == 32


def test_an_unexpected_error_is_a_json_500_with_its_request_id(backend):
    """No handler maps a RuntimeError: the client gets the JSON shape with the id it can quote,
    and the log has one ERROR line with the traceback under the same id."""
    from services.logs import formatter
    from services.main import create_app

    app = create_app()

    @app.get("/api/v1/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter("json"))
    logger = logging.getLogger("services.api.request_id")
    logger.addHandler(handler)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            r = client.get("/api/v1/boom", headers={"X-Request-ID": "support-42"})
            anonymous = client.get("/api/v1/boom")
    finally:
        logger.removeHandler(handler)
    body = _error(r, 500, "internal_error")
    assert body["request_id"] == "support-42" == r.headers["x-request-id"]
    assert "support-42" in body["message"] and "a bug" not in r.text  # the id, never the internals
    assert _error(anonymous, 500, "internal_error")["request_id"] == anonymous.headers["x-request-id"]
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["level"], e["request_id"]) for e in lines] == [
        ("ERROR", "support-42"),
        ("ERROR", anonymous.headers["x-request-id"]),
    ]
    assert "RuntimeError: a bug" in lines[0]["exception"] and "/api/v1/boom" in lines[0]["message"]


# -- found by the fuzzer: image names the daemon refuses; NUL characters PostgreSQL refuses -------


def test_image_names_docker_refuses_are_422(live):
    with httpx.Client(base_url=live.base, headers=live.alice) as http:
        for image, why in (
            ("0" * 300, "its name is over 255 characters"),
            ("solver:1\n", "is not a valid image reference"),
            ("solver:\u00e9t\u00e9", "is not a valid image reference"),
        ):
            body = _error(http.post("/api/v1/submissions/container", json={"image": image}), 422, "image_invalid")
            assert why in body["message"], body


@pytest.mark.docker
def test_a_reference_the_daemon_refuses_is_an_image_error():
    """A lookup the daemon answers with a 4xx other than 404 is the participant's reference, not a platform fault."""
    from harness.sandbox.runner import inspect_image

    with pytest.raises(ImageError, match="cannot look up"):
        inspect_image("a" * 300)


def test_nul_characters_are_refused_not_a_500(seeded, backend):
    """PostgreSQL refuses NUL in text (SQLite stores it): whatever reaches the database with one
    is a 422, and a submission's text fields say which field before the upload is read."""
    alice = add_participant(seeded, "alice")
    team = seeded.post("/api/v1/admin/participants", json={"name": "bob", "team": "a\x00b"}, headers=ORG)
    lookup = seeded.get("/api/v1/submissions/%00abc", headers=alice)
    if backend.kind == "postgres":
        _error(
            team,
            422,
            "invalid_request",
            "a value in the request cannot be stored (a NUL character, or a number out of range)",
        )
        _error(lookup, 422, "invalid_request")
    else:
        assert team.status_code == 201, team.text
        _error(lookup, 404, "not_found")
    _error(
        seeded.post(
            "/api/v1/submissions",
            data={"tier": "public", "method": "a\x00b"},
            files={"file": ("r.h5", b"x")},
            headers=alice,
        ),
        400,
        "bad_request",
        "method contains a NUL character",
    )

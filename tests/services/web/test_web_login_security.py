"""Sign-in hardening: the session cookie's Secure flag is a setting (EDX_COOKIE_SECURE, on in
production whatever scheme the server sees behind its TLS proxy), both cookies are SameSite=Strict,
and /login refuses a post without the form's CSRF pair (login CSRF)."""

from __future__ import annotations

import re

import pytest
from arena_testing import add_participant, sign_in
from database_testing import reset_caches

from services.web.routes import COOKIE_NAME

CSRF_COOKIE = "edx_csrf"  # the documented name (services.web.routes.CSRF_COOKIE)

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
SIGNED_IN = "this sign-in form has expired or was not sent from this site; sign in again"


def _token(headers: dict) -> str:
    return headers["Authorization"].split(" ", 1)[1]


def _cookies(response) -> dict[str, str]:
    """Set-Cookie headers by cookie name."""
    return {h.split("=", 1)[0]: h for h in response.headers.get_list("set-cookie")}


def _form_csrf(client) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)


def test_a_post_without_the_csrf_pair_signs_nobody_in(client):
    alice = _token(add_participant(client, "alice"))
    # A cross-site form: no CSRF cookie comes with it (SameSite=Strict), whatever field it sends.
    for data in ({"token": alice}, {"token": alice, "csrf": "x" * 43}):
        client.cookies.clear()
        r = client.post("/login", data=data, follow_redirects=False)
        assert r.status_code == 403 and SIGNED_IN in r.text, r.text
        assert COOKIE_NAME not in _cookies(r)
    # The cookie, but not its value in the form (or a value no browser would send).
    for field in ("", "y" * 43, "é" * 43):
        client.cookies.clear()
        _form_csrf(client)
        r = client.post("/login", data={"token": alice, "csrf": field}, follow_redirects=False)
        assert r.status_code == 403 and SIGNED_IN in r.text and COOKIE_NAME not in _cookies(r)
    # The page's own form: signed in.
    client.cookies.clear()
    r = sign_in(client, alice, "/tiers")
    assert r.status_code == 303 and r.headers["location"] == "/tiers"
    assert _cookies(r)[COOKIE_NAME].startswith(f"{COOKIE_NAME}={alice};")


def test_the_csrf_cookie_is_strict_and_stays_on_login(client):
    form = client.get("/login")
    cookie = _cookies(form)[CSRF_COOKIE]
    value = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    assert cookie.startswith(f"{CSRF_COOKIE}={value};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/login" in cookie
    # The same token on the next form (two tabs both work); a bad cookie is replaced.
    assert _form_csrf(client) == value
    client.cookies.set(CSRF_COOKIE, "short", path="/login")
    assert len(_form_csrf(client)) == 43 and _form_csrf(client) != "short"


@pytest.mark.parametrize(
    ("environment", "setting", "secure"),
    [
        ("production", None, True),  # the default behind a TLS proxy: the server sees http
        ("development", None, False),
        ("development", "true", True),
        ("production", "false", False),
    ],
)
def test_secure_follows_the_setting_not_the_scheme(client, monkeypatch, environment, setting, secure):
    alice = _token(add_participant(client, "alice"))
    monkeypatch.setenv("EDX_ENVIRONMENT", environment)
    if setting is None:
        monkeypatch.delenv("EDX_COOKIE_SECURE", raising=False)
    else:
        monkeypatch.setenv("EDX_COOKIE_SECURE", setting)
    reset_caches()
    form = client.get("/login")  # over plain http, as behind the proxy
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    # Sent by hand: the test client keeps a Secure cookie off plain http, as a browser would.
    r = client.post(
        "/login",
        data={"token": alice, "csrf": csrf},
        headers={"cookie": f"{CSRF_COOKIE}={csrf}"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    for cookie in (_cookies(form)[CSRF_COOKIE], _cookies(r)[COOKIE_NAME]):
        assert ("; secure" in cookie.lower()) is secure, cookie
        assert "SameSite=strict" in cookie

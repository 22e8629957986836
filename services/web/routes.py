"""Server-rendered pages (Jinja2, autoescaped) and PNG pictures.

Routes are thin: each parses the request, calls the same domain functions as the REST API
(:func:`services.leaderboard.leaderboard`, :mod:`services.access` for what a viewer may see,
:func:`services.datasets.list_tiers`) or :mod:`services.web.pictures`, and renders a template.

**How a browser signs in.** ``GET /login`` shows a form for the participant's API token;
``POST /login`` checks it with :func:`services.auth.authenticate` and stores it in a cookie
``edx_token`` (HttpOnly, so page scripts can't read it; SameSite=Strict, so no request another
site starts carries it; Secure per ``EDX_COOKIE_SECURE``, on in production, because behind a
TLS proxy the server itself may only see http; 30 days), then redirects to the page asked for.
``POST /logout`` removes it. Pages also accept ``Authorization: Bearer``.

**Login CSRF.** Another site could post its own author's token to ``/login`` and so sign a
visitor in as that author (whatever the visitor then looks at is the attacker's account). So
the form carries a random token that must equal the ``edx_csrf`` cookie set with it
(double submit: HttpOnly, SameSite=Strict, path ``/login``); another site can neither read
the cookie nor make the browser send it, and a post without the pair is refused (403).
A ``?token=`` query parameter is deliberately not accepted: it would end up in browser
history, proxy logs and ``Referer`` headers. The token is checked on every request, so a
revoked or expired token stops working at once.

Errors on a page are an HTML page with the error's status and message when the browser asks for
HTML, and the API's JSON ``{"error": {"code", "message"}}`` otherwise; both come from
:func:`services.errors.describe`, the mapping the API uses.
"""

from __future__ import annotations

import hmac
import math
import secrets
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import jinja2
from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from core.settings import get_settings
from db.models import Participant, Score
from harness.errors import EdxArenaError
from harness.forward import LINES
from harness.scoring import SCORER_VERSION
from harness.tiers import BLIND_TIERS, TIER_RANGES, TIER_RULES
from services.access import (
    get_submission,
    shows_true_spec,
    submission_pictures,
    visible_duplicate,
    visible_figures,
    visible_log,
)
from services.auth import authenticate
from services.datasets import list_tiers, scene_ids
from services.deps import SessionDep
from services.errors import AuthError, NotFoundError, ServiceError, describe
from services.leaderboard import MAX_PAGE, MAX_PER_PAGE, leaderboard
from services.metadata import artifact_runs, current_tier_row, is_certified
from services.web import pictures

__all__ = ["BOARD_TABS", "COOKIE_NAME", "CSRF_COOKIE", "router"]

_HERE = Path(__file__).parent
COOKIE_NAME = "edx_token"
CSRF_COOKIE = "edx_csrf"
_CSRF_SECONDS = 3600
_COOKIE_SECONDS = 30 * 24 * 3600
#: Leaderboard tabs in display order: (board, label, one-line description).
BOARD_TABS = (
    ("overall", "Overall", "methods by the mean of their Public, Dev and Hidden scores; complete methods only"),
    (
        "certified",
        "Certified",
        "methods whose three tier scores are the server's runs of one image or script; each by its best such artifact",
    ),
    ("public", "Public", "scored against the published truth"),
    ("dev", "Dev", "scored server-side against hidden truth"),
    ("hidden", "Hidden", "containers and scripts run by the server on unseen data"),
    ("standard", "Standard", "standard track: nominal spec, forward model known, standard formula"),
)
_PICTURE_HEADERS = {"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"}


class _PageRoute(APIRoute):
    """Service and request errors of a page become an HTML error page for browsers."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except (ServiceError, EdxArenaError, RequestValidationError) as exc:
                problem = describe(exc)
                assert problem is not None  # describe covers each of these classes
                if "text/html" not in request.headers.get("accept", ""):
                    return JSONResponse(status_code=problem.status, content=problem.body())
                if problem.status == 401:
                    return _login_page(request, next_url=_here(request), message=problem.message, status=401)
                return templates.TemplateResponse(
                    request,
                    "error.html",
                    {"status": problem.status, "code": problem.code, "message": problem.message, "viewer": None},
                    status_code=problem.status,
                )

        return guarded


router = APIRouter(tags=["web"], route_class=_PageRoute, include_in_schema=False)


# -- template helpers ------------------------------------------------------------------------


def _is_http(url: str | None) -> bool:
    """Only http(s) sources become links: ``javascript:``, ``data:`` and the rest stay text."""
    if not url:
        return False
    parts = urlsplit(url.strip())
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def _half_width(low: float | None, high: float | None) -> float | None:
    """Half the interval's width, ``(ci_high − ci_low) / 2``: the "±" shown after a score."""
    if low is None or high is None:
        return None
    return (high - low) / 2


def _bytes(n: int | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _date(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d") if value else "–"


def _datetime(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "–"


# Autoescape on for every template, whatever its name: participant text is never markup.
templates = Jinja2Templates(
    env=jinja2.Environment(loader=jinja2.FileSystemLoader(_HERE / "templates"), autoescape=True)
)
templates.env.filters.update(num=_num, bytes=_bytes, date=_date, datetime=_datetime)
templates.env.globals.update(is_http=_is_http, half_width=_half_width, scorer_version=SCORER_VERSION)


# -- who is looking ----------------------------------------------------------------------------


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer " and header[7:].strip():
        return header[7:].strip()
    return request.cookies.get(COOKIE_NAME) or None


def _viewer(request: Request, session) -> Participant | None:
    """The signed-in participant, or None (no token, or one no longer valid)."""
    token = _token(request)
    if token is None:
        return None
    try:
        return authenticate(session, token)
    except AuthError:
        return None


def _signed_in(request: Request, session) -> Participant:
    viewer = _viewer(request, session)
    if viewer is None:
        message = "sign in with your API token to see this page"
        if _token(request) is not None:
            message = "your token is no longer valid (revoked or expired); sign in again"
        raise AuthError(message)
    return viewer


def _here(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def _safe_next(url: str | None) -> str:
    """Only a path on this site: ``//evil.example`` or ``https://…`` would be an open redirect."""
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return "/"
    return url


def _login_page(request: Request, *, next_url: str, message: str = "", status: int = 200) -> HTMLResponse:
    """The sign-in form, with a CSRF token in a hidden field and in the ``edx_csrf`` cookie."""
    csrf = request.cookies.get(CSRF_COOKIE, "")
    if len(csrf) != 43 or not csrf.isascii():  # secrets.token_urlsafe(32); anything else is replaced
        csrf = secrets.token_urlsafe(32)
    response = templates.TemplateResponse(
        request,
        "login.html",
        {"next": _safe_next(next_url), "message": message, "viewer": None, "csrf": csrf},
        status_code=status,
    )
    response.set_cookie(
        CSRF_COOKIE,
        csrf,
        max_age=_CSRF_SECONDS,
        httponly=True,
        samesite="strict",
        secure=get_settings().cookie_secure,
        path="/login",
    )
    return response


# -- pages -------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def leaderboard_page(
    request: Request,
    session: SessionDep,
    board: Annotated[str | None, Query(description="overall, public, dev, hidden or standard")] = None,
    tier: Annotated[str | None, Query(description="the API's name for board")] = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    per_page: Annotated[int, Query(ge=1, le=MAX_PER_PAGE)] = 50,
) -> HTMLResponse:
    """The leaderboard: one tab per board (``?board=``), ranks with ties, badges, intervals."""
    board = board or tier or "overall"
    # The Certified tab is the overall board's certified view (the API's ?certified=true).
    certified_only = board == "certified"
    entries, count = leaderboard(
        session,
        board="overall" if certified_only else board,
        page=page,
        per_page=per_page,
        certified_only=certified_only,
    )
    ranks = [e.rank for e in entries if e.rank is not None]
    shared = {r for r in ranks if ranks.count(r) > 1}
    pages = max(1, math.ceil(count / per_page))
    return templates.TemplateResponse(
        request,
        "leaderboard.html",
        {
            "viewer": _viewer(request, session),
            "board": board,
            "overall": board in ("overall", "certified"),
            "export_query": "tier=overall&certified=true" if certified_only else f"tier={board}",
            "tabs": BOARD_TABS,
            "entries": entries,
            "count": count,
            "shared_ranks": shared,
            "page": page,
            "pages": pages,
            "per_page": per_page,
            "tiers": BLIND_TIERS,
            "description": dict((b, d) for b, _, d in BOARD_TABS)[board],
        },
    )


@router.get("/tiers", response_class=HTMLResponse)
def tiers_page(request: Request, session: SessionDep) -> HTMLResponse:
    """The tiers: what each publishes, its ranges, downloads and pictures, and the scoring rules."""
    tiers = [
        {
            "info": info,
            "rules": TIER_RULES[info.name],
            "scenes": info.scenes,
            "truth": info.truth_in_view,
            "spectrum": info.pictured,
        }
        for info in list_tiers(session)
    ]
    return templates.TemplateResponse(
        request,
        "tiers.html",
        {
            "viewer": _viewer(request, session),
            "tiers": tiers,
            "ranges": TIER_RANGES,
            "lines": LINES,
        },
    )


@router.get("/scoring")
def scoring_page() -> RedirectResponse:
    """The scoring rules are a section of the tiers page."""
    return RedirectResponse("/tiers#scoring", status_code=307)


@router.get("/submissions/{submission_id}", response_class=HTMLResponse)
def submission_page(submission_id: str, request: Request, session: SessionDep) -> HTMLResponse:
    """A submission for its owner (or an organizer): stage, outcome, run, log, scores, pictures."""
    viewer = _signed_in(request, session)
    submission = get_submission(session, submission_id=submission_id, viewer=viewer)
    rows = session.scalars(select(Score).where(Score.submission_id == submission.id).order_by(Score.id)).all()
    versions = list(dict.fromkeys(r.scoring_version for r in rows))
    shown = SCORER_VERSION if SCORER_VERSION in versions else (versions[-1] if versions else None)
    current = [r for r in rows if r.scoring_version == shown]
    maps_ok, error_ok = submission_pictures(submission)
    # A Hidden image or script runs on every blind tier: its runs are shown together.
    tier_runs = [
        (run, current_tier_row(session, run.id), visible_figures(run, viewer), is_certified(run))
        for run in artifact_runs(submission)
    ]
    return templates.TemplateResponse(
        request,
        "submission.html",
        {
            "viewer": viewer,
            "s": submission,
            "tier_runs": tier_runs,
            "log": visible_log(submission, viewer),
            "figures": visible_figures(submission, viewer),
            "true_spec": shows_true_spec(submission, viewer),
            "duplicate_of": visible_duplicate(submission, viewer),
            "tier_row": next((r for r in current if r.scene_id == ""), None),
            "scene_rows": [r for r in current if r.scene_id != ""],
            "shown_version": shown,
            "other_versions": [v for v in versions if v != shown],
            "scenes": scene_ids(submission.dataset),
            "maps_ok": maps_ok,
            "error_ok": error_ok,
            "stages": ("queued", "running", "scoring", "scored"),
        },
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> HTMLResponse:
    return _login_page(request, next_url=next)


@router.post("/login")
def login(
    request: Request,
    session: SessionDep,
    token: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Check the form's CSRF pair, then the token, and keep the token in an HttpOnly cookie; a
    bad pair re-shows the form (403), as does a bad token (401)."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not (csrf and cookie and hmac.compare_digest(csrf.encode(), cookie.encode())):
        message = "this sign-in form has expired or was not sent from this site; sign in again"
        return _login_page(request, next_url=next, message=message, status=403)
    token = token.strip()
    try:
        authenticate(session, token)
    except AuthError as exc:
        return _login_page(request, next_url=next, message=exc.message, status=401)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=_COOKIE_SECONDS,
        httponly=True,
        samesite="strict",
        secure=get_settings().cookie_secure,
        path="/",
    )
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict", secure=get_settings().cookie_secure)
    return response


@router.get("/static/{name}")
def static_file(name: str) -> FileResponse:
    path = _HERE / "static" / name
    if "/" in name or name.startswith(".") or not path.is_file():
        raise NotFoundError(f"no static file {name!r}")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})


# -- pictures ----------------------------------------------------------------------------------


@router.get("/tiers/{tier}/scenes/{scene}/{picture}.png", response_class=Response)
def tier_picture(tier: str, scene: str, picture: str, session: SessionDep) -> Response:
    """``maps.png`` (truth maps: Public, and Standard when its download has the truth) or
    ``spectrum.png`` (mean spectrum with element lines; not Hidden)."""
    png = pictures.tier_picture(session, tier=tier, scene=scene, picture=picture)
    return Response(png, media_type="image/png", headers=_PICTURE_HEADERS)


@router.get("/submissions/{submission_id}/scenes/{scene}/{picture}.png", response_class=Response)
def submission_picture(submission_id: str, scene: str, picture: str, request: Request, session: SessionDep) -> Response:
    """``maps.png`` (the participant's x̂) or ``error.png`` (|x̂ − x|, Public only); owner or organizer."""
    viewer = _signed_in(request, session)
    png = pictures.submission_picture(session, submission_id=submission_id, viewer=viewer, scene=scene, picture=picture)
    return Response(png, media_type="image/png", headers=_PICTURE_HEADERS)

"""services/web/routes.py: the server-rendered pages (boards, sign-in, a submission, the tiers)
over the real ASGI stack: ranks, badges, ties, escaping, the HttpOnly cookie, errors as HTML
for browsers.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from arena_testing import ORG, add_participant, add_scored, download_and_solve, sign_in
from matplotlib.image import imread

from db.models import Dataset, Participant, Submission
from db.session import new_session
from harness.scoring import SCORER_VERSION
from services.submissions.scoring import score_submission
from services.submissions.state import claim
from services.web.routes import COOKIE_NAME

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)


HTML = {"Accept": "text/html"}


XSS = "<script>alert('x')</script>"


def _row(
    session,
    dataset,
    who,
    score,
    *,
    minutes,
    method,
    description="",
    source="",
    baseline=False,
    ci=(None, None),
    kind="hdf5",
):
    return add_scored(
        session,
        dataset,
        who,
        score,
        created_at=T0 + timedelta(minutes=minutes),
        started_at=T0,
        method=method,
        kind=kind,
        description=description,
        source=source,
        baseline=baseline,
        ci=ci,
    )


@pytest.fixture
def boards(client):
    """Three tiers with a baseline, an escaped method name, shared ranks and intervals."""
    with new_session() as s:
        ds = {
            t: Dataset(
                tier=t, content_hash="h" * 64, operator_version="v", preset="small", full_path="-", view_path="-"
            )
            for t in ("public", "dev", "hidden", "standard")
        }
        s.add_all(ds.values())
        people = {n: Participant(name=n, team=f"team {n}") for n in ("ann", "ben", "cat", "org")}
        s.add_all(people.values())
        s.flush()
        for i, tier in enumerate(("public", "dev", "hidden")):
            kind = "container" if tier == "hidden" else "hdf5"
            _row(
                s,
                ds[tier],
                people["ann"],
                0.7,
                minutes=i,
                method=XSS,
                description="<b>bold</b>\nline two",
                source="https://example.org/paper?a=1&b=2",
                ci=(0.66, 0.74),
                kind=kind,
            )
            _row(
                s,
                ds[tier],
                people["ben"],
                0.7,
                minutes=10 + i,
                method="ben's TV",
                source="javascript:alert(1)",
                kind=kind,
            )
            _row(s, ds[tier], people["cat"], 0.5, minutes=15 + i, method="cat NMF", source="doi:10.1000/xyz", kind=kind)
            _row(s, ds[tier], people["org"], 0.9, minutes=20 + i, method="reference MLEM", baseline=True, kind=kind)
        _row(s, ds["standard"], people["ben"], 0.55, minutes=30, method="std-solver")
        s.commit()
    return client


def _rows(html: str) -> list[str]:
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr\b.*?</tr>", body, flags=re.S)


def _token(headers: dict) -> str:
    return headers["Authorization"].split(" ", 1)[1]


def _scored(client, tmp_path, tier: str, who: dict, method: str = "nnls") -> str:
    result = download_and_solve(client, tier, tmp_path)
    r = client.post(
        "/api/v1/submissions",
        data={"tier": tier, "method": method, "source": "https://example.org/m"},
        files={"file": ("r.h5", result.read_bytes())},
        headers=who,
    )
    assert r.status_code == 202, r.text
    sid = r.json()["id"]
    with new_session() as s:
        score_submission(s, claim(s, sid, worker="test"))
    return sid


def test_tier_board_ranks_badges_and_escaping(boards):
    r = boards.get("/", params={"board": "public"})
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    html = r.text
    assert 'class="tab active" aria-current="page" data-board="public"' in html
    org, ann, ben, cat = _rows(html)
    # The baseline: shown first at its score, marked, without a rank.
    assert "reference MLEM" in org and 'class="badge baseline"' in org and 'title="baselines are not ranked"' in org
    # Equal scores share a rank, shown "=1"; the next rank is 3.
    assert (
        '<span class="rank">=1</span>' in ann
        and '<span class="rank">=1</span>' in ben
        and '<span class="rank">3</span>' in cat
    )
    # Participant text is escaped, never markup.
    assert XSS not in html and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in ann
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in ann
    # Score ± half-width of the interval; no ± without one.
    assert '0.700</span><span class="pm"' in ann and "± 0.040" in ann and "±" not in cat
    # Sources: http(s) linkified (escaped), anything else plain text.
    assert '<a href="https://example.org/paper?a=1&amp;b=2" rel="nofollow noopener noreferrer"' in ann
    assert "javascript:alert(1)" in ben and 'href="javascript' not in html
    assert '<span class="citation">doi:10.1000/xyz</span>' in cat
    assert "2026-11-01" in ann and "team ann" in ann
    assert "Certified" not in "".join(_rows(html))  # a Public score is never certified


def test_hidden_board_shows_certified_and_standard_board_exists(boards):
    hidden = boards.get("/", params={"board": "hidden"}).text
    assert all('class="badge certified"' in row for row in _rows(hidden))
    standard = boards.get("/", params={"tier": "standard"}).text  # the API's parameter name works too
    (row,) = _rows(standard)
    assert "std-solver" in row and '<span class="rank">1</span>' in row
    assert 'data-board="standard"' in standard and "standard track" in standard


def test_overall_board_shows_each_tier_side_by_side(boards):
    html = boards.get("/").text  # the default tab
    assert 'class="tab active" aria-current="page" data-board="overall"' in html
    assert html.count('<th colspan="3" class="group">') == 3
    _org, ann, _ben, cat = _rows(html)
    assert ann.count("0.700") >= 3 and "± 0.040" in ann  # tier columns carry their intervals
    assert '<span class="rank">3</span>' in cat


def test_tie_groups_are_marked(boards):
    with new_session() as s:
        s.add(Participant(name="dan", team="dan"))
        s.commit()
    from services.leaderboard import Entry
    from services.web.routes import templates

    entry = Entry(
        rank=2,
        participant="dan",
        team="dan",
        method="m",
        source="",
        score=0.5,
        psnr=20.0,
        ssim=0.5,
        certified=False,
        submission_id="x",
        submitted_at=T0,
        ci_low=0.4,
        ci_high=0.6,
        tie_group=2,
    )
    html = templates.get_template("leaderboard.html").render(
        viewer=None,
        board="dev",
        tabs=(("dev", "Dev", "d"),),
        entries=[entry],
        count=1,
        shared_ranks=set(),
        page=1,
        pages=1,
        per_page=50,
        tiers=(),
        description="d",
    )
    (row,) = _rows(html)
    assert 'class="badge tie"' in row and "tie 2" in row and "is-tied" in row and "± 0.100" in row


def test_empty_and_bad_boards(client):
    html = client.get("/", params={"board": "dev"}).text
    assert "No scored entries on this board yet" in html
    r = client.get("/", params={"board": "nope"}, headers=HTML)
    assert r.status_code == 400 and "unknown leaderboard &#39;nope&#39;" in r.text
    r = client.get("/", params={"board": "nope"})  # not a browser: the API's JSON error
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = client.get("/", params={"page": 0}, headers=HTML)
    assert r.status_code == 422 and "page" in r.text
    assert client.get("/", params={"board": "dev", "page": 3}).status_code == 200  # past the end: empty page
    assert client.get("/scoring", follow_redirects=False).headers["location"] == "/tiers#scoring"
    css = client.get("/static/style.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert client.get("/static/..%2Froutes.py").status_code == 404
    assert client.get("/static/nope.css").status_code == 404


def test_sign_in_sets_an_httponly_cookie_and_guards_the_page(seeded, tmp_path):
    alice, bob = add_participant(seeded, "alice"), add_participant(seeded, "bob")
    sid = _scored(seeded, tmp_path, "public", alice, method=XSS)
    # Not signed in: the sign-in form (401) that comes back to this page.
    r = seeded.get(f"/submissions/{sid}", headers=HTML)
    assert r.status_code == 401 and 'name="token"' in r.text and f'value="/submissions/{sid}"' in r.text
    # A wrong token: the form again, with the reason; no cookie.
    r = sign_in(seeded, "wrong", f"/submissions/{sid}")
    assert r.status_code == 401 and "invalid token" in r.text and f"{COOKIE_NAME}=" not in r.headers["set-cookie"]
    # The right one: a cookie only the server reads, and back to the page asked for.
    r = sign_in(seeded, _token(alice), f"/submissions/{sid}")
    assert r.status_code == 303 and r.headers["location"] == f"/submissions/{sid}"
    cookie = r.headers["set-cookie"]
    assert (
        cookie.startswith(f"{COOKIE_NAME}=")
        and "HttpOnly" in cookie
        and "SameSite=strict" in cookie
        and "Path=/" in cookie
    )
    page = seeded.get(f"/submissions/{sid}")
    assert page.status_code == 200 and "Signed in as <strong>alice</strong>" in page.text
    # On the board, her own entry links to its page; nobody else's does.
    board = seeded.get("/", params={"board": "public"}).text
    assert f'<a class="method-name" href="/submissions/{sid}"' in board
    seeded.cookies.clear()
    assert f'href="/submissions/{sid}"' not in seeded.get("/", params={"board": "public"}, headers=bob).text
    # Another participant's submission is a 404, as for a missing id.
    seeded.cookies.clear()
    r = seeded.get(f"/submissions/{sid}", headers={**bob, **HTML})
    assert r.status_code == 404 and "no submission" in r.text
    # Sign-in never redirects off the site.
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        r = sign_in(seeded, _token(bob), target)
        assert r.headers["location"] == "/"
    r = seeded.post("/logout", follow_redirects=False)
    assert r.status_code == 303 and f'{COOKIE_NAME}=""' in r.headers["set-cookie"]
    # A token that is no longer valid is refused at once.
    seeded.cookies.set(COOKIE_NAME, "revoked-or-unknown")
    r = seeded.get(f"/submissions/{sid}", headers=HTML)
    assert r.status_code == 401 and "no longer valid" in r.text


def test_submission_page_shows_run_scores_and_pictures(seeded, tmp_path):
    alice = add_participant(seeded, "alice")
    sid = _scored(seeded, tmp_path, "public", alice, method=XSS)
    html = seeded.get(f"/submissions/{sid}", headers=alice).text
    assert XSS not in html and "&lt;script&gt;" in html
    assert 'class="status status-scored">scored<' in html and "<dt>Outcome</dt><dd>succeeded</dd>" in html
    assert "<dt>Peak memory</dt>" in html and "<dt>Runtime</dt>" in html
    assert '<a href="https://example.org/m"' in html
    for scene in ("public-s0", "public-s1", "public-s2"):
        assert f"<td>{scene}</td>" in html
        assert f'src="/submissions/{sid}/scenes/{scene}/maps.png"' in html
        assert f'src="/submissions/{sid}/scenes/{scene}/error.png"' in html
    assert "Tier score" in html and "±" in html and "detector_solid_angle" in html
    maps = seeded.get(f"/submissions/{sid}/scenes/public-s0/maps.png", headers=alice)
    error = seeded.get(f"/submissions/{sid}/scenes/public-s0/error.png", headers=alice)
    for r in (maps, error):
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert imread(io.BytesIO(r.content)).shape[1] > 400
    assert maps.content != error.content
    # Anyone else: not found; nobody: 401; unknown scene or picture: 404.
    bob = add_participant(seeded, "bob")
    assert seeded.get(f"/submissions/{sid}/scenes/public-s0/maps.png", headers=bob).status_code == 404
    assert seeded.get(f"/submissions/{sid}/scenes/public-s0/maps.png").status_code == 401
    r = seeded.get(f"/submissions/{sid}/scenes/public-s9/maps.png", headers=alice)
    assert r.status_code == 404 and "no scene 'public-s9'" in r.json()["error"]["message"]
    assert seeded.get(f"/submissions/{sid}/scenes/public-s0/truth.png", headers=alice).status_code == 404
    # The organizer sees it too.
    assert seeded.get(f"/submissions/{sid}/scenes/public-s1/error.png", headers=ORG).status_code == 200


def test_tiers_page_downloads_pictures_and_rules(seeded):
    assert (
        seeded.post("/api/v1/admin/tiers/hidden/dataset", json={"seed": 7, "preset": "small"}, headers=ORG).status_code
        == 201
    )
    html = seeded.get("/tiers").text
    assert '<a class="button" href="/api/v1/tiers/public/measurement">' in html
    assert '<a class="button" href="/api/v1/tiers/dev/measurement">' in html
    assert "/api/v1/tiers/hidden/measurement" not in html and "never downloadable" in html
    assert (
        'src="/tiers/public/scenes/public-s0/maps.png"' in html
        and 'src="/tiers/public/scenes/public-s2/spectrum.png"' in html
    )
    assert 'src="/tiers/dev/scenes/dev-s0/spectrum.png"' in html and "/tiers/dev/scenes/dev-s0/maps.png" not in html
    assert "/tiers/hidden/scenes/" not in html
    assert 'id="scoring"' in html and "0.4·PSNR<sub>norm</sub> + 0.4·SSIM + 0.2·consistency" in html
    assert "0.5·PSNR<sub>norm</sub> + 0.5·SSIM" in html and "0.778" in html and SCORER_VERSION in html
    assert "absorption_correction_error" in html and "[-3.0, 6.0]" in html


def test_a_failed_run_shows_outcome_resources_and_the_escaped_log(seeded):
    assert (
        seeded.post("/api/v1/admin/tiers/hidden/dataset", json={"seed": 7, "preset": "small"}, headers=ORG).status_code
        == 201
    )
    alice = add_participant(seeded, "alice")
    with new_session() as s:
        who = s.query(Participant).filter_by(name="alice").one()
        dataset = s.query(Dataset).filter_by(tier="hidden", active=True).one()
        sub = Submission(
            participant=who,
            dataset=dataset,
            tier="hidden",
            kind="container",
            status="failed",
            outcome="oom_killed",
            error_message="the container used more than its 2 GiB memory limit",
            exit_code=137,
            runtime_seconds=12.5,
            peak_memory_bytes=2 * 2**30,
            attempt=1,
            method="big",
            log_tail="loading\n<img src=x onerror=alert(1)>\nKilled",
        )
        s.add(sub)
        s.commit()
        sid = sub.id
    html = seeded.get(f"/submissions/{sid}", headers=ORG).text  # the organizer sees the whole log
    assert 'class="status status-failed">failed<' in html and "<dt>Outcome</dt><dd>oom_killed</dd>" in html
    assert "more than its 2 GiB memory limit" in html and "<dt>Exit code</dt><dd>137</dd>" in html
    assert "<dt>Runtime</dt><dd>12.5 s</dd>" in html and "<dt>Peak memory</dt><dd>2.0 GiB</dd>" in html
    assert '<li class="failed current">failed</li>' in html and "Not scored: the run ended with oom_killed" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert seeded.get(f"/submissions/{sid}", headers=alice).status_code == 200  # the owner's page (log per policy)


def test_long_boards_are_paged(client):
    with new_session() as s:
        dataset = Dataset(
            tier="dev", content_hash="h" * 64, operator_version="v", preset="small", full_path="-", view_path="-"
        )
        s.add(dataset)
        people = [Participant(name=f"p{i}") for i in range(5)]
        s.add_all(people)
        s.flush()
        for i, who in enumerate(people):
            _row(s, dataset, who, i / 10, minutes=i, method=f"m{i}")
        s.commit()
    html = client.get("/", params={"board": "dev", "per_page": 2, "page": 2}).text
    assert "Page 2 of 3" in html and [m for m in re.findall(r'method-name">(m\d)<', html)] == ["m2", "m1"]
    assert (
        'href="/?board=dev&amp;page=1&amp;per_page=2"' in html
        and 'href="/?board=dev&amp;page=3&amp;per_page=2"' in html
    )
    assert "5 entries" in html

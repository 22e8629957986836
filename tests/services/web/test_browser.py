"""The pages in a real headless Chromium (Debian's ``chromium`` + ``chromedriver``, driven by
selenium) against the real API served by uvicorn on a loopback port, SQLite backend.

Screenshots are written to ``$EDX_TEST_ARTIFACTS/web/`` (default ``var/artifacts/web/`` in
the repository; ``var/`` is not committed): ``leaderboard-public.png``,
``leaderboard-hidden.png``, ``leaderboard-overall.png``, ``submission.png``, ``tiers.png``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from arena_testing import ORG, add_participant, add_scored, download_and_solve
from database_testing import drop_backend, make_backend

from db.models import Dataset, Participant
from db.session import new_session
from harness.uncertainty import encode_draws
from services.submissions.scoring import score_submission
from services.submissions.state import claim

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
XSS = "<script>window.__pwned = 1</script>"
T0 = datetime(2026, 11, 20, 9, tzinfo=UTC)
ARTIFACTS = (
    Path(os.environ.get("EDX_TEST_ARTIFACTS", Path(__file__).resolve().parents[3] / "var" / "artifacts")) / "web"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _score_row(
    session,
    dataset,
    who,
    score,
    *,
    minutes,
    method,
    kind="hdf5",
    baseline=False,
    ci=(None, None),
    source="",
    draws=None,
):
    add_scored(
        session,
        dataset,
        who,
        score,
        created_at=T0 + timedelta(minutes=minutes),
        started_at=T0,
        method=method,
        kind=kind,
        source=source,
        baseline=baseline,
        description="organizer reference" if baseline else "",
        image_digest="sha256:" + "ab" * 32 if kind == "container" else None,
        psnr=15 + 30 * score,
        ci=ci,
        tile_stats=None if draws is None else {"kind": "tier", "resample_key": "k", "draws": encode_draws(draws)},
    )


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A seeded SQLite backend served by a real uvicorn process; yields (base url, alice's token, her submission id)."""
    from fastapi.testclient import TestClient

    from services.main import app

    _backend, db_name = make_backend("sqlite", tmp_path, monkeypatch)
    with TestClient(app) as client:
        for i, tier in enumerate(("public", "dev", "hidden")):
            r = client.post(
                f"/api/v1/admin/tiers/{tier}/dataset", json={"seed": 60 + i, "preset": "small"}, headers=ORG
            )
            assert r.status_code == 201, r.text
        alice = add_participant(client, "alice")
        result = download_and_solve(client, "public", tmp_path)
        r = client.post(
            "/api/v1/submissions",
            data={"tier": "public", "method": XSS, "source": "https://example.org/nnls"},
            files={"file": ("r.h5", result.read_bytes())},
            headers=alice,
        )
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
    with new_session() as s:
        score_submission(s, claim(s, sid, worker="test"))
    with new_session() as s:
        datasets = {d.tier: d for d in s.query(Dataset).filter_by(active=True)}
        people = {n: Participant(name=n, team=f"Team {n.title()}") for n in ("ben", "cat", "org")}
        s.add_all(people.values())
        alice_row = s.query(Participant).filter_by(name="alice").one()
        rng = np.random.default_rng(0)
        for i, tier in enumerate(("public", "dev", "hidden")):
            kind = "container" if tier == "hidden" else "hdf5"
            # Equal scores whose bootstrap draws overlap: one tie group on every tier board.
            _score_row(
                s,
                datasets[tier],
                people["ben"],
                0.61,
                minutes=10 + i,
                method="Ben TV-ADMM",
                kind=kind,
                ci=(0.58, 0.64),
                source="doi:10.1000/tv",
                draws=rng.normal(0.61, 0.015, 1000),
            )
            _score_row(
                s,
                datasets[tier],
                people["cat"],
                0.61,
                minutes=20 + i,
                method="Cat NMF",
                kind=kind,
                ci=(0.59, 0.63),
                source="https://example.org/cat",
                draws=rng.normal(0.61, 0.01, 1000),
            )
            _score_row(
                s, datasets[tier], people["org"], 0.8, minutes=30 + i, method="Reference MLEM", kind=kind, baseline=True
            )
            if tier != "public":
                _score_row(s, datasets[tier], alice_row, 0.55, minutes=40 + i, method=XSS, kind=kind, ci=(0.5, 0.6))
        s.commit()
    port = _free_port()
    log = open(tmp_path / "uvicorn.log", "wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "services.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=dict(os.environ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (tmp_path / "uvicorn.log").read_text()
            assert time.monotonic() < deadline, "uvicorn did not answer within 60 s"
            time.sleep(0.3)
        yield base, alice["Authorization"].split(" ", 1)[1], sid
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        drop_backend(db_name)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert shutil.which("chromium") and Path(CHROMEDRIVER).is_file(), (
        "install Debian's chromium and chromium-driver (scripts/setup.sh does)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(
        service=Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")), options=options
    )
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _screenshot(driver, name: str) -> Path:
    """A full-page screenshot: the window is grown to the page's height first."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(max(height + 140, 600), 6000))
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), f"could not save {path}"
    assert path.stat().st_size > 10_000
    return path


def _navigated(driver, url: str) -> None:
    """Wait until the click's navigation has landed on ``url`` and the new page is loaded:
    a click returns before the next page replaces the old one."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(
        lambda d: d.current_url == url and d.execute_script("return document.readyState") == "complete"
    )


def _images_loaded(driver) -> list[tuple[str, int]]:
    """(src, natural width) of every image, once all have finished loading."""
    deadline = time.monotonic() + 60
    while not driver.execute_script("return Array.from(document.images).every(i => i.complete)"):
        assert time.monotonic() < deadline, "images did not finish loading"
        time.sleep(0.2)
    return driver.execute_script("return Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")


def test_pages_in_a_real_browser(site, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import staleness_of
    from selenium.webdriver.support.ui import WebDriverWait

    base, token, sid = site
    browser.get(f"{base}/?board=public")
    assert browser.title == "Leaderboard · Public · EDX Arena"
    tabs = browser.find_elements(By.CSS_SELECTOR, "nav.tabs a.tab")
    assert [t.text for t in tabs] == ["Overall", "Certified", "Public", "Dev", "Hidden", "Standard"]
    assert browser.find_element(By.CSS_SELECTOR, "nav.tabs a.active").text == "Public"
    rows = browser.find_elements(By.CSS_SELECTOR, "table.board tbody tr")
    methods = [r.find_element(By.CSS_SELECTOR, ".method-name").text for r in rows]
    ranks = [r.find_element(By.CSS_SELECTOR, "td.rank-cell").text for r in rows]
    assert methods[0] == "Reference MLEM" and ranks[0] == "–"  # the baseline: first, unranked
    assert rows[0].find_element(By.CSS_SELECTOR, ".badge.baseline").text == "baseline"
    # Alice's method name is shown as text: the <script> in it never ran.
    assert XSS in methods
    assert browser.execute_script("return window.__pwned === undefined")
    assert browser.execute_script("return document.scripts.length") == 0
    # Ben and Cat share rank 2 or 1 (equal scores), marked "="; intervals shown as ± half-width.
    shared = [rk for m, rk in zip(methods, ranks) if m in ("Ben TV-ADMM", "Cat NMF")]
    assert shared[0].startswith("=1") and shared[1].startswith("=1")
    # ... and the paired bootstrap cannot separate them: one tie group, named by its first position.
    ties = {m: [b.text for b in r.find_elements(By.CSS_SELECTOR, ".badge.tie")] for m, r in zip(methods, rows)}
    assert ties["Ben TV-ADMM"] == ties["Cat NMF"] == ["tie 1"] and ties[XSS] == [] and ties["Reference MLEM"] == []
    ben = rows[methods.index("Ben TV-ADMM")]
    assert "0.610 ± 0.030" in ben.find_element(By.CSS_SELECTOR, "td.num").text
    assert ben.find_element(By.CSS_SELECTOR, "td.source").text == "doi:10.1000/tv"
    assert not ben.find_elements(By.CSS_SELECTOR, "td.source a")  # not http(s): not a link
    cat = rows[methods.index("Cat NMF")]
    assert cat.find_element(By.CSS_SELECTOR, "td.source a").get_attribute("href") == "https://example.org/cat"
    assert ben.find_element(By.CSS_SELECTOR, "td.date").text == "2026-11-20"
    assert not browser.find_elements(By.CSS_SELECTOR, "table.board .badge.certified")  # Public: never certified
    _screenshot(browser, "leaderboard-public.png")

    # Click a tab: the Hidden board, every entry certified (images run by the server).
    browser.find_element(By.LINK_TEXT, "Hidden").click()
    _navigated(browser, f"{base}/?board=hidden")
    assert browser.find_element(By.CSS_SELECTOR, "nav.tabs a.active").text == "Hidden"
    hidden_rows = browser.find_elements(By.CSS_SELECTOR, "table.board tbody tr")
    assert len(hidden_rows) == 4
    assert all(r.find_elements(By.CSS_SELECTOR, ".badge.certified") for r in hidden_rows)
    _screenshot(browser, "leaderboard-hidden.png")

    browser.find_element(By.LINK_TEXT, "Overall").click()
    _navigated(browser, f"{base}/?board=overall")
    groups = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "th.group")]
    assert groups == ["PUBLIC", "DEV", "HIDDEN"]  # uppercase by the stylesheet: it loaded
    overall = [
        r.find_element(By.CSS_SELECTOR, ".method-name").text
        for r in browser.find_elements(By.CSS_SELECTOR, "table.board tbody tr")
    ]
    assert overall[0] == "Reference MLEM" and XSS in overall and len(overall) == 4
    _screenshot(browser, "leaderboard-overall.png")

    # The submission page: the sign-in form first, then the page, with its pictures.
    browser.get(f"{base}/submissions/{sid}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Sign in"
    browser.find_element(By.ID, "token").send_keys(token)
    button = browser.find_element(By.CSS_SELECTOR, "form.stack button")
    button.click()
    # The form was served at the page's own address (401), so wait for the form itself to go.
    WebDriverWait(browser, 30).until(staleness_of(button))
    _navigated(browser, f"{base}/submissions/{sid}")
    assert "Signed in as alice" in browser.find_element(By.CSS_SELECTOR, "header .who").text
    assert browser.execute_script("return document.cookie") == ""  # HttpOnly: invisible to scripts
    assert browser.find_element(By.CSS_SELECTOR, ".method-name").text == XSS
    assert browser.find_element(By.CSS_SELECTOR, "dd.status").text == "scored"
    scenes = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "table.scenes tbody td:first-child")]
    assert scenes == ["public-s0", "public-s1", "public-s2"]
    images = _images_loaded(browser)
    assert len(images) == 6 and all(width > 400 for _, width in images), images
    assert {src.rsplit("/", 1)[1] for src, _ in images} == {"maps.png", "error.png"}
    _screenshot(browser, "submission.png")

    browser.get(f"{base}/tiers")
    images = _images_loaded(browser)
    srcs = [src for src, _ in images]
    assert all(width > 400 for _, width in images), images
    assert "/tiers/public/scenes/public-s0/maps.png" in srcs and "/tiers/dev/scenes/dev-s0/spectrum.png" in srcs
    assert not [s for s in srcs if "/dev/" in s and s.endswith("maps.png")] and not [s for s in srcs if "/hidden/" in s]
    assert browser.find_element(By.ID, "scoring").is_displayed()
    _screenshot(browser, "tiers.png")

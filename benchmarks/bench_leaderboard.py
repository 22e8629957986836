"""Goal P4: leaderboard GET with 10,000 scored submissions, against a trivial endpoint.

Seeds a fresh database (SQLite by default, ``--postgres`` for a throw-away PostgreSQL
database) with 1,000 participants × 10 scored submissions (4 Dev, 3 Public, 3 Hidden from
server-run images; one tier row and three scene rows each, scores on a 0.001 grid so there
are ties; edx-score-v2 rows: intervals, and 1,000 paired bootstrap draws on each tier row, so
the tie groups are computed as in production), starts the real API under uvicorn (one process, defaults), and loads it with
``wrk`` on loopback. In the same run and the same process it loads a trivial endpoint added to
the same app (``GET /bench/trivial`` → ``{"ok": true}``, async, no database), and, as a second
baseline, a bare ASGI app under its own uvicorn. Rounds alternate endpoints; medians are
reported.

Targets: leaderboard requests/s ÷ trivial requests/s ≥ 0.6, and p99 < 20 ms.

Run: ``python benchmarks/bench_leaderboard.py [--postgres] [--seconds 5] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving import free_port, start_uvicorn  # noqa: E402 - benchmarks/ is the script directory

PARTICIPANTS = 1000
PER_PARTICIPANT = {"dev": 4, "public": 3, "hidden": 3}
TARGET_RATIO = 0.6
TARGET_P99_MS = 20.0
ORGANIZER_TOKEN = "bench-organizer-token"


def bench_app():
    """The real API plus one trivial route (uvicorn ``--factory`` target)."""
    from services.main import create_app

    app = create_app()

    @app.get("/bench/trivial", include_in_schema=False)
    async def trivial() -> dict:
        return {"ok": True}

    return app


async def bare_app(scope, receive, send):
    """A bare ASGI endpoint: the floor any framework adds its cost to."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})


def _seed(database_url: str) -> dict[str, float]:
    """Insert the 10,000 scored submissions; returns the cold (uncached) board times in ms."""
    from sqlalchemy import insert

    from db.migrate import upgrade_to_head
    from db.models import Dataset, Participant, Score, Submission
    from db.session import new_session
    from harness.scoring import SCORER_VERSION
    from harness.uncertainty import encode_draws
    from services.leaderboard import leaderboard

    upgrade_to_head()
    rng = random.Random(4)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    with new_session() as s:
        datasets = {
            t: Dataset(
                tier=t,
                content_hash=f"{i}" * 64,
                operator_version="edx-forward-v1",
                preset="default",
                full_path="-",
                view_path="-",
            )
            for i, t in enumerate(PER_PARTICIPANT)
        }
        s.add_all(datasets.values())
        s.flush()
        s.execute(
            insert(Participant),
            [
                {"name": f"team-{i:04d}", "team": f"Team {i}", "role": "participant", "created_at": t0}
                for i in range(PARTICIPANTS)
            ],
        )
        ids = {
            name: pid
            for pid, name in s.execute(
                Participant.__table__.select().with_only_columns(Participant.id, Participant.name)
            )
        }
        subs, scores = [], []
        for i in range(PARTICIPANTS):
            for tier, n in PER_PARTICIPANT.items():
                for k in range(n):
                    sid = str(uuid.uuid4())
                    created = t0 + timedelta(minutes=rng.randrange(100_000))
                    container = tier == "hidden"
                    subs.append(
                        {
                            "id": sid,
                            "participant_id": ids[f"team-{i:04d}"],
                            "dataset_id": datasets[tier].id,
                            "tier": tier,
                            "kind": "container" if container else "hdf5",
                            "method": f"method-{k}",
                            "description": "",
                            "source": "https://example.org/paper",
                            "status": "scored",
                            "outcome": "succeeded",
                            "attempt": 1,
                            "charged": True,
                            "file_sha256": None if container else "f" * 64,
                            "image_digest": f"sha256:{'a' * 64}" if container else None,
                            "created_at": created,
                            "started_at": created,
                            "finished_at": created,
                        }
                    )
                    score = round(rng.uniform(0.3, 0.9), 3)
                    # Rows as edx-score-v2 writes them: the tier row carries its 95 % interval and
                    # its 1,000 paired bootstrap draws (what the tie groups read).
                    draws = score + np.random.default_rng(len(scores)).normal(0, 0.01, 1000)
                    lo, hi = np.percentile(draws, [2.5, 97.5])
                    tier_stats = {
                        "kind": "tier",
                        "resample_key": f"bench-{tier}",
                        "n_resamples": 1000,
                        "confidence": 0.95,
                        "tile_size": 16,
                        "draws": encode_draws(draws),
                    }
                    for scene in ("", f"{tier}-s0", f"{tier}-s1", f"{tier}-s2"):
                        scores.append(
                            {
                                "ci_low": float(lo),
                                "ci_high": float(hi),
                                "tile_stats": tier_stats if scene == "" else None,
                                "submission_id": sid,
                                "scene_id": scene,
                                "scoring_version": SCORER_VERSION,
                                "operator_version": "edx-forward-v1",
                                "harness_version": "0.1.0",
                                "dataset_hash": "0" * 64,
                                "submission_hash": "f" * 64,
                                "score": score,
                                "blind": score,
                                "standard": score,
                                "psnr": 15 + 30 * score,
                                "ssim": score,
                                "consistency": score,
                                "metrics": {"psnr_norm": score, "spec_error": {"peak_overlap": 0.1}},
                                "started_at": created,
                                "ended_at": created,
                            }
                        )
        s.execute(insert(Submission), subs)
        s.execute(insert(Score), scores)
        s.commit()
        if s.bind.dialect.name == "postgresql":
            # What autovacuum does on its own after a bulk load: give the planner statistics.
            with s.bind.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("ANALYZE")
        cold = {}
        for board in ("dev", "overall"):
            started = time.perf_counter()
            leaderboard(s, board=board, page=1, per_page=50)
            cold[board] = (time.perf_counter() - started) * 1e3
    print(
        f"seeded {len(subs)} scored submissions ({len(scores)} score rows) from {PARTICIPANTS} participants", flush=True
    )
    return cold


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _wrk(url: str, seconds: int, connections: int) -> tuple[float, float]:
    """(requests/s, p99 latency in ms) from one wrk run."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors on {url}:\n{out}")
    return rps, float(value) * _UNITS[unit]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", action="store_true", help="seed a throw-away PostgreSQL database at 127.0.0.1")
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench-leaderboard-")
    env = {**os.environ, "EDX_DATA_DIR": tmp, "EDX_ORGANIZER_TOKEN": ORGANIZER_TOKEN, "EDX_ENVIRONMENT": "production"}
    pg_name = None
    if args.postgres:
        import psycopg

        pg_name = f"edx_arena_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg_name}"')
        env["EDX_DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_name}"
    os.environ.update(env)
    procs = []
    try:
        cold = _seed(env.get("EDX_DATABASE_URL", "sqlite"))
        api_port, bare_port = free_port(), free_port()
        procs.append(start_uvicorn("bench_leaderboard:bench_app", api_port, env, factory=True))
        procs.append(start_uvicorn("bench_leaderboard:bare_app", bare_port, env, factory=False))
        urls = {
            "bare ASGI app": f"http://127.0.0.1:{bare_port}/",
            "trivial FastAPI route": f"http://127.0.0.1:{api_port}/bench/trivial",
            "leaderboard dev": f"http://127.0.0.1:{api_port}/api/v1/leaderboard?tier=dev",
            "leaderboard overall": f"http://127.0.0.1:{api_port}/api/v1/leaderboard?tier=overall",
        }
        for url in urls.values():  # warm up: imports, first (cold) board computations
            _wrk(url, 1, 2)
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in urls}
        for r in range(args.rounds):
            for name, url in urls.items():
                results[name].append(_wrk(url, args.seconds, args.connections))
                print(
                    f"round {r + 1}: {name}: {results[name][-1][0]:.0f} req/s, p99 {results[name][-1][1]:.2f} ms",
                    flush=True,
                )
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        if pg_name:
            with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)

    median = {
        name: (statistics.median(x[0] for x in rs), statistics.median(x[1] for x in rs)) for name, rs in results.items()
    }
    trivial_rps = median["trivial FastAPI route"][0]
    bare_rps = median["bare ASGI app"][0]
    database = "PostgreSQL" if args.postgres else "SQLite"
    lines = [
        f"P4 leaderboard, {database}, 10,000 scored submissions, wrk -t1 -c{args.connections} -d{args.seconds}s, "
        f"median of {args.rounds} rounds, one uvicorn process; cold (uncached) board computation: "
        f"dev {cold['dev']:.0f} ms, overall {cold['overall']:.0f} ms",
        "",
        "| endpoint | req/s | p99 | ÷ trivial route | ÷ bare ASGI |",
        "|---|---|---|---|---|",
    ]
    ok = True
    for name, (rps, p99) in median.items():
        lines.append(f"| {name} | {rps:.0f} | {p99:.2f} ms | {rps / trivial_rps:.2f} | {rps / bare_rps:.2f} |")
        if name.startswith("leaderboard"):
            ok &= rps / trivial_rps >= TARGET_RATIO and p99 < TARGET_P99_MS
    print()
    print("\n".join(lines))
    print(
        f"\ntarget (ratio ≥ {TARGET_RATIO} vs the trivial route, p99 < {TARGET_P99_MS:.0f} ms): {'met' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

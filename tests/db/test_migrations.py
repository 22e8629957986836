"""Alembic migrations on SQLite and PostgreSQL: head creates every table, the models and the
migrations agree, and the chain downgrades and upgrades cleanly."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from db.migrate import alembic_config, upgrade_to_head
from db.models import Base

TABLES = {
    "participants",
    "api_tokens",
    "datasets",
    "submissions",
    "runs",
    "scores",
    "image_owners",
    "board_entries",
    "board_rules",
    "alembic_version",
}


def _revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def test_upgrade_to_head_creates_every_table(db_url):
    upgrade_to_head()
    upgrade_to_head()  # the API and each worker run it at start: the second run is a no-op
    engine = create_engine(db_url)
    assert set(inspect(engine).get_table_names()) == TABLES
    engine.dispose()
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert _revision(db_url) == head


def test_models_match_migrations(db_url):
    upgrade_to_head()
    engine = create_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == []


def test_revisions_are_named_and_chained():
    script = ScriptDirectory.from_config(alembic_config())
    revisions = list(reversed(list(script.walk_revisions())))
    assert [r.revision for r in revisions] == [f"{i:04d}" for i in range(1, len(revisions) + 1)]
    for r in revisions:
        name = r.path.rsplit("/", 1)[-1]
        assert name.startswith(f"{r.revision}_") and name.count("_") >= 2, name


def test_downgrade_to_base_and_back(db_url):
    upgrade_to_head()
    cfg = alembic_config(db_url)
    command.downgrade(cfg, "base")
    engine = create_engine(db_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    command.upgrade(cfg, "head")
    assert _revision(db_url) == ScriptDirectory.from_config(cfg).get_current_head()


def test_0004_fills_truth_in_view_from_the_rules_and_the_stored_view(db_url, tmp_path):
    """Datasets stored before migration 0004: Public yes, Dev and Hidden no, Standard as its
    view file says (the organizer's choice was never stored)."""
    import h5py
    from sqlalchemy import text

    from core.settings import get_settings

    get_settings().data_dir.mkdir(parents=True, exist_ok=True)  # where the SQLite file goes
    cfg = alembic_config(db_url)
    command.upgrade(cfg, "0003")
    views = {}
    for name, truth in (("with", True), ("without", False)):
        views[name] = tmp_path / f"standard-{name}.h5"
        with h5py.File(views[name], "w") as f:
            for scene in ("standard-s0", "standard-s1"):
                group = f.create_group(f"scenes/{scene}")
                group["y"] = [0.0]
                if truth:
                    group["x_true"] = [0.0]
    rows = [
        ("public", "-"),
        ("dev", "-"),
        ("hidden", "-"),
        ("standard", str(views["with"])),
        ("standard", str(views["without"])),
        ("standard", str(tmp_path / "gone.h5")),
    ]
    engine = create_engine(db_url)
    with engine.begin() as conn:
        for i, (tier, view) in enumerate(rows, start=1):
            conn.execute(
                text(
                    "INSERT INTO datasets (id, tier, content_hash, operator_version, preset, full_path, view_path,"
                    " active, created_at) VALUES (:id, :tier, 'h', 'v', 'small', '-', :view, false, '2026-11-01')"
                ),
                {"id": i, "tier": tier, "view": view},
            )
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        got = conn.execute(text("SELECT tier, truth_in_view FROM datasets ORDER BY id")).all()
    engine.dispose()
    assert [(t, bool(v)) for t, v in got] == [
        ("public", True),
        ("dev", False),
        ("hidden", False),
        ("standard", True),
        ("standard", False),
        ("standard", False),  # a view that is gone shows no truth
    ]


def test_0005_gives_each_image_to_whoever_brought_it(db_url):
    """Submissions made before migration 0005: an archive or a pinned link is its submitter's, a
    script's base image is recorded as such, an organizer's local image is the organizer's, and a
    participant's bare local name (another team's image, say) gives them nothing."""
    from sqlalchemy import text

    from core.settings import get_settings

    get_settings().data_dir.mkdir(parents=True, exist_ok=True)
    cfg = alembic_config(db_url)
    command.upgrade(cfg, "0004")
    engine = create_engine(db_url)
    submissions = [
        # participant, kind, image, digest
        (1, "container", "edx-arena-sub/1/abc:latest", "sha256:a"),
        (1, "container", "edx-arena-sub/1/abc:latest", "sha256:a"),  # again: one row
        (2, "container", "edx-arena-sub/1/abc:latest", "sha256:a"),  # B names A's upload: nothing
        (2, "container", "registry.example:5000/b/s:1@sha256:bbb", "sha256:b"),
        (2, "script", "edx-arena/runner:latest", "sha256:r"),
        (3, "container", "edx-arena/runner:latest", "sha256:r"),
        (1, "hdf5", None, None),
    ]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO datasets (id, tier, content_hash, operator_version, preset, full_path, view_path,"
                " active, created_at, truth_in_view) VALUES (1, 'hidden', 'h', 'v', 'small', '-', '-', true,"
                " '2026-11-01', false)"
            )
        )
        for pid, role in ((1, "participant"), (2, "participant"), (3, "organizer")):
            conn.execute(
                text(
                    "INSERT INTO participants (id, name, team, role, created_at) VALUES (:id, :n, '', :r, '2026-11-01')"
                ),
                {"id": pid, "n": f"p{pid}", "r": role},
            )
        for i, (pid, kind, image, digest) in enumerate(submissions):
            conn.execute(
                text(
                    "INSERT INTO submissions (id, participant_id, dataset_id, tier, kind, method, description, source,"
                    " image, image_digest, status, attempt, charged, baseline, created_at)"
                    " VALUES (:id, :pid, 1, 'hidden', :kind, '', '', '', :image, :digest, 'scored', 1, true, false,"
                    " :at)"
                ),
                {"id": f"s{i}", "pid": pid, "kind": kind, "image": image, "digest": digest, "at": f"2026-11-0{i + 1}"},
            )
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        got = conn.execute(text("SELECT participant_id, image_id, how FROM image_owners ORDER BY id")).all()
        duplicates = conn.execute(text("SELECT count(*) FROM submissions WHERE duplicate_of IS NOT NULL")).scalar()
    engine.dispose()
    assert [tuple(r) for r in got] == [
        (1, "sha256:a", "archive"),
        (2, "sha256:b", "link"),
        (2, "sha256:r", "script"),
        (3, "sha256:r", "organizer"),
    ]
    assert duplicates == 0


def _participant_and_dataset(conn, tier: str) -> None:
    """Participant 1 and an active dataset 1 on ``tier``, as rows of revision 0004 or later."""
    from sqlalchemy import text

    conn.execute(
        text(
            "INSERT INTO participants (id, name, team, role, created_at) VALUES (1, 'a', '', 'participant', '2026-11-01')"
        )
    )
    conn.execute(
        text(
            "INSERT INTO datasets (id, tier, content_hash, operator_version, preset, full_path, view_path,"
            " active, truth_in_view, created_at) VALUES (1, :tier, 'h', 'v', 'small', '-', '-', true, false,"
            " '2026-11-01')"
        ),
        {"tier": tier},
    )


def test_0006_moves_existing_entries_to_method_entries(db_url):
    """Submissions stored before migration 0006 get the normal form of their method name
    (empty: "unnamed") and no parent; the boards then group them by method."""
    from sqlalchemy import text

    from core.settings import get_settings

    get_settings().data_dir.mkdir(parents=True, exist_ok=True)
    cfg = alembic_config(db_url)
    command.upgrade(cfg, "0004")
    methods = ["SwinEDX + gradient", "  swinedx   +  GRADIENT ", "", "MLEM"]
    engine = create_engine(db_url)
    with engine.begin() as conn:
        _participant_and_dataset(conn, "public")
        for i, method in enumerate(methods):
            conn.execute(
                text(
                    "INSERT INTO submissions (id, participant_id, dataset_id, tier, kind, method, description, source,"
                    " status, attempt, charged, baseline, created_at) VALUES"
                    " (:id, 1, 1, 'public', 'hdf5', :method, '', '', 'scored', 0, true, false, '2026-11-01')"
                ),
                {"id": f"s{i}", "method": method},
            )
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        got = conn.execute(text("SELECT method_key, parent_id FROM submissions ORDER BY id")).all()
    engine.dispose()
    assert [tuple(r) for r in got] == [
        ("swinedx + gradient", None),
        ("swinedx + gradient", None),
        ("unnamed", None),
        ("mlem", None),
    ]


def test_0008_leaves_the_entries_to_the_first_board_read(db_url):
    """Migration 0008 creates board_entries and board_rules empty; the first board read builds
    them from the submissions stored before (each method's best on its tier)."""
    from sqlalchemy import text

    from core.settings import get_settings
    from db.session import new_session
    from harness.scoring import SCORER_VERSION
    from services.leaderboard import leaderboard

    get_settings().data_dir.mkdir(parents=True, exist_ok=True)
    cfg = alembic_config(db_url)
    command.upgrade(cfg, "0007")
    engine = create_engine(db_url)
    with engine.begin() as conn:
        _participant_and_dataset(conn, "dev")
        for i, (method, score) in enumerate([("A", 0.5), ("a", 0.7), ("B", 0.6)]):
            conn.execute(
                text(
                    "INSERT INTO submissions (id, participant_id, dataset_id, tier, kind, method, method_key,"
                    " description, source, status, attempt, charged, baseline, created_at) VALUES"
                    " (:id, 1, 1, 'dev', 'hdf5', :method, :key, '', '', 'scored', 1, true, false, '2026-11-01')"
                ),
                {"id": f"s{i}", "method": method, "key": method.lower()},
            )
            conn.execute(
                text(
                    "INSERT INTO scores (submission_id, scene_id, scoring_version, operator_version, harness_version,"
                    " dataset_hash, submission_hash, score, blind, standard, psnr, ssim, consistency, metrics,"
                    " started_at, ended_at) VALUES (:id, '', :v, 'v', 'h', 'd', 's', :score, :score, :score, 30,"
                    " :score, :score, '{}', '2026-11-01', '2026-11-01')"
                ),
                {"id": f"s{i}", "v": SCORER_VERSION, "score": score},
            )
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM board_entries")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM board_rules")).scalar() == 0
    engine.dispose()
    with new_session() as s:
        entries, total = leaderboard(s, board="dev")
    assert total == 2 and [(e.method, e.score) for e in entries] == [("a", 0.7), ("B", 0.6)]

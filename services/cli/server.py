"""Server-side commands: run the API and the worker, and organizer administration."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from db.models import Role

console = Console(stderr=True)
admin_app = typer.Typer(
    help="Organizer administration. create-participant, seed-tier and rescore work on the server's own database "
    "(run them where serve runs, with the same EDX_* settings); upload-dataset goes over HTTP, from anywhere.",
    no_args_is_help=True,
)


def require_settings(*, database: bool = True) -> None:
    """Check the EDX_* settings (and that the database answers) before a server-side command
    starts; a problem is one line on stderr, ``error: …`` naming the setting and the fix, and
    exit code 2 (a usage error: the command's environment is wrong), never a traceback."""
    from core.settings import SettingsError, load_settings

    try:
        settings = load_settings()
        _check_data_dir(settings.data_dir)
        if database:
            _check_database(settings.database_url)
    except SettingsError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None


def _check_data_dir(data_dir) -> None:
    from core.settings import SettingsError

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / ".write-probe"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise SettingsError(
            f"EDX_DATA_DIR={str(data_dir)!r} is not a writable folder ({exc.strerror}); "
            "point EDX_DATA_DIR at a folder this user can write"
        ) from None


def _check_database(url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from core.settings import SettingsError
    from db.session import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        shown = engine.url.render_as_string(hide_password=True)
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
        raise SettingsError(
            f"EDX_DATABASE_URL={shown!r} cannot be reached ({reason}); "
            "check the URL and that the database server is running"
        ) from None
    finally:
        engine.dispose()


def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
) -> None:
    """Run the REST API (applies database migrations first). Settings come from EDX_* variables.

    Writes the database (EDX_DATABASE_URL, default a SQLite file under EDX_DATA_DIR) and uploads
    under EDX_DATA_DIR; logs to stderr (EDX_LOG_FORMAT=json for one JSON object per line). Set
    EDX_ORGANIZER_TOKEN to be able to use the admin API. Stops gracefully on SIGTERM.

    Examples:

        EDX_ORGANIZER_TOKEN=change-me edx-arena serve --host 0.0.0.0 --port 8000

        EDX_DATABASE_URL=postgresql://edx:pw@db/edx EDX_BROKER_URL=redis://redis edx-arena serve
    """
    require_settings()
    import uvicorn

    from services.logs import logging_config

    uvicorn.run(
        "services.main:app",
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=60,
        log_config=logging_config(),
    )


def worker(
    concurrency: Annotated[int, typer.Option(help="Parallel runs in this worker.")] = 1,
    hostname: Annotated[str, typer.Option(help="Worker name (unique per machine).")] = "edx@%h",
    role: Annotated[
        str,
        typer.Option(
            help="all: runs and scoring (the default); scoring: only scoring, next to the server's storage; "
            "compute: only runs, over HTTP with EDX_API_URL and EDX_WORKER_TOKEN, no database (the default "
            "when those two are set and EDX_DATABASE_URL is not)."
        ),
    ] = "auto",
) -> None:
    """Run a Celery worker that executes and scores submissions.

    Use the same EDX_* settings as serve (database, broker, data dir); it runs Hidden-tier
    images on the machine's Docker daemon and writes score rows to the database. A compute
    worker on another host needs only EDX_BROKER_URL, EDX_API_URL, EDX_WORKER_TOKEN, its own
    EDX_DATA_DIR (caches) and Docker (DOCKER_HOST if not the local daemon); see
    docs/operations.md "Adding a compute host".

    Examples:

        edx-arena worker

        edx-arena worker --concurrency 2 --hostname edx-2@%h

        EDX_API_URL=http://server:8000 EDX_WORKER_TOKEN=... edx-arena worker --role compute
    """
    if role not in ("auto", "all", "scoring", "compute"):
        console.print(f"[red]error[/red]: --role must be all, scoring or compute, not {role!r}")
        raise typer.Exit(2)
    if role != "auto":
        os.environ["EDX_WORKER_ROLE"] = role
    from core.settings import load_settings

    require_settings(database=_role_needs_database())  # a compute worker has no database
    from core.settings import WORKER_QUEUES

    settings = load_settings()
    os.environ["EDX_WORKER_ROLE"] = settings.worker_role  # the worker process sees the resolved role
    pool = "solo" if concurrency == 1 else "prefork"
    from services.logs import log_format

    # --quiet: no start-up banner on stdout, so a JSON log stays one object per line.
    quiet = ["--quiet"] if log_format() == "json" else []
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "services.worker.celery_app",
        *quiet,
        "worker",
        "-Q",
        ",".join(WORKER_QUEUES[settings.worker_role]),
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--hostname",
        hostname,
        "-l",
        "info",
    ]
    os.execv(sys.executable, argv)


def _role_needs_database() -> bool:
    from core.settings import SettingsError, load_settings

    try:
        return load_settings().worker_role != "compute"
    except SettingsError:
        return True  # require_settings reports the problem


@admin_app.command("create-participant")
def create_participant_cmd(
    name: Annotated[str, typer.Argument(help="Login name (letters, digits, . _ -).")],
    team: Annotated[str, typer.Option(help="Team name shown on leaderboards.")] = "",
    organizer: Annotated[bool, typer.Option(help="Give the organizer role.")] = False,
) -> None:
    """Create a participant and print its API token (shown only once).

    Writes one participant row; the token goes to stdout (last line), so a script can capture
    it. Hand it to the participant: they set EDX_TOKEN. Same as POST /api/v1/admin/participants.

    Examples:

        edx-arena admin create-participant alice --team "Team A"

        TOKEN=$(edx-arena admin create-participant bob | tail -n 1)
    """
    from db.models import Role

    _create_account(name, team=team, role=Role.organizer if organizer else Role.participant)


@admin_app.command("create-worker")
def create_worker_cmd(
    name: Annotated[str, typer.Argument(help="The compute host's name (letters, digits, . _ -).")],
) -> None:
    """Create a compute worker account and print its token (shown only once).

    The token's role reaches only the worker endpoints (/api/v1/worker/...): claim a run,
    renew its lease, download the run's input (the tier's view, never the truth) and upload its
    output. Give it to the compute host as EDX_WORKER_TOKEN; revoke it with DELETE
    /api/v1/admin/tokens/ID.

    Examples:

        TOKEN=$(edx-arena admin create-worker gpu-1 | tail -n 1)
    """
    from db.models import Role

    _create_account(name, team="compute workers", role=Role.worker)


def _create_account(name: str, *, team: str, role: Role) -> None:
    """Create one account (after the settings check and migrations) and print its token last."""
    from db.migrate import upgrade_to_head
    from db.session import new_session
    from services.auth import create_participant
    from services.errors import ServiceError

    require_settings()
    upgrade_to_head()
    with new_session() as session:
        try:
            participant, _, token = create_participant(session, name=name, team=team, role=role)
        except ServiceError as exc:
            console.print(f"[red]error[/red]: {exc.message}")
            raise typer.Exit(1) from None
        session.commit()
    console.print(f"created {participant.role} {name} (id {participant.id}); token:")
    print(token)


@admin_app.command("seed-tier")
def seed_tier_cmd(
    tier: Annotated[str, typer.Option(help="public, dev, hidden or standard.")],
    seed: Annotated[int, typer.Option(help="Generator seed (keep it secret for dev and hidden).")],
    size: Annotated[str, typer.Option(help="Grid preset: default or small.")] = "default",
) -> None:
    """Generate a tier's dataset and make it the active one.

    Writes the dataset files under EDX_DATA_DIR and makes them the tier's active dataset (what
    download serves and submissions are scored against). Same as POST
    /api/v1/admin/tiers/{tier}/dataset. Use a secret seed for dev and hidden.

    Examples:

        edx-arena admin seed-tier --tier public --seed 2026

        edx-arena admin seed-tier --tier hidden --seed 5840213377   # your own secret number
    """
    from db.migrate import upgrade_to_head
    from db.session import new_session
    from harness.errors import EdxArenaError
    from services.datasets import seed_tier
    from services.errors import ServiceError

    require_settings()
    upgrade_to_head()
    with new_session() as session:
        try:
            row = seed_tier(session, tier=tier, seed=seed, preset=size)
        except (ServiceError, EdxArenaError) as exc:
            console.print(f"[red]error[/red]: {exc.message}")
            raise typer.Exit(1) from None
        session.commit()
    console.print(f"{tier} tier seeded: dataset {row.id}, content hash {row.content_hash[:16]}…")


@admin_app.command("rebuild-boards")
def rebuild_boards_cmd() -> None:
    """Rebuild every board's entries from the submissions (the board_entries table).

    The server keeps each method's entry up to date as submissions change; rebuild after writing
    submissions or score rows with SQL of your own, past the server. Boards keep being served
    meanwhile. Prints the number of entries on stdout.

    Examples:

        edx-arena admin rebuild-boards
    """
    from sqlalchemy import func, select

    from db.board_entries import rebuild
    from db.migrate import upgrade_to_head
    from db.models import BoardEntry
    from db.session import new_session

    require_settings()
    upgrade_to_head()
    with new_session() as session:
        rebuild(session.connection())
        session.commit()
        count = session.scalar(select(func.count()).select_from(BoardEntry))
    console.print(f"rebuilt the boards' entries: {count} (both views)")
    print(count)


@admin_app.command("rescore")
def rescore_cmd(
    ids: Annotated[list[str] | None, typer.Argument(help="Submission ids to score again.")] = None,
    outdated: Annotated[
        bool, typer.Option(help="Every scored submission with no score rows of the current scorer version.")
    ] = False,
) -> None:
    """Queue finished submissions for scoring again (after a scorer update: --outdated).

    Old score rows stay (append-only); a Hidden-tier run is rescored from its kept output, the
    image is not run again. The workers do the scoring; watch edx_arena_queue_depth. Prints the
    queued ids on stdout; exits 1 if any id could not be queued.

    Examples:

        edx-arena admin rescore --outdated

        edx-arena admin rescore 01JD6Z6RZQ3N4 01JD6Z7A0B1C2
    """
    from sqlalchemy import exists, select

    from db.migrate import upgrade_to_head
    from db.models import Score, Status, Submission
    from db.session import new_session
    from harness.scoring import SCORER_VERSION
    from services.errors import ServiceError
    from services.submissions.intake import accept
    from services.submissions.state import rescore

    if not ids and not outdated:
        console.print("[red]error[/red]: name submission ids or pass --outdated")
        raise typer.Exit(2)
    require_settings()
    upgrade_to_head()
    with new_session() as session:
        todo = list(ids or [])
        if outdated:
            current = exists().where(Score.submission_id == Submission.id, Score.scoring_version == SCORER_VERSION)
            todo += session.scalars(
                select(Submission.id)
                .where(Submission.status == Status.scored, ~current)
                .order_by(Submission.created_at)
            ).all()
        queued, failed = [], []
        with_parent: set[str] = set()  # a Hidden artifact's runs elsewhere, requeued with it
        for sid in dict.fromkeys(todo):
            if sid in with_parent:
                continue
            try:
                # A lost message is resent by the reaper: the row is queued either way.
                submission = accept(session, rescore(session, submission_id=sid))
            except ServiceError as exc:
                session.rollback()
                failed.append(sid)
                console.print(f"[red]error[/red]: {exc.message}")
                continue
            queued.append(sid)
            with_parent.update(c.id for c in submission.children if c.status == Status.queued)
            queued.extend(c.id for c in submission.children if c.status == Status.queued and c.id not in queued)
    console.print(f"queued {len(queued)} submission(s) for scoring with {SCORER_VERSION}")
    for sid in queued:
        print(sid)
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    from services.cli.client import upload_dataset
    from services.cli.exit_codes import EPILOG

    # Over HTTP like the participant commands, so it works against a compose stack or a remote server.
    admin_app.command("upload-dataset", epilog=EPILOG)(upload_dataset)
    app.command("serve")(serve)
    app.command("worker")(worker)
    app.add_typer(admin_app, name="admin")

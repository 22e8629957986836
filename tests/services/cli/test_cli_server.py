"""Server-side commands on the embedded default and PostgreSQL: ``admin create-participant``
prints a working token, ``admin seed-tier`` makes an active dataset; errors exit 1 with the reason."""

from __future__ import annotations

from sqlalchemy import select
from typer.testing import CliRunner

from db.models import Dataset
from db.session import new_session
from services.auth import authenticate
from services.cli.main import app

runner = CliRunner()


def test_create_participant_prints_a_working_token(backend):
    r = runner.invoke(app, ["admin", "create-participant", "zoe", "--team", "Team Z"])
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    with new_session() as s:
        who = authenticate(s, token)
        assert (who.name, who.team, who.role) == ("zoe", "Team Z", "participant")
    again = runner.invoke(app, ["admin", "create-participant", "zoe"])
    assert again.exit_code == 1 and "a participant named 'zoe' already exists" in again.output


def test_seed_tier(backend):
    r = runner.invoke(app, ["admin", "seed-tier", "--tier", "dev", "--seed", "7", "--size", "small"])
    assert r.exit_code == 0, r.output
    assert "dev tier seeded" in r.output
    with new_session() as s:
        row = s.scalar(select(Dataset).where(Dataset.active.is_(True)))
        assert (row.tier, row.seed, row.preset) == ("dev", 7, "small")
    bad = runner.invoke(app, ["admin", "seed-tier", "--tier", "gold", "--seed", "7", "--size", "small"])
    assert bad.exit_code == 1 and "unknown tier 'gold'" in bad.output

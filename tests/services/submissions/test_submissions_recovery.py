"""services/submissions/recovery.py: a starting worker removes sandbox containers no live run
owns, and keeps live ones (and other deployments').
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import docker
from db.models import Dataset, Participant, Submission
from db.session import new_session
from harness.sandbox import RUN_LABEL


@pytest.mark.docker
def test_orphans_removed_live_kept(client):
    from services.submissions.recovery import remove_orphans
    from services.submissions.run import instance_label

    dk = docker.from_env()
    with new_session() as s:
        ds = Dataset(
            tier="hidden", content_hash="h" * 64, operator_version="v", preset="small", full_path="-", view_path="-"
        )
        who = Participant(name="zed")
        live = Submission(
            participant=who,
            dataset=ds,
            tier="hidden",
            kind="container",
            status="running",
            attempt=1,
            lease_expires_at=datetime.now(UTC) + timedelta(minutes=5),
        )
        dead = Submission(
            participant=who,
            dataset=ds,
            tier="hidden",
            kind="container",
            status="running",
            attempt=1,
            lease_expires_at=datetime.now(UTC) - timedelta(minutes=5),
        )
        s.add_all([live, dead])
        s.commit()
        live_run, dead_run = f"{live.id}-1", f"{dead.id}-1"
    mine = {**instance_label()}
    made = [
        dk.containers.create("edx-arena-test/busybox:latest", ["sleep 60"], labels={RUN_LABEL: rid, **mine})
        for rid in (live_run, dead_run)
    ]
    # another deployment's container on the same daemon is never touched
    made.append(
        dk.containers.create(
            "edx-arena-test/busybox:latest",
            ["sleep 60"],
            labels={RUN_LABEL: "other-1", "edx-arena.instance": "elsewhere"},
        )
    )
    try:
        assert remove_orphans() == [dead_run]
        left = {c.labels[RUN_LABEL] for c in dk.containers.list(all=True, filters={"label": RUN_LABEL})}
        assert live_run in left and "other-1" in left and dead_run not in left
    finally:
        for c in made:
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass

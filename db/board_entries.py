"""Each method's entry on each tier's board (design §7), kept in ``board_entries``.

**The rule.** An entry is a method: a (participant, method key) pair, a baseline apart. Its
entry on a tier is its best scored submission there (ties: the earlier, then the smaller id) or,
with ``leaderboard_policy=latest``, the latest; only submissions that are ``scored`` against the
tier's active dataset with a tier score row of the current scoring version count. The
``certified`` view picks among Certified submissions only (the rule of
``services.metadata.certified``, written in SQL here). :func:`candidates` is that rule, in one
window function over the submissions.

**Why a table.** Applying the rule reads every scored submission: at 100,000 that is most of a
board's cold computation (issue 20). The table holds its result, so a board reads its entries
alone. It is derived data, and it is kept in the transaction that changes what it derives
from: a hook on every ORM flush refreshes the methods whose submissions changed (status,
baseline mark, trust mark, method, tier, dataset, image), the methods that got a new tier
score row, and a tier whose active dataset changed. ``board_rules`` records the scoring
version and the policy the table was built under; a refresh recomputes under that recorded
rule, not its own process's (a worker still on the older scorer, or configured with another
policy, must not mix its rule into the table); a reader whose rule differs (a deployment
changed it, or the table is new after migration 0008) rebuilds it first
(:func:`ensure_current`).

Writes that bypass the ORM unit of work (Core ``insert``/``update`` on submissions or scores,
as the benchmarks' bulk seeding does) fire no hook: call :func:`refresh` or :func:`rebuild`
after them.

**Concurrency.** On PostgreSQL a refresh holds a transaction-scoped advisory lock on its
method (and a shared one on the table; a rebuild holds it exclusively), so two transactions
scoring the same method one after the other each see the other's committed rows; SQLite
serialises writers anyway.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    delete,
    event,
    func,
    insert,
    inspect,
    literal,
    or_,
    select,
)
from sqlalchemy.orm import Session, UOWTransaction

from core.settings import get_settings
from db.models import BoardEntry, BoardRule, Dataset, Score, Status, Submission, Trust
from harness.scoring import SCORER_VERSION
from harness.tiers import SANDBOXED_KINDS

__all__ = ["VIEWS", "candidates", "ensure_current", "rebuild", "refresh"]

#: ``all``: every scored submission may stand for its method; ``certified``: Certified ones only.
VIEWS = ("all", "certified")
#: What a change to a submission may move on the boards.
_WATCHED = ("status", "baseline", "trust", "method_key", "tier", "participant_id", "dataset_id", "kind", "image_digest")
#: Advisory lock keys (PostgreSQL): (class, object). The table as a whole; one method.
_TABLE_LOCK = (0x45445842, 0)
_METHOD_LOCK = 0x45445843

Group = tuple[int, str, str]  # (participant id, tier, method key)
_REFRESH_MAX = 2000
#: ``Session.info`` key: this session's transaction wrote entries (holds their locks).
_WROTE = "board_entries_wrote"


Rule = tuple[str, str]  # (scoring version, leaderboard policy)


def _rule() -> Rule:
    """This process's rule."""
    return SCORER_VERSION, get_settings().leaderboard_policy


def candidates(*, certified_only: bool = False, rule: Rule | None = None) -> Select:
    """Every scored submission that may be an entry, with its pick order within its method
    (``pick == 1``: the method's entry on its tier); the columns ``board_entries`` holds.
    ``rule``: (scoring version, policy), by default this process's."""
    version, policy = rule or _rule()
    where = []
    if certified_only:
        automatic = and_(
            Submission.kind.in_(SANDBOXED_KINDS), Submission.image_digest.is_not(None), Submission.image_digest != ""
        )
        where.append(
            or_(
                Submission.trust == Trust.granted,
                and_(automatic, or_(Submission.trust.is_(None), Submission.trust != Trust.revoked)),
            )
        )
    pick_order: tuple[Any, ...]
    if policy == "latest":
        pick_order = (Submission.created_at.desc(), Submission.id)
    else:
        pick_order = (Score.score.desc(), Submission.created_at, Submission.id)
    return (
        select(
            Submission.tier,
            Submission.participant_id,
            Submission.method_key,
            Submission.baseline,
            Submission.id.label("submission_id"),
            Score.score,
            Submission.created_at,
            Submission.kind,
            Submission.image_digest,
            Submission.trust,
            Submission.parent_id,
            # One entry per method; a baseline never stands in for a competing submission.
            func.row_number()
            .over(
                partition_by=(Submission.participant_id, Submission.tier, Submission.method_key, Submission.baseline),
                order_by=pick_order,
            )
            .label("pick"),
        )
        .join(Submission, Score.submission_id == Submission.id)
        .join(Dataset, Submission.dataset_id == Dataset.id)
        .where(
            Score.scene_id == "",
            Score.scoring_version == version,
            Submission.status == Status.scored,
            Dataset.active.is_(True),
            *where,
        )
    )


_COLUMNS = (
    "tier",
    "participant_id",
    "method_key",
    "baseline",
    "submission_id",
    "score",
    "created_at",
    "kind",
    "image_digest",
    "trust",
    "parent_id",
)


def _fill(connection: Connection, where, rule: Rule) -> None:
    """Insert the picks of the submissions ``where`` selects, in both views, under ``rule``."""
    for view in VIEWS:
        chosen = candidates(certified_only=view == "certified", rule=rule).where(*where).subquery()
        picked = select(literal(view).label("view"), *(chosen.c[c] for c in _COLUMNS)).where(chosen.c.pick == 1)
        connection.execute(insert(BoardEntry).from_select(["view", *_COLUMNS], picked))


def _lock(connection: Connection, *, groups: Iterable[Group] = (), table: bool = False) -> None:
    if connection.dialect.name != "postgresql":
        return
    if table:
        connection.execute(select(func.pg_advisory_xact_lock(*_TABLE_LOCK)))
        return
    connection.execute(select(func.pg_advisory_xact_lock_shared(*_TABLE_LOCK)))
    for group in sorted(groups):  # one order everywhere: two refreshes cannot deadlock
        key = zlib.crc32(repr(group).encode()) - 2**31
        connection.execute(select(func.pg_advisory_xact_lock(_METHOD_LOCK, key)))


def _stored_rule(connection: Connection) -> Rule | None:
    held = connection.execute(select(BoardRule.scoring_version, BoardRule.policy).where(BoardRule.id == 1)).first()
    return None if held is None else (held[0], held[1])


def _held_rule(connection: Connection) -> Rule:
    """The rule the table was built under (read under the table lock, so no rebuild changes it
    before this transaction ends): a refresh keeps the table under that rule whatever this
    process's is (a worker on an older scorer, or with another policy, during a deploy); a
    reader with another rule rebuilds. Before the first build, this process's."""
    return _stored_rule(connection) or _rule()


def refresh(connection: Connection, groups: Iterable[Group]) -> None:
    """Recompute these methods' entries on these tiers (both views) from their submissions,
    under the rule the table was built under."""
    groups = sorted(set(groups))
    if not groups:
        return
    _lock(connection, groups=groups)
    rule = _held_rule(connection)
    for first in range(0, len(groups), 100):  # bounded statements
        batch = groups[first : first + 100]
        # Equalities on each key (not a row-value IN, which SQLite answers with a full scan):
        # the entries' primary key and the submissions' participant index find the rows.
        connection.execute(delete(BoardEntry).where(BoardEntry.view.in_(VIEWS), _matching(BoardEntry, batch)))
        _fill(connection, [_matching(Submission, batch)], rule)


def _matching(table: Any, groups: list[Group]) -> ColumnElement[bool]:
    return or_(
        *(and_(table.tier == tier, table.participant_id == pid, table.method_key == key) for pid, tier, key in groups)
    )


def _rebuild_tiers(connection: Connection, tiers: Iterable[str]) -> None:
    tiers = sorted(set(tiers))
    if tiers:
        _lock(connection, table=True)
        connection.execute(delete(BoardEntry).where(BoardEntry.tier.in_(tiers)))
        _fill(connection, [Submission.tier.in_(tiers)], _held_rule(connection))


def rebuild(connection: Connection) -> None:
    """Build the whole table from the submissions under this process's rule, and record the rule."""
    _lock(connection, table=True)
    connection.execute(delete(BoardEntry))
    version, policy = rule = _rule()
    _fill(connection, [], rule)
    connection.execute(delete(BoardRule))
    connection.execute(insert(BoardRule).values(id=1, scoring_version=version, policy=policy))


def _current(connection: Connection) -> bool:
    return _stored_rule(connection) == _rule()


def ensure_current(session: Session) -> None:
    """Rebuild the table (and commit) if it was built under another rule than this process's.

    A session whose transaction already wrote entries (it holds their locks: PostgreSQL's
    shared table lock, SQLite's write lock) rebuilds in that transaction instead: a second
    session would wait on it for ever (PostgreSQL) or until busy_timeout (SQLite)."""
    if _current(session.connection()):
        return
    if session.info.get(_WROTE):
        connection = session.connection()
        _lock(connection, table=True)
        if not _current(connection):
            rebuild(connection)
        return
    with Session(bind=session.get_bind()) as own, own.begin():
        connection = own.connection()
        _lock(connection, table=True)
        if not _current(connection):  # another process may have rebuilt it while this one waited
            rebuild(connection)


def _changes(session: Session) -> tuple[set[Group], set[str], set[str], set[str]]:
    """What this flush changed: methods (groups) a submission may join, submissions with new or
    changed tier score rows, tiers whose active dataset changed, and submissions changed in a
    watched column (the methods they are entries of now must be refreshed)."""
    groups: set[Group] = set()
    scored: set[str] = set()
    tiers: set[str] = set()
    moved: set[str] = set()
    for obj in session.new:
        if isinstance(obj, Submission):
            if obj.status == Status.scored:
                groups.add((obj.participant_id, obj.tier, obj.method_key))
        elif isinstance(obj, Score):
            if obj.scene_id == "":
                scored.add(obj.submission_id)
        elif isinstance(obj, Dataset) and obj.active:
            tiers.add(obj.tier)
    for obj in (*session.dirty, *session.deleted):
        state = inspect(obj)
        if isinstance(obj, Submission):
            changed = any(state.attrs[a].history.has_changes() for a in _WATCHED)
            if changed or obj in session.deleted:
                # The methods it leaves are those it is an entry of now, as the table says (the
                # session's copy of its old values may be stale: sessions keep objects across
                # commits); the method it may join is its current one, if it is scored.
                moved.add(obj.id)
                if obj.status == Status.scored and obj not in session.deleted:
                    groups.add((obj.participant_id, obj.tier, obj.method_key))
        elif isinstance(obj, Score):
            scored.add(obj.submission_id)
        elif isinstance(obj, Dataset) and (obj in session.deleted or state.attrs["active"].history.has_changes()):
            tiers.add(obj.tier)
    return groups, scored, tiers, moved


@event.listens_for(Session, "after_transaction_end")
def _transaction_ended(session: Session, transaction) -> None:
    if transaction.parent is None:
        session.info.pop(_WROTE, None)


@event.listens_for(Session, "after_flush")
def _keep_entries(session: Session, _context: UOWTransaction) -> None:
    """Refresh, in the flush's transaction, whatever entries this flush may have moved."""
    groups, scored, tiers, moved = _changes(session)
    if not (groups or scored or tiers or moved):
        return
    connection = session.connection()
    if moved:
        groups |= {
            (pid, tier, key)
            for pid, tier, key in connection.execute(
                select(BoardEntry.participant_id, BoardEntry.tier, BoardEntry.method_key)
                .where(BoardEntry.submission_id.in_(moved))
                .distinct()
            )
        }
        if not (groups or scored or tiers):
            return
    session.info[_WROTE] = True  # until this transaction ends (see ensure_current)
    if scored:
        groups |= {
            (pid, tier, key)
            for pid, tier, key in connection.execute(
                select(Submission.participant_id, Submission.tier, Submission.method_key).where(
                    Submission.id.in_(scored)
                )
            )
        }
    # Past a few thousand methods (an organizer's rescore of a whole scoring version) one pass
    # over their tiers is cheaper than a statement per hundred methods.
    if len(groups) > _REFRESH_MAX:
        tiers |= {tier for _, tier, _ in groups}
    _rebuild_tiers(connection, tiers)
    refresh(connection, {g for g in groups if g[1] not in tiers})

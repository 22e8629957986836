"""Leaderboards (design §7).

Ranked by score, descending; equal scores share a rank (competition ranking 1, 1, 3). Only
scored submissions against the tier's active dataset, with a score row of the current
scoring version, appear. An entry is a **method**: a (participant, method key) pair, the key
being the normal form of the method name (:func:`harness.methods.method_key`). A method's entry
on a tier is its best scored submission there (ties: the earlier) or, with
``leaderboard_policy=latest``, the latest. The overall board lists methods with an entry on all
of Public, Dev and Hidden, each tier's score and PSNR / SSIM side by side, at most
``overall_methods_per_participant`` rows per participant (their best). A row is Certified when
its three entries are the server's runs of one artifact (:func:`services.metadata.certified_row`);
``certified=True`` shows the certified view: each method by its best certified artifact.

Each method's entry is chosen where submissions change, not here: ``board_entries``
(:mod:`db.board_entries`, which holds the rule) is read, so a board costs O(its entries), not
O(every scored submission). The ranking runs in SQL (window functions on a tier board; the
overall board's method rows grouped in SQL, on SQLite and PostgreSQL); figures, texts and the
Certified badge are read for the page's entries only. The certified overall view reads every
server run, since an artifact's runs need not be its method's picks.

**Intervals and ties (issue 10).** Each entry carries the 95 % block-bootstrap interval of
its score (``ci_low``, ``ci_high``): a tier entry's is stored on its score row; an overall
entry's is the percentile interval of the mean of its three tier score draws. Competing
entries next to each other in rank order (baselines left out) whose paired bootstrap
probability of one beating the other lies within [2.5 %, 97.5 %] are tied; ties chain into
groups, and every member of a group carries the group's ``tie_group``: the 1-based position
(among competing entries, in rank order) of the group's first entry, the same on every page.
Ranks stay the classic ranks; ``leaderboard_ties=false`` turns the tie marks off.

Each verdict on a pair of neighbours is kept per process (a score row is written once per
submission and scoring version, so it never changes); draws are read from the tier rows'
``tile_stats`` only for pairs not judged yet: the page, its successor, and the entries before
it back to the first separated pair.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter

import numpy as np
from sqlalchemy import Row, Select, case, func, select
from sqlalchemy.orm import Session

from core.settings import get_settings
from db.board_entries import candidates, ensure_current
from db.models import BoardEntry, Participant, Score, Submission, Trust
from harness.scoring import SCORER_VERSION, overall_draws, overall_score
from harness.tiers import BLIND_TIERS, SANDBOXED_KINDS, TIER_RULES, TIERS
from harness.uncertainty import CONFIDENCE, decode_draws, groups_from_links, inseparable, percentile_interval
from services.errors import ServiceError, UnavailableError
from services.metadata import artifact_of, certified, certified_row

__all__ = ["BOARDS", "MAX_PAGE", "MAX_PER_PAGE", "Entry", "leaderboard"]

BOARDS = (*TIERS, "overall")
#: The blind tier whose submissions the server runs: the overall entry's method comes from it.
_RUN_TIER = next(t for t in BLIND_TIERS if TIER_RULES[t].server_runs)
MAX_PER_PAGE = 500
#: No board has a million pages; a larger number would overflow the SQL OFFSET.
MAX_PAGE = 10**6


@dataclass
class Entry:
    #: None for a reference baseline: shown at its score, outside the ranking.
    rank: int | None
    participant: str
    team: str
    method: str
    source: str
    score: float
    psnr: float | None
    ssim: float | None
    certified: bool
    submission_id: str | None
    submitted_at: datetime | None
    #: Overall board only: ``{tier: {"score", "psnr", "ssim", "submission_id", "ci_low", "ci_high"}}``.
    tiers: dict[str, dict] = field(default_factory=dict)
    #: 95 % bootstrap interval of ``score`` (issue 10); None when the row has none. Not
    #: necessarily symmetric around ``score``.
    ci_low: float | None = None
    ci_high: float | None = None
    #: Adjacent competing entries the paired bootstrap cannot separate at 95 % share a tie
    #: group: the 1-based rank-order position of the group's first entry. None: not tied
    #: (or a baseline, or ties turned off).
    tie_group: int | None = None
    #: An organizer-marked reference baseline: shown, but not competing (issue 9).
    baseline: bool = False
    description: str = ""


def _entries(tier: str, *, view: str) -> Select:
    """Each method's entry on ``tier`` (:mod:`db.board_entries`), with its participant's name:
    one row per entry, no choosing."""
    return (
        select(*BoardEntry.__table__.c, Participant.name)
        .join(Participant, BoardEntry.participant_id == Participant.id)
        .where(BoardEntry.view == view, BoardEntry.tier == tier)
    )


class _Rebuilt(Exception):
    """The entries were rebuilt under another rule between this read's check and its queries
    (another server process on another scoring version or policy, mid-deploy)."""


def _details(session: Session, submission_ids: Iterable[str]) -> dict[str, Row]:
    """What an entry shows beyond its rank, for the page's submissions: their current tier
    score rows' figures and intervals, the method's texts, the team. Raises :class:`_Rebuilt`
    when one has no current tier row: an entry chosen under another rule."""
    ids = list(dict.fromkeys(submission_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(
            Score.score,
            Score.psnr,
            Score.ssim,
            Score.ci_low,
            Score.ci_high,
            Submission.id.label("submission_id"),
            Submission.parent_id,
            Submission.method,
            Submission.source,
            Submission.description,
            Submission.kind,
            Submission.image_digest,
            Submission.trust,
            Submission.tier,
            Participant.team,
        )
        .join(Submission, Score.submission_id == Submission.id)
        .join(Participant, Submission.participant_id == Participant.id)
        .where(Submission.id.in_(ids), Score.scene_id == "", Score.scoring_version == SCORER_VERSION)
    ).all()
    found = {row.submission_id: row for row in rows}
    if len(found) < len(ids):
        raise _Rebuilt
    return found


def _tier_board(
    session: Session, tier: str, *, offset: int, limit: int, certified_only: bool = False
) -> tuple[list[Entry], int]:
    picked = _entries(tier, view="certified" if certified_only else "all").subquery()
    ranked = select(
        picked.c.submission_id,
        picked.c.score,
        picked.c.baseline,
        picked.c.created_at,
        picked.c.name,
        # Baselines are ranked apart (then shown unranked), so they never displace a participant.
        func.rank().over(partition_by=picked.c.baseline, order_by=picked.c.score.desc()).label("rank"),
        # Rank order among competing entries, as displayed: the positions tie groups are named by.
        func.row_number()
        .over(partition_by=picked.c.baseline, order_by=(picked.c.score.desc(), picked.c.created_at, picked.c.name))
        .label("position"),
    ).subquery()
    # The whole board in display order, from one evaluation of the window functions: the page
    # is a slice of it, and the tie chain before the page reads the same rows (a second query
    # for them would pay the pick over every submission again).
    board = (
        session.connection()
        .execute(select(ranked).order_by(ranked.c.score.desc(), ranked.c.baseline, ranked.c.created_at, ranked.c.name))
        .all()
    )
    total = len(board)
    rows = board[offset : offset + limit]
    details = _details(session, (row.submission_id for row in rows))
    entries = []
    for row in rows:
        more = details[row.submission_id]
        entries.append(
            Entry(
                rank=None if row.baseline else row.rank,
                participant=row.name,
                team=more.team,
                method=more.method,
                source=more.source,
                score=row.score,
                psnr=more.psnr,
                ssim=more.ssim,
                certified=certified(tier=tier, kind=more.kind, image_digest=more.image_digest, trust=more.trust),
                submission_id=row.submission_id,
                submitted_at=row.created_at,
                baseline=bool(row.baseline),
                description=more.description,
                ci_low=more.ci_low,
                ci_high=more.ci_high,
            )
        )
    competing = {row.position: entry for row, entry in zip(rows, entries) if not row.baseline}
    if competing and get_settings().leaderboard_ties:
        # Submission ids in rank order up to one past the page: ids only, the draws stay in
        # the database until a pair needs judging.
        last = max(competing) + 1
        order = [
            row.submission_id
            for row in sorted((r for r in board if not r.baseline and r.position <= last), key=lambda r: r.position)
        ]
        for position, group in _page_groups(competing, list(order), lambda ids: _tier_draws(session, ids)).items():
            competing[position].tie_group = group
    return entries, total


#: Verdicts already reached in this process: (key of the higher entry, key of the lower) →
#: tied. Keys name score rows that never change, so a verdict never goes stale.
_LINKS: OrderedDict[tuple, bool] = OrderedDict()
_LINKS_MAX = 50_000  # ≈ 10 MB at most; a board needs about one verdict per entry
_LINKS_LOCK = threading.Lock()
#: Overall intervals by the triple of tier submission ids (immutable for the same reason).
_OVERALL_CI: OrderedDict[tuple, tuple[float | None, float | None]] = OrderedDict()

Loader = Callable[[list], dict]


def _tier_draws(session: Session, submission_ids: list[str]) -> dict[str, tuple[str, np.ndarray]]:
    """``{submission id: (resample key, score draws)}`` of these submissions' current tier
    rows; rows without draws (or damaged ones, which then show untied) are left out."""
    if not submission_ids:
        return {}
    rows = session.execute(
        select(Score.submission_id, Score.tile_stats).where(
            Score.submission_id.in_(submission_ids), Score.scene_id == "", Score.scoring_version == SCORER_VERSION
        )
    ).all()
    out = {}
    for sid, ts in rows:
        if isinstance(ts, dict) and ts.get("kind") == "tier" and ts.get("draws"):
            try:
                out[sid] = (str(ts.get("resample_key")), decode_draws(ts["draws"]))
            except ValueError:
                continue
    return out


def _links(pairs: list[tuple[Hashable, Hashable]], load: Loader) -> list[bool]:
    """Whether each (higher, lower) pair is tied: inseparable paired draws under the same
    resample key. Pairs not judged before are judged together, with one ``load`` of draws."""
    with _LINKS_LOCK:
        known = {p: _LINKS[p] for p in pairs if p in _LINKS}
    missing = [p for p in pairs if p not in known]
    if missing:
        loaded = load(list({k for p in missing for k in p}))
        for a, b in missing:
            da, db = loaded.get(a), loaded.get(b)
            known[a, b] = (
                da is not None
                and db is not None
                and da[0] == db[0]
                and inseparable(da[1], db[1], confidence=CONFIDENCE)
            )
        with _LINKS_LOCK:
            for p in missing:
                _LINKS[p] = known[p]
            while len(_LINKS) > _LINKS_MAX:
                _LINKS.popitem(last=False)
    return [known[p] for p in pairs]


def _page_groups(page: dict[int, Entry], order: list[Hashable], load: Loader) -> dict[int, int | None]:
    """Tie groups of the page's competing entries, keyed by position (1-based rank order).

    ``order`` holds the keys of the competing entries from position 1 to at least one past
    the page. The page's links (and the one to its successor) are judged first; then, while
    the chain reaching the page's first entry holds, the links before it in growing batches,
    so that the first entry's group is named by its true first member.
    """
    first, last = min(page), max(page)
    links: dict[int, bool] = {}  # links[p]: positions p and p + 1 are tied

    def judge(positions: list[int]) -> None:
        todo = [p for p in positions if p not in links and p + 1 <= len(order)]
        for p, tied in zip(todo, _links([(order[p - 1], order[p]) for p in todo], load)):
            links[p] = tied
        for p in positions:
            links.setdefault(p, False)  # no successor on the board

    judge(list(range(first, last + 1)))
    start, batch = first, 16
    while start > 1:
        span = list(range(max(1, start - batch), start))
        judge(span)
        broken = [p for p in span if not links[p]]
        if broken:
            break
        start, batch = span[0], batch * 2
    # The window starts after the last separated pair before the page (or at the top), so
    # every chain reaching the page is named by its true first member.
    window = 1 + max((p for p in links if p < first and not links[p]), default=0)
    groups = groups_from_links([links[p] for p in range(window, last + 1)])
    return {p: None if groups[p - window] is None else window + groups[p - window] for p in page}


class _Row:
    """One overall method row, holding what ranking needs: each blind tier's entry (its
    submission id, score and time) in :data:`BLIND_TIERS` order. ``certified`` is None when
    not worked out yet (a board's rows; the page's are, from their details)."""

    __slots__ = ("baseline", "certified", "ids", "latest", "method", "name", "order", "score")

    def __init__(self, *, method: tuple, name: str, ids: tuple, scores: tuple, times: tuple, certified=None) -> None:
        #: Whose method: (participant, method key, baseline).
        self.method = method
        self.baseline = method[2]
        self.name = name
        self.ids = ids
        self.score = overall_score(dict(zip(BLIND_TIERS, scores)))
        self.latest = max(times)
        self.order = (-self.score, self.baseline, self.latest, self.name)
        self.certified: bool | None = certified

    @classmethod
    def of_runs(cls, runs: dict) -> _Row:
        """The row of one artifact's runs (``{tier: candidate row}``, every blind tier)."""
        mine = [runs[t] for t in BLIND_TIERS]
        first = mine[0]
        return cls(
            method=(first.participant_id, first.method_key, all(bool(r.baseline) for r in mine)),
            name=first.name,
            ids=tuple(r.submission_id for r in mine),
            scores=tuple(r.score for r in mine),
            times=tuple(r.created_at for r in mine),
            certified=certified_row(mine),
        )


def _method_rows(session: Session, *, granted_only: bool = False) -> list[_Row]:
    """Each method with an entry on every blind tier (its entry per tier, however made), one
    SQL row each; ``granted_only``: only rows whose three entries an organizer certified."""
    e = BoardEntry
    per_tier = []
    for t in BLIND_TIERS:
        on = e.tier == t
        per_tier += [
            func.max(case((on, e.submission_id))),
            func.max(case((on, e.score))),
            func.max(case((on, e.created_at))),
        ]
    query = (
        select(e.participant_id, e.method_key, e.baseline, Participant.name, *per_tier)
        .join(Participant, e.participant_id == Participant.id)
        .where(e.view == "all", e.tier.in_(BLIND_TIERS))
        .group_by(e.participant_id, e.method_key, e.baseline, Participant.name)
        .having(func.count() == len(BLIND_TIERS))
    )
    if granted_only:
        query = query.having(func.sum(case((e.trust == Trust.granted, 1), else_=0)) == len(BLIND_TIERS))
    rows = []
    for pid, key, baseline, name, *cells in session.connection().execute(query).all():
        rows.append(
            _Row(
                method=(pid, key, bool(baseline)),
                name=name,
                ids=tuple(cells[0::3]),
                scores=tuple(cells[1::3]),
                times=tuple(cells[2::3]),
                certified=True if granted_only else None,
            )
        )
    return rows


def _certified_rows(session: Session) -> list[_Row]:
    """The certified view: each method by its best (or, ``latest``, latest) certified row,
    one artifact's three server runs, or a row an organizer certified entry by entry."""
    # Every server run of every artifact, not only each method's pick: an artifact whose runs
    # are not its method's best on some tier still makes a certified row.
    runs = (
        candidates()
        .add_columns(Participant.name)
        .join(Participant, Submission.participant_id == Participant.id)
        .where(Submission.tier.in_(BLIND_TIERS), Submission.kind.in_(SANDBOXED_KINDS))
        .subquery()
    )
    by_artifact: dict[str, dict] = {}
    for row in session.connection().execute(select(runs)):
        by_artifact.setdefault(artifact_of(row), {}).setdefault(row.tier, row)
    rows = [_Row.of_runs(mine) for mine in by_artifact.values() if len(mine) == len(BLIND_TIERS)]
    rows = [r for r in rows if r.certified]
    # Beyond one artifact's runs, :func:`services.metadata.certified_row` certifies a row
    # whose three entries an organizer granted (duplicates of a method go below).
    rows += _method_rows(session, granted_only=True)
    latest = get_settings().leaderboard_policy == "latest"
    best: dict[tuple, _Row] = {}
    for r in rows:
        held = best.get(r.method)
        if held is None or ((r.latest, -r.score) > (held.latest, -held.score) if latest else r.order < held.order):
            best[r.method] = r
    return list(best.values())


def _capped(rows: list[_Row]) -> list[_Row]:
    """Rank order, at most ``overall_methods_per_participant`` competing rows per participant
    (their best; baselines are the organizers' and are not capped)."""
    cap = get_settings().overall_methods_per_participant
    held: dict[int, int] = {}
    out = []
    for r in sorted(rows, key=attrgetter("order")):
        if not r.baseline:
            participant = r.method[0]
            held[participant] = held.get(participant, 0) + 1
            if held[participant] > cap:
                continue
        out.append(r)
    return out


def _overall(session: Session, *, offset: int, limit: int, certified_only: bool = False) -> tuple[list[Entry], int]:
    """Methods with an entry on every blind tier, by :func:`harness.scoring.overall_score`.

    One scan picks every method's entry on the three tiers; only the requested page's entries
    read their details and become objects.
    """
    complete = _capped(_certified_rows(session) if certified_only else _method_rows(session))
    entries: list[Entry] = []
    page: list[tuple[_Row, int | None]] = []  # the page's rows and their ranks
    rank = ranked = 0
    previous = None
    for i, row in enumerate(complete[: offset + limit]):
        if not row.baseline:  # baselines are shown unranked and do not count towards ranks
            ranked += 1
            rank = rank if previous is not None and row.score == previous else ranked
            previous = row.score
        if i >= offset:
            page.append((row, None if row.baseline else rank))
    details = _details(session, (sid for row, _ in page for sid in row.ids))
    for row, row_rank in page:
        mine = {t: details[sid] for t, sid in zip(BLIND_TIERS, row.ids)}
        # The overall entry is named after its server-run tier's submission when there is one.
        public, hidden = mine[BLIND_TIERS[0]], mine[_RUN_TIER]
        tiers = {
            t: {
                "score": mine[t].score,
                "psnr": mine[t].psnr,
                "ssim": mine[t].ssim,
                "submission_id": mine[t].submission_id,
                "ci_low": mine[t].ci_low,
                "ci_high": mine[t].ci_high,
                "certified": certified(
                    tier=t, kind=mine[t].kind, image_digest=mine[t].image_digest, trust=mine[t].trust
                ),
                # An uploaded result: the participant's word, not the server's run.
                "self_reported": mine[t].kind not in SANDBOXED_KINDS,
                "artifact": artifact_of(mine[t]),
            }
            for t in BLIND_TIERS
        }
        entries.append(
            Entry(
                participant=row.name,
                team=public.team,
                method=hidden.method or public.method,
                source=hidden.source or public.source,
                score=row.score,
                psnr=None,
                ssim=None,
                certified=certified_row(mine.values()) if row.certified is None else row.certified,
                submission_id=None,
                submitted_at=row.latest,
                tiers=tiers,
                rank=row_rank,
                baseline=row.baseline,
                description=hidden.description or public.description,
            )
        )
    _overall_intervals(session, complete, entries, offset=offset)
    return entries, len(complete)


def _overall_intervals(session: Session, complete: list[_Row], entries: list[Entry], *, offset: int) -> None:
    """Overall intervals of the page's entries and, among competing entries, tie groups.

    An overall entry's draws are the mean of its three tier score draws
    (:func:`harness.scoring.overall_draws`), paired across entries tier by tier; its key is
    the triple of its tier submission ids.
    """

    def key(i: int) -> tuple[str, ...]:
        return complete[i].ids

    def load(keys: list[tuple[str, ...]]) -> dict[tuple, tuple[tuple, np.ndarray]]:
        by_tier = [_tier_draws(session, [k[j] for k in keys]) for j in range(len(BLIND_TIERS))]
        out = {}
        for k in keys:
            parts = [by_tier[j].get(k[j]) for j in range(len(BLIND_TIERS))]
            if all(p is not None for p in parts):
                draws = overall_draws({t: p[1] for t, p in zip(BLIND_TIERS, parts)})
                if draws is not None:
                    out[k] = (tuple(p[0] for p in parts), draws)
        return out

    page = list(range(offset, offset + len(entries)))
    with _LINKS_LOCK:
        known = {key(i): _OVERALL_CI[key(i)] for i in page if key(i) in _OVERALL_CI}
    missing = [key(i) for i in page if key(i) not in known]
    if missing:
        loaded = load(missing)
        for k in missing:
            known[k] = percentile_interval(loaded[k][1], confidence=CONFIDENCE) if k in loaded else (None, None)
        with _LINKS_LOCK:
            for k in missing:
                _OVERALL_CI[k] = known[k]
            while len(_OVERALL_CI) > _LINKS_MAX:
                _OVERALL_CI.popitem(last=False)
    for i, entry in zip(page, entries):
        entry.ci_low, entry.ci_high = known[key(i)]
    if not get_settings().leaderboard_ties:
        return
    competing = [i for i, c in enumerate(complete) if not c.baseline]  # rank order: the list is sorted
    position_of = {i: p + 1 for p, i in enumerate(competing)}
    on_page = {position_of[i]: entry for i, entry in zip(page, entries) if i in position_of}
    if on_page:
        order = [key(i) for i in competing[: max(on_page) + 1]]
        for position, group in _page_groups(on_page, order, load).items():
            on_page[position].tie_group = group


def leaderboard(
    session: Session, *, board: str, page: int = 1, per_page: int = 50, certified_only: bool = False
) -> tuple[list[Entry], int]:
    """One page of ``board`` (a tier or ``overall``) and the board's total number of entries;
    ``certified_only``: Certified entries only (on the overall board, the certified view)."""
    if board not in BOARDS:
        raise ServiceError(f"unknown leaderboard {board!r}; boards are {', '.join(BOARDS)}")
    if not 1 <= page <= MAX_PAGE or not 1 <= per_page <= MAX_PER_PAGE:
        raise ServiceError(f"page must be between 1 and {MAX_PAGE} and per_page between 1 and {MAX_PER_PAGE}")
    offset = (page - 1) * per_page
    for _ in range(2):  # a rebuild under another rule can land between the check and the read once
        ensure_current(session)
        # Entries are read through session.connection(), which does not autoflush: flush here,
        # so the board sees this session's pending changes as a session.execute() query would
        # (after ensure_current, whose own session would wait for the write lock this flush may take).
        session.flush()
        try:
            if board == "overall":
                return _overall(session, offset=offset, limit=per_page, certified_only=certified_only)
            return _tier_board(session, board, offset=offset, limit=per_page, certified_only=certified_only)
        except _Rebuilt:
            continue
    # Processes on different rules keep rebuilding the table for their own: a deploy that
    # changes the scorer or the policy restarts every process together (docs/operations.md).
    raise UnavailableError("the boards are being rebuilt under a new scoring rule; try again shortly")

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

The choice of entry and the ranking run in SQL (window functions, on SQLite and PostgreSQL).

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
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from core.settings import get_settings
from db.models import Dataset, Participant, Score, Status, Submission, Trust
from harness.scoring import SCORER_VERSION, overall_draws, overall_score
from harness.tiers import BLIND_TIERS, SANDBOXED_KINDS, TIER_RULES, TIERS
from harness.uncertainty import CONFIDENCE, decode_draws, groups_from_links, inseparable, percentile_interval
from services.errors import ServiceError
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


def _candidates(*tiers: str, certified_only: bool = False) -> Select:
    """Every scored submission on ``tiers`` that may be an entry, with its pick order within
    its method (``pick == 1``: the method's entry on the tier); ``certified_only``: only
    Certified ones (:func:`services.metadata.certified`, written in SQL)."""
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
    if get_settings().leaderboard_policy == "latest":
        pick_order = (Submission.created_at.desc(), Submission.id)
    else:
        pick_order = (Score.score.desc(), Submission.created_at, Submission.id)
    return (
        select(
            Score.score,
            Score.psnr,
            Score.ssim,
            Score.ci_low,
            Score.ci_high,
            Submission.id.label("submission_id"),
            Submission.parent_id,
            Submission.method,
            Submission.method_key,
            Submission.source,
            Submission.kind,
            Submission.image_digest,
            Submission.created_at,
            Submission.tier,
            Submission.participant_id,
            Submission.baseline,
            Submission.trust,
            Submission.description,
            Participant.name,
            Participant.team,
            # One entry per method; a baseline never stands in for a competing submission.
            func.row_number()
            .over(
                partition_by=(Submission.participant_id, Submission.tier, Submission.method_key, Submission.baseline),
                order_by=pick_order,
            )
            .label("pick"),
        )
        .join(Submission, Score.submission_id == Submission.id)
        .join(Participant, Submission.participant_id == Participant.id)
        .join(Dataset, Submission.dataset_id == Dataset.id)
        .where(
            Score.scene_id == "",
            Score.scoring_version == SCORER_VERSION,
            Submission.tier.in_(tiers),
            Submission.status == Status.scored,
            Dataset.active.is_(True),
            *where,
        )
    )


def _picked(*tiers: str, certified_only: bool = False) -> Select:
    """Each method's one scored entry on each of ``tiers`` (unranked)."""
    candidates = _candidates(*tiers, certified_only=certified_only).subquery()
    return select(candidates).where(candidates.c.pick == 1)


def _tier_board(
    session: Session, tier: str, *, offset: int, limit: int, certified_only: bool = False
) -> tuple[list[Entry], int]:
    picked = _picked(tier, certified_only=certified_only).subquery()
    ranked = select(
        picked,
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
    board = session.execute(
        select(ranked).order_by(ranked.c.score.desc(), ranked.c.baseline, ranked.c.created_at, ranked.c.name)
    ).all()
    total = len(board)
    rows = board[offset : offset + limit]
    entries = [
        Entry(
            rank=None if row.baseline else row.rank,
            participant=row.name,
            team=row.team,
            method=row.method,
            source=row.source,
            score=row.score,
            psnr=row.psnr,
            ssim=row.ssim,
            certified=certified(tier=tier, kind=row.kind, image_digest=row.image_digest, trust=row.trust),
            submission_id=row.submission_id,
            submitted_at=row.created_at,
            baseline=bool(row.baseline),
            description=row.description,
            ci_low=row.ci_low,
            ci_high=row.ci_high,
        )
        for row in rows
    ]
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


@dataclass
class _Row:
    """One overall method row: its three tier entries (``picks``, rows of :func:`_candidates`)."""

    picks: dict
    score: float = 0.0
    baseline: bool = False
    certified: bool = False
    latest: datetime | None = None

    def __post_init__(self) -> None:
        self.score = overall_score({t: self.picks[t].score for t in BLIND_TIERS})
        self.baseline = all(bool(self.picks[t].baseline) for t in BLIND_TIERS)
        self.certified = certified_row(self.picks[t] for t in BLIND_TIERS)
        self.latest = max(self.picks[t].created_at for t in BLIND_TIERS)

    @property
    def name(self) -> str:
        return self.picks[BLIND_TIERS[0]].name

    @property
    def method(self) -> tuple:
        """Whose method: (participant, method key, baseline)."""
        first = self.picks[BLIND_TIERS[0]]
        return (first.participant_id, first.method_key, bool(first.baseline))

    def order(self) -> tuple:
        return (-self.score, self.baseline, self.latest, self.name)


def _complete(groups: dict) -> list[_Row]:
    return [_Row(mine) for mine in groups.values() if len(mine) == len(BLIND_TIERS)]


def _method_rows(session: Session) -> list[_Row]:
    """Each method with an entry on every blind tier: its entry per tier, however made."""
    by_method: dict[tuple, dict] = {}
    for row in session.execute(_picked(*BLIND_TIERS)):
        by_method.setdefault((row.participant_id, row.method_key, bool(row.baseline)), {})[row.tier] = row
    return _complete(by_method)


def _certified_rows(session: Session) -> list[_Row]:
    """The certified view: each method by its best (or, ``latest``, latest) certified row,
    one artifact's three server runs, or a row an organizer certified entry by entry."""
    candidates = _candidates(*BLIND_TIERS).subquery()
    by_artifact: dict[str, dict] = {}
    for row in session.execute(select(candidates).where(candidates.c.kind.in_(SANDBOXED_KINDS))):
        by_artifact.setdefault(artifact_of(row), {}).setdefault(row.tier, row)
    rows = [r for r in _complete(by_artifact) if r.certified]
    rows += [r for r in _method_rows(session) if r.certified]  # organizers' grants; duplicates go below
    latest = get_settings().leaderboard_policy == "latest"
    best: dict[tuple, _Row] = {}
    for r in rows:
        held = best.get(r.method)
        if held is None or ((r.latest, -r.score) > (held.latest, -held.score) if latest else r.order() < held.order()):
            best[r.method] = r
    return list(best.values())


def _capped(rows: list[_Row]) -> list[_Row]:
    """Rank order, at most ``overall_methods_per_participant`` competing rows per participant
    (their best; baselines are the organizers' and are not capped)."""
    cap = get_settings().overall_methods_per_participant
    held: dict[int, int] = {}
    out = []
    for r in sorted(rows, key=_Row.order):
        if not r.baseline:
            participant = r.method[0]
            held[participant] = held.get(participant, 0) + 1
            if held[participant] > cap:
                continue
        out.append(r)
    return out


def _overall(session: Session, *, offset: int, limit: int, certified_only: bool = False) -> tuple[list[Entry], int]:
    """Methods with an entry on every blind tier, by :func:`harness.scoring.overall_score`.

    One scan picks every method's entry on the three tiers; only the requested page becomes
    objects.
    """
    complete = _capped(_certified_rows(session) if certified_only else _method_rows(session))
    entries = []
    rank = ranked = 0
    previous = None
    for i, row in enumerate(complete[: offset + limit]):
        if not row.baseline:  # baselines are shown unranked and do not count towards ranks
            ranked += 1
            rank = rank if previous is not None and row.score == previous else ranked
            previous = row.score
        if i < offset:
            continue
        mine = row.picks
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
                certified=row.certified,
                submission_id=None,
                submitted_at=row.latest,
                tiers=tiers,
                rank=None if row.baseline else rank,
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
        return tuple(complete[i].picks[t].submission_id for t in BLIND_TIERS)

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
    if board == "overall":
        return _overall(session, offset=offset, limit=per_page, certified_only=certified_only)
    return _tier_board(session, board, offset=offset, limit=per_page, certified_only=certified_only)

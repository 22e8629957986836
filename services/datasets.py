"""Tier datasets: organizers generate or upload them; participants download the views; the
tiers are listed with what each publishes.

Each dataset is stored under ``storage_dir/datasets/<tier>/<id>/``: ``full.h5`` with the
truth (server only: scoring), ``view.h5``, what a participant may read (Public, with truth;
Dev, without), and, where that view carries the truth, ``run.h5``: what a sandboxed run of the
tier reads (:func:`run_input_path`; never the truth: a Hidden image is also run on Public).
None of the files carries the seed. Whether
the view carries the truth follows the tier's rules (:data:`harness.tiers.TIER_RULES`) and is
stored on the row (``truth_in_view``).
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.settings import get_settings
from db.models import Dataset
from harness.dataset import TierDataset
from harness.errors import FormatError
from harness.formats import (
    ResultExpectation,
    read_measurement,
    validate_measurement,
    write_measurement,
    write_run_view,
)
from harness.scenes import build_tier
from harness.tiers import PRESETS, TIER_RANGES, TIER_RULES, TIERS
from services.access import can_download, rules_of
from services.errors import NotFoundError, ServiceError

__all__ = [
    "TierInfo",
    "active_dataset",
    "download_path",
    "list_tiers",
    "prefetch_scoring_dataset",
    "remove_files",
    "result_expectation",
    "run_input_path",
    "scene_ids",
    "scoring_dataset",
    "seed_tier",
    "upload_tier",
]

#: How many datasets (with truth) a process keeps loaded for scoring: the active tiers'.
_SCORING_CACHE_SIZE = 4
_scoring_cache: OrderedDict[tuple[str, str], TierDataset] = OrderedDict()
_scoring_locks: dict[tuple[str, str], threading.Lock] = {}
_scoring_guard = threading.Lock()


def _check_truth_choice(tier: str, with_truth: bool) -> None:
    if with_truth and rules_of(tier).truth_in_view is not None:
        chosen = [t for t, r in TIER_RULES.items() if r.truth_in_view is None]
        always = [t for t, r in TIER_RULES.items() if r.truth_in_view is True]
        never = [t for t, r in TIER_RULES.items() if r.truth_in_view is False]
        raise ServiceError(
            f"with_truth is the organizer's choice on the {_names(chosen)} tier only; the {_names(always)} tier "
            f"always includes its truth and the {_names(never)} tiers never do"
        )


def _names(tiers: list[str]) -> str:
    return " and ".join([", ".join(tiers[:-1]), tiers[-1]] if len(tiers) > 1 else tiers)


def _store(session: Session, tier: str, dataset: TierDataset, *, seed: int | None, with_truth: bool = False) -> Dataset:
    """Write both files, then make the dataset the tier's active one (flushed, not committed)."""
    folder = get_settings().storage_dir / "datasets" / tier / uuid.uuid4().hex
    folder.mkdir(parents=True)
    full, view = folder / "full.h5", folder / "view.h5"
    try:
        write_measurement(dataset, full, include_truth=True)
        # Public participants get the truth; Dev participants and Hidden containers never do;
        # on the Standard track it is the organizer's choice (default: no truth).
        public = rules_of(tier).truth_published(organizer_choice=with_truth)
        write_measurement(dataset.participant_view(with_truth=public), view, include_truth=public)
        if public:
            write_run_view(dataset, folder / _RUN_VIEW)
        expectation = ResultExpectation.for_dataset(dataset, max_bytes=1).as_dict()
        del expectation["max_bytes"]  # a setting, applied when a result is checked
        session.execute(update(Dataset).where(Dataset.tier == tier, Dataset.active.is_(True)).values(active=False))
        row = Dataset(
            tier=tier,
            content_hash=dataset.content_hash,
            operator_version=dataset.operator_version,
            preset=dataset.preset.name,
            seed=seed,
            expectation=expectation,
            full_path=str(full),
            view_path=str(view),
            truth_in_view=public,
            active=True,
        )
        session.add(row)
        session.flush()
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return row


#: A sandboxed run's input beside a view that carries the truth (see :func:`run_input_path`).
_RUN_VIEW = "run.h5"
_run_view_lock = threading.Lock()


def run_input_path(row: Dataset) -> Path:
    """What a sandboxed run on ``row`` reads as ``/input/measurement.h5``: the participants'
    view where it has no truth, else the same view without it (``run.h5``, written when the
    dataset was stored, or here once for a dataset stored before runs on Public existed)."""
    if not row.truth_in_view:
        return Path(row.view_path)
    path = Path(row.view_path).with_name(_RUN_VIEW)
    with _run_view_lock:
        if not path.is_file():
            write_run_view(read_measurement(row.full_path), path)  # atomic: a crash leaves no half file
    return path


def seed_tier(session: Session, *, tier: str, seed: int, preset: str = "default", with_truth: bool = False) -> Dataset:
    """Generate a tier's scenes from ``seed`` and make it the tier's active dataset.

    ``with_truth`` (Standard tier only) puts the truth in the participants' download too.
    """
    rules_of(tier)
    _check_truth_choice(tier, with_truth)
    if preset not in PRESETS:
        raise ServiceError(f"unknown preset {preset!r}; presets are {', '.join(PRESETS)}")
    return _store(session, tier, build_tier(tier, seed=seed, preset=preset), seed=seed, with_truth=with_truth)


def upload_tier(session: Session, *, tier: str, path: Path, with_truth: bool = False) -> Dataset:
    """Validate an organizer's full dataset file (with truth) and make it the active one.

    Raises ``FormatError`` (nothing stored) when the file is not a valid measurement file
    with truth for ``tier``.
    """
    rules_of(tier)
    _check_truth_choice(tier, with_truth)
    validate_measurement(path, max_bytes=get_settings().max_image_bytes, require_truth=True)
    dataset = read_measurement(path)
    if dataset.tier != tier:
        raise FormatError(
            f"the file is a {dataset.tier!r} tier dataset (its scenes are named for that tier); "
            f"upload it to the {dataset.tier} tier or build it for {tier!r}",
            rule="tier",
        )
    return _store(session, tier, dataset, seed=None, with_truth=with_truth)


def active_dataset(session: Session, tier: str) -> Dataset:
    rules_of(tier)
    row = session.scalar(select(Dataset).where(Dataset.tier == tier, Dataset.active.is_(True)))
    if row is None:
        raise NotFoundError(f"the {tier} tier has no dataset yet; an organizer must seed it")
    return row


def result_expectation(row: Dataset, *, max_bytes: int) -> ResultExpectation:
    """What a result answering ``row`` must look like, without reading the measurement."""
    if row.expectation is None:  # a dataset stored before the expectation was recorded
        return ResultExpectation.for_dataset(read_measurement(row.view_path), max_bytes=max_bytes)
    return ResultExpectation.from_mapping({**row.expectation, "max_bytes": max_bytes})


def scene_ids(row: Dataset) -> list[str]:
    """The dataset's scene ids, from its recorded expectation (no file read when recorded)."""
    return list(result_expectation(row, max_bytes=1).scene_ids)


def scoring_dataset(row: Dataset) -> TierDataset:
    """The dataset with truth that scores answers to ``row``, loaded once per process.

    Decompressing a default tier's counts takes ~0.4 s, longer than scoring it; a worker scores
    many submissions against the same few active datasets, so it keeps the last few loaded
    (keyed by file and content hash: a reseeded tier is a new key). Concurrent callers for the
    same key wait for one load instead of each doing it.
    """
    key = (row.full_path, row.content_hash)
    with _scoring_guard:
        if key in _scoring_cache:
            _scoring_cache.move_to_end(key)
            return _scoring_cache[key]
        lock = _scoring_locks.setdefault(key, threading.Lock())
    with lock:
        with _scoring_guard:
            if key in _scoring_cache:
                return _scoring_cache[key]
        dataset = read_measurement(row.full_path)
        with _scoring_guard:
            _scoring_cache[key] = dataset
            while len(_scoring_cache) > _SCORING_CACHE_SIZE:
                _scoring_cache.popitem(last=False)
            _scoring_locks.pop(key, None)
    return dataset


def prefetch_scoring_dataset(row: Dataset) -> threading.Thread:
    """Load :func:`scoring_dataset` in a background thread (while a container runs), so the
    score is ready as soon as the output is; a failure here is left for the scorer to report."""
    detached = Dataset(full_path=row.full_path, content_hash=row.content_hash)  # no session access from the thread

    def load() -> None:
        try:
            scoring_dataset(detached)
        except Exception:  # the scorer reads it again and reports the error where it belongs
            pass

    thread = threading.Thread(target=load, name=f"prefetch-{row.content_hash[:8]}", daemon=True)
    thread.start()
    return thread


def download_path(session: Session, tier: str) -> Path:
    """The participants' view of the tier's active dataset, where the tier is downloadable."""
    can_download(tier)
    return Path(active_dataset(session, tier).view_path)


@dataclass(frozen=True)
class TierInfo:
    """A tier as participants see it: its rules, ranges and active dataset (if any)."""

    name: str
    ranges: dict[str, tuple[float, float]]
    downloadable: bool
    #: What a submission to the tier is, in words.
    submit_as: str
    has_dataset: bool
    content_hash: str | None
    preset: str | None
    #: The participants' download carries the truth (and the pictures show it).
    truth_in_view: bool
    pictured: bool
    #: The dataset's scene ids (empty without a dataset).
    scenes: tuple[str, ...]


def list_tiers(session: Session) -> list[TierInfo]:
    """Every tier, in leaderboard order, with its active dataset's hash, preset and scenes."""
    active = {d.tier: d for d in session.scalars(select(Dataset).where(Dataset.active.is_(True)))}
    out = []
    for name in TIERS:
        rules, row = TIER_RULES[name], active.get(name)
        out.append(
            TierInfo(
                name=name,
                ranges={k: tuple(v) for k, v in TIER_RANGES[name].items()},
                downloadable=rules.downloadable,
                submit_as=rules.submit_as,
                has_dataset=row is not None,
                content_hash=row.content_hash if row else None,
                preset=row.preset if row else None,
                truth_in_view=bool(row.truth_in_view) if row else False,
                pictured=rules.pictured,
                scenes=tuple(scene_ids(row)) if row else (),
            )
        )
    return out


def remove_files(row: Dataset) -> None:
    shutil.rmtree(Path(row.full_path).parent, ignore_errors=True)

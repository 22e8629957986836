"""Tier datasets: organizers generate or upload them; participants download the views."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import Dataset
from harness.dataset import TierDataset
from harness.formats import read_measurement, validate_measurement, write_measurement
from harness.scenes import build_tier
from harness.tiers import TIERS
from services.errors import ForbiddenError, NotFoundError
from services.settings import get_settings


def check_tier(tier: str) -> str:
    if tier not in TIERS:
        raise NotFoundError(f"unknown tier {tier!r}; tiers are {', '.join(TIERS)}")
    return tier


def _activate(session: Session, tier: str, dataset: TierDataset, full: Path, view: Path) -> Dataset:
    session.execute(update(Dataset).where(Dataset.tier == tier).values(active=False))
    row = Dataset(
        tier=tier,
        content_hash=dataset.content_hash,
        operator_version=dataset.operator_version,
        preset=dataset.preset.name,
        full_path=str(full),
        view_path=str(view),
        active=True,
    )
    session.add(row)
    session.flush()
    return row


def _store(session: Session, tier: str, dataset: TierDataset) -> Dataset:
    folder = get_settings().storage_dir / "datasets" / tier / uuid.uuid4().hex
    folder.mkdir(parents=True)
    full, view = folder / "full.h5", folder / "view.h5"
    write_measurement(dataset, full, include_truth=True)
    # Public participants get the truth; Dev participants and Hidden containers never do.
    public = tier == "public"
    write_measurement(dataset.participant_view(with_truth=public), view, include_truth=public)
    return _activate(session, tier, dataset, full, view)


def seed_tier(session: Session, *, tier: str, seed: int, preset: str = "default") -> Dataset:
    """Generate a tier's scenes from ``seed`` and make it the tier's active dataset."""
    check_tier(tier)
    return _store(session, tier, build_tier(tier, seed=seed, preset=preset))


def upload_tier(session: Session, *, tier: str, path: Path) -> Dataset:
    """Validate an organizer's full dataset file (with truth) and activate it."""
    check_tier(tier)
    validate_measurement(path, max_bytes=get_settings().max_image_bytes, require_truth=True)
    dataset = read_measurement(path)
    if dataset.tier != tier:
        dataset.tier = tier
    return _store(session, tier, dataset)


def active_dataset(session: Session, tier: str) -> Dataset:
    check_tier(tier)
    row = session.scalar(select(Dataset).where(Dataset.tier == tier, Dataset.active.is_(True)))
    if row is None:
        raise NotFoundError(f"the {tier} tier has no dataset yet; an organizer must seed it")
    return row


def download_path(session: Session, tier: str) -> Path:
    if check_tier(tier) == "hidden":
        raise ForbiddenError("the hidden tier's measurements are never downloadable; submit a container image")
    return Path(active_dataset(session, tier).view_path)


def remove_files(row: Dataset) -> None:
    shutil.rmtree(Path(row.full_path).parent, ignore_errors=True)

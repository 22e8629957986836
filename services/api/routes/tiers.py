"""Tiers: their published ranges and measurement downloads (Public with truth, Dev without, Hidden never)."""

from fastapi import APIRouter
from fastapi.responses import FileResponse
from sqlalchemy import select

from db.models import Dataset
from harness.tiers import TIER_RANGES, TIERS
from services.api.deps import SessionDep
from services.api.schemas import Page, TierName, TierPublic
from services.datasets import download_path

router = APIRouter(prefix="/api/v1/tiers", tags=["tiers"])


@router.get("")
def list_tiers(session: SessionDep) -> Page[TierPublic]:
    active = {d.tier: d for d in session.scalars(select(Dataset).where(Dataset.active.is_(True)))}
    data = [
        TierPublic(
            name=t,
            ranges={k: tuple(v) for k, v in TIER_RANGES[t].items()},
            downloadable=t != "hidden",
            submit_as="container image" if t == "hidden" else "HDF5 result",
            has_dataset=t in active,
            content_hash=active[t].content_hash if t in active else None,
            preset=active[t].preset if t in active else None,
        )
        for t in TIERS
    ]
    return Page(data=data, count=len(data))


@router.get("/{tier}/measurement", response_class=FileResponse)
def download_measurement(tier: TierName, session: SessionDep) -> FileResponse:
    """The tier's measurement file: Public includes the truth, Dev does not, Hidden is 403."""
    return FileResponse(download_path(session, tier), media_type="application/x-hdf5", filename=f"edx-arena-{tier}.h5")

"""Tiers: their published ranges and measurement downloads (Public with truth, Dev without, Hidden never)."""

from fastapi import APIRouter
from fastapi.responses import FileResponse

from services.api.schemas import Page, TierName, TierPublic
from services.datasets import download_path, list_tiers
from services.deps import SessionDep

router = APIRouter(prefix="/api/v1/tiers", tags=["tiers"])


@router.get("")
def read_tiers(session: SessionDep) -> Page[TierPublic]:
    """Every tier: its published ranges, whether it is downloadable, how to submit, its active dataset."""
    data = [TierPublic.model_validate(t, from_attributes=True) for t in list_tiers(session)]
    return Page(data=data, count=len(data))


@router.get("/{tier}/measurement", response_class=FileResponse)
def download_measurement(tier: TierName, session: SessionDep) -> FileResponse:
    """The tier's measurement file: Public includes the truth, Dev does not, Hidden is 403."""
    return FileResponse(download_path(session, tier), media_type="application/x-hdf5", filename=f"edx-arena-{tier}.h5")

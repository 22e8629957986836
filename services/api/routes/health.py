"""Liveness: the API answers and its database is reachable; the versions it scores with."""

from fastapi import APIRouter
from sqlalchemy import text

from harness import HARNESS_VERSION
from harness.forward import OPERATOR_VERSION
from harness.scoring import SCORER_VERSION
from services.deps import SessionDep

router = APIRouter(prefix="/api/v1", tags=["health"])


@router.get("/health")
def health(session: SessionDep) -> dict:
    session.execute(text("SELECT 1"))
    return {
        "status": "ok",
        "harness_version": HARNESS_VERSION,
        "operator_version": OPERATOR_VERSION,
        "scoring_version": SCORER_VERSION,
    }

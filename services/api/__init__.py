"""The REST API (design §8): one router per resource, mounted by :mod:`services.main`."""

from fastapi import APIRouter

from services.api import metrics
from services.api.routes import admin, health, leaderboard, submissions, tiers, worker

__all__ = ["router"]

router = APIRouter()
for _module in (health, tiers, submissions, leaderboard, admin, worker, metrics):
    router.include_router(_module.router)

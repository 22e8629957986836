"""The web front end: server-rendered pages (leaderboard, tiers and scoring rules, a
participant's submissions) and PNG pictures of scenes and answers. See :mod:`services.web.routes`."""

from services.web.routes import router

__all__ = ["router"]

"""``GET /metrics``: the Prometheus exposition of :mod:`services.metrics` (no authentication,
like any scrape target: keep it off the public internet at the reverse proxy if the queue
sizes are sensitive)."""

from fastapi import APIRouter
from fastapi.responses import Response

from services.metrics import CONTENT_TYPE, render

router = APIRouter(tags=["operations"])


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    # A sync route: the database queries run in the thread pool, not on the event loop.
    return Response(content=render(), media_type=CONTENT_TYPE)

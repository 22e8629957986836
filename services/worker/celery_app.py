"""Celery, configured from the settings: one explicit queue, late acks, no prefetch.

Embedded default: kombu's filesystem transport (no server; folders under data_dir/broker).
Compose and tests: Redis via ``EDX_BROKER_URL``.
"""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_init
from kombu import Queue

from services.settings import get_settings

QUEUE = "edx"


def configure(app: Celery) -> Celery:
    """(Re)apply the settings to ``app``; tests call it again after changing the environment."""
    settings = get_settings()
    transport_options: dict = {}
    if settings.broker_url.startswith("filesystem"):
        folder = settings.broker_dir / "queue"
        processed = settings.broker_dir / "processed"
        for d in (folder, processed):
            d.mkdir(parents=True, exist_ok=True)
        transport_options = {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "processed_folder": str(processed),
            "store_processed": False,
            "polling_interval": 0.1,
        }
    else:
        # Redis redelivers an unacknowledged task after this; longer than any run's wall time.
        transport_options = {"visibility_timeout": int(1.1 * (settings.sandbox_wall_seconds + 600))}
    app.conf.update(
        broker_url=settings.broker_url,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(QUEUE)],
        task_default_queue=QUEUE,
        task_create_missing_queues=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        worker_hijack_root_logger=False,
    )
    app._pool = None  # drop connections made with the previous broker settings
    return app


app = configure(Celery("edx_arena", include=["services.worker.tasks"]))


@worker_init.connect
def _migrate(**_kwargs) -> None:
    from db.migrate import upgrade_to_head

    upgrade_to_head()

"""Celery, configured from the settings: one explicit queue, late acks, no prefetch.

Embedded default: kombu's filesystem transport (no server; folders under data_dir/broker).
Compose and tests: Redis via ``EDX_BROKER_URL``. Results are not stored in a result backend:
every outcome is recorded in the database.
"""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_ready
from kombu import Queue, pools

from core.settings import Settings, get_settings
from services.logging_setup import connect_celery

__all__ = ["QUEUE", "app", "configure", "transport_options"]

QUEUE = "edx"


def transport_options(settings: Settings) -> dict:
    """Broker transport options; creates the filesystem broker's folders."""
    if settings.broker_url.startswith("filesystem"):
        folders = {name: settings.broker_dir / name for name in ("queue", "processed", "control")}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folders["queue"]),
            "data_folder_out": str(folders["queue"]),
            "processed_folder": str(folders["processed"]),
            # kombu's default is ./control, which would litter the working directory.
            "control_folder": str(folders["control"]),
            "store_processed": False,
            "polling_interval": settings.broker_polling_interval,
        }
    # Redis redelivers an unacknowledged task after this: longer than any run's wall time,
    # so a slow run is not delivered twice (the lease, not redelivery, catches dead workers).
    return {"visibility_timeout": int(1.1 * (settings.sandbox_wall_seconds + 600))}


def configure(app: Celery) -> Celery:
    """(Re)apply the settings to ``app``; tests call it again after changing the environment."""
    settings = get_settings()
    app.conf.update(
        broker_url=settings.broker_url,
        broker_transport_options=transport_options(settings),
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
    # kombu keeps connection pools per broker URL, not per transport options: drop them so
    # the next message goes to the broker the settings name now.
    app._pool = None
    if "amqp" in app.__dict__:  # cached_property: only reset it once it exists
        app.amqp._producer_pool = None
    pools.reset()
    return app


app = configure(Celery("edx_arena", include=["services.worker.tasks"]))
connect_celery()  # JSON/text logs with the submission id on every line (EDX_LOG_FORMAT)


@worker_init.connect
def _migrate(**_kwargs) -> None:
    from db.migrate import upgrade_to_head

    upgrade_to_head()


@worker_process_init.connect
def _fresh_connections(**_kwargs) -> None:
    # A forked pool process must not share the parent's database connections.
    from db.session import get_engine

    if get_engine.cache_info().currsize:
        get_engine().dispose(close=False)


@worker_ready.connect
def _reap(**_kwargs) -> None:
    # Runs a dead worker left behind are requeued as soon as a worker is back, then every
    # half lease while it runs.
    from services.worker.tasks import reap_and_requeue, remove_orphans, start_reaper

    remove_orphans()
    reap_and_requeue()
    start_reaper()

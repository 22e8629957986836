"""Celery, configured from the settings: two explicit queues, late acks, no prefetch.

``runs`` holds the sandboxed runs (any compute host may take them: they need Docker, not the
server's storage); ``scoring`` holds scoring, which reads the truth and so runs only where the
server's storage is. A worker of role ``all`` (the embedded default) consumes both. Resource
classes can be added as further run queues (e.g. ``runs-gpu``).

Embedded default: kombu's filesystem transport (no server; folders under data_dir/broker).
Compose and tests: Redis via ``EDX_BROKER_URL``. Results are not stored in a result backend:
every outcome is recorded in the database. The tasks (and the worker's start-up hooks) are in
:mod:`services.worker.tasks`, which Celery imports in the worker; everything else sends work by
task name through :mod:`services.worker.dispatch`.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue, pools
from pydantic import ValidationError

from core.caches import on_reset
from core.settings import WORKER_QUEUES, Settings, get_settings
from services.logs import connect_celery

__all__ = [
    "QUEUES",
    "QUEUE_OF",
    "ROLE_QUEUES",
    "RUNS_QUEUE",
    "RUN_TASK",
    "SCORE_TASK",
    "SCORING_QUEUE",
    "SUBMISSION_TASKS",
    "app",
    "configure",
    "transport_options",
]

RUNS_QUEUE = "runs"
SCORING_QUEUE = "scoring"
QUEUES = (RUNS_QUEUE, SCORING_QUEUE)
#: The queues a worker of each role consumes (``EDX_WORKER_ROLE``, ``edx-arena worker --role``).
ROLE_QUEUES = WORKER_QUEUES
#: Task names (registered by services/worker/tasks.py, sent by services/worker/dispatch.py):
#: a run in the sandbox, then scoring; or scoring an uploaded result. Each takes a submission id.
RUN_TASK = "run_submission"
SCORE_TASK = "score_submission"
SUBMISSION_TASKS = frozenset({RUN_TASK, SCORE_TASK})
QUEUE_OF = {RUN_TASK: RUNS_QUEUE, SCORE_TASK: SCORING_QUEUE}


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


def _from_settings() -> dict:
    settings = get_settings()
    return dict(
        broker_url=settings.broker_url,
        broker_transport_options=transport_options(settings),
        broker_connection_retry_on_startup=True,
        # Each queue its own exchange and key: Celery would otherwise bind every queue to the
        # default queue's exchange and key, and each message would land in both queues.
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
        task_routes={task: {"queue": queue} for task, queue in QUEUE_OF.items()},
        task_default_queue=SCORING_QUEUE,
        task_default_exchange=SCORING_QUEUE,
        task_default_routing_key=SCORING_QUEUE,
        task_create_missing_queues=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        worker_hijack_root_logger=False,
    )


def configure(app: Celery) -> Celery:
    """(Re)apply the settings to ``app``; tests call it again after changing the environment."""
    app.conf.update(_from_settings())
    # kombu keeps connection pools per broker URL, not per transport options: drop them so
    # the next message goes to the broker the settings name now.
    app._pool = None
    if "amqp" in app.__dict__:  # cached_property: only reset it once it exists
        app.amqp._producer_pool = None
    pools.reset()
    return app


app = Celery("edx_arena", include=["services.worker.tasks"])
# Read the settings when the app is first used, not when this module is imported: importing the
# API (which sends work through this app) must not need the settings yet.
app.add_defaults(_from_settings)


@on_reset
def _reconfigure() -> None:
    try:
        configure(app)
    except ValidationError:  # no valid settings right now: the reset that brings them applies them
        pass


connect_celery(SUBMISSION_TASKS)  # JSON/text logs with the submission id on every line (EDX_LOG_FORMAT)

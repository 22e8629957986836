"""One logging setup for the API, the worker and the CLI server commands.

``EDX_LOG_FORMAT=json`` (the compose stack) writes one JSON object per line on stderr::

    {"timestamp": "2026-11-25T10:03:46.096Z", "level": "INFO", "logger": "services.worker.tasks",
     "message": "...", "submission_id": "6f1c…", "process": 7}

``text`` (the default: CLI, embedded demo) writes the same fields as a plain line. Every line
logged while a submission is being handled carries its id (``submission_id``, JSON ``null`` /
absent in text otherwise). The id comes from a context variable that

- the worker sets around each task (Celery ``task_prerun``/``task_postrun``, see
  :func:`connect_celery`), also covering Celery's own "received"/"succeeded" lines, which name
  the task's arguments, and the lease heartbeat thread (named ``lease-<id>``);
- the API sets for requests on ``/api/v1/submissions/{id}…`` and
  ``/api/v1/admin/submissions/{id}…`` (:class:`SubmissionContextMiddleware`);
- any code may set with :func:`submission_context`.

Every line logged while the API handles a request also carries that request's id
(``request_id``; ``[request …]`` in text), set by :class:`services.api.request_id.RequestIdMiddleware`
and returned to the client in the ``X-Request-ID`` header, so a participant quoting it finds the
server's lines about their request.
"""

from __future__ import annotations

import ast
import json
import logging
import logging.config
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "REQUEST_ID",
    "JsonFormatter",
    "SubmissionContextMiddleware",
    "SubmissionFilter",
    "TextFormatter",
    "configure_logging",
    "connect_celery",
    "current_submission",
    "log_format",
    "logging_config",
    "submission_context",
]

SUBMISSION_ID: ContextVar[str | None] = ContextVar("edx_submission_id", default=None)
#: The id of the API request being handled (services/api/request_id.py), else None.
REQUEST_ID: ContextVar[str | None] = ContextVar("edx_request_id", default=None)
#: Celery tasks whose first argument is a submission id (services/worker/tasks.py).
SUBMISSION_TASKS = frozenset({"score_submission", "run_submission"})
_LEASE_THREAD = "lease-"
_PATH = re.compile(r"^/api/v1/(?:admin/)?submissions/([0-9a-fA-F-]{36})(?:/|$)")
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "submission_id",
    "sid",
    "request_id",
    "rid",
    "data",
    "color_message",  # data: Celery's context; color_message: uvicorn's ANSI copy
}


def current_submission() -> str | None:
    return SUBMISSION_ID.get()


@contextmanager
def submission_context(submission_id: str | None) -> Iterator[None]:
    token = SUBMISSION_ID.set(submission_id)
    try:
        yield
    finally:
        SUBMISSION_ID.reset(token)


def _from_celery_record(record: logging.LogRecord) -> str | None:
    # Celery passes its formatting context as ``extra={"data": {...}}`` with the argument repr.
    data = getattr(record, "data", None)
    if not isinstance(data, dict) or data.get("name") not in SUBMISSION_TASKS:
        return None
    try:
        args = ast.literal_eval(data.get("args") or "()")
    except (ValueError, SyntaxError):
        return None
    return str(args[0]) if isinstance(args, (tuple, list)) and args else None


class SubmissionFilter(logging.Filter):
    """Adds ``record.submission_id`` (``None`` when no submission is being handled) and
    ``record.request_id`` (``None`` outside an API request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        sid = SUBMISSION_ID.get()
        if sid is None:
            sid = _from_celery_record(record)
        if sid is None and record.threadName and record.threadName.startswith(_LEASE_THREAD):
            # The heartbeat thread does not inherit the task's context; its name carries the id.
            sid = record.threadName[len(_LEASE_THREAD) :]
        record.submission_id = sid
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp (UTC, ms), level, logger, message, submission_id,
    process, any ``extra={...}`` fields that are JSON-serialisable, and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "submission_id": getattr(record, "submission_id", None),
            "request_id": getattr(record, "request_id", None),
            "process": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key not in entry and not key.startswith("_"):
                try:
                    json.dumps(value)
                except (TypeError, ValueError):
                    value = repr(value)
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(sid)s%(rid)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        sid = getattr(record, "submission_id", None)
        rid = getattr(record, "request_id", None)
        record.sid = f" [submission {sid}]" if sid else ""
        record.rid = f" [request {rid}]" if rid else ""
        return super().format(record)


def log_format() -> str:
    """``EDX_LOG_FORMAT`` from the settings; the raw variable when the settings are invalid
    (the error about them must still be logged)."""
    try:
        from services.settings import get_settings

        return get_settings().log_format
    except Exception:
        value = os.environ.get("EDX_LOG_FORMAT", "text").strip().lower()
        return value if value in ("json", "text") else "text"


def logging_config(fmt: str | None = None, level: str = "INFO") -> dict:
    """A ``logging.config.dictConfig`` dict: one stderr handler on the root logger; uvicorn's
    and Celery's loggers propagate to it (also usable as uvicorn's ``log_config``)."""
    fmt = fmt or log_format()
    formatter = {"()": JsonFormatter} if fmt == "json" else {"()": TextFormatter}
    propagate = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"submission": {"()": SubmissionFilter}},
        "formatters": {"default": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                "filters": ["submission"],
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            **{
                name: dict(propagate)
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task")
            },
            "alembic.runtime.plugins": {"level": "WARNING"},  # a line per plugin at every start
        },
    }


def configure_logging(fmt: str | None = None, level: str = "INFO") -> None:
    logging.config.dictConfig(logging_config(fmt, level))
    # Python warnings (e.g. Celery's SecurityWarning about root) become log lines too.
    logging.captureWarnings(True)


def connect_celery() -> None:
    """Wire the worker: our setup instead of Celery's, and the submission id around each task."""
    from celery import signals

    @signals.celeryd_init.connect(weak=False)
    def _early(**_kwargs) -> None:  # before the worker's first warnings, which precede setup_logging
        configure_logging()

    @signals.setup_logging.connect(weak=False)
    def _setup(loglevel=None, **_kwargs) -> None:  # a receiver here stops Celery configuring logging itself
        level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else (loglevel or "INFO")
        configure_logging(level=level)

    @signals.task_prerun.connect(weak=False)
    def _enter(task=None, args=None, **_kwargs) -> None:
        if task is not None and task.name in SUBMISSION_TASKS and args:
            SUBMISSION_ID.set(str(args[0]))

    @signals.task_postrun.connect(weak=False)
    def _leave(**_kwargs) -> None:
        SUBMISSION_ID.set(None)


class SubmissionContextMiddleware:
    """Sets the submission id for requests about one submission (pure ASGI, near free)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        token = SUBMISSION_ID.set(match.group(1))
        try:
            await self.app(scope, receive, send)
        finally:
            SUBMISSION_ID.reset(token)

"""One logging setup for the API, the worker and the CLI server commands, on structlog's stdlib
integration: every record (ours, uvicorn's, Celery's, Python warnings) goes through one
structlog processor chain.

``EDX_LOG_FORMAT=json`` (the compose stack) writes one JSON object per line on stderr::

    {"timestamp": "2026-11-25T10:03:46.096Z", "level": "INFO", "logger": "services.worker.tasks",
     "message": "...", "submission_id": "6f1c…", "process": 7}

``text`` (the default: CLI, embedded demo) writes the same fields as a plain line. Every line
logged while a submission is being handled carries its id (``submission_id``, JSON ``null`` /
absent in text otherwise). The id is a structlog context variable that

- the worker binds around each task (Celery ``task_prerun``/``task_postrun``, see
  :func:`connect_celery`); Celery's own "received"/"succeeded" lines name the task's arguments,
  and the lease heartbeat thread is named ``lease-<id>``, so they are attributed too;
- the API binds for requests on ``/api/v1/submissions/{id}…`` and
  ``/api/v1/admin/submissions/{id}…`` (:class:`SubmissionContextMiddleware`);
- any code may bind with :func:`submission_context`.

Every line logged while the API handles a request also carries that request's id
(``request_id``; ``[request …]`` in text), bound by :class:`services.api.request_id.RequestIdMiddleware`
(:func:`request_context`) and returned to the client in the ``X-Request-ID`` header, so a
participant quoting it finds the server's lines about their request.
"""

from __future__ import annotations

import ast
import json
import logging
import logging.config
import os
import re
from collections.abc import Collection, Iterator, MutableMapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import structlog
from celery import signals
from starlette.types import ASGIApp, Receive, Scope, Send
from structlog.contextvars import bind_contextvars, bound_contextvars, get_contextvars, unbind_contextvars

from core.settings import get_settings

__all__ = [
    "SubmissionContextMiddleware",
    "configure_logging",
    "connect_celery",
    "current_request",
    "current_submission",
    "formatter",
    "log_format",
    "logging_config",
    "request_context",
    "submission_context",
]

_KEY = "submission_id"
_REQUEST = "request_id"
_LEASE_THREAD = "lease-"
_PATH = re.compile(r"^/api/v1/(?:admin/)?submissions/([0-9a-fA-F-]{36})(?:/|$)")
#: Celery tasks whose first argument is a submission id (set by :func:`connect_celery`).
_submission_tasks: frozenset[str] = frozenset()
#: Record attributes that are not extras: Celery's formatting context and uvicorn's ANSI copy.
_NOT_EXTRAS = ("data", "color_message")

EventDict = MutableMapping[str, Any]


def current_submission() -> str | None:
    return get_contextvars().get(_KEY)


@contextmanager
def submission_context(submission_id: str | None) -> Iterator[None]:
    with bound_contextvars(**{_KEY: submission_id}):
        yield


def current_request() -> str | None:
    return get_contextvars().get(_REQUEST)


@contextmanager
def request_context(request_id: str) -> Iterator[None]:
    """Every line logged in the block carries ``request_id``."""
    with bound_contextvars(**{_REQUEST: request_id}):
        yield


def _from_celery(record: logging.LogRecord) -> str | None:
    # Celery passes its formatting context as ``extra={"data": {...}}`` with the argument repr.
    data = getattr(record, "data", None)
    if not isinstance(data, dict) or data.get("name") not in _submission_tasks:
        return None
    try:
        args = ast.literal_eval(data.get("args") or "()")
    except (ValueError, SyntaxError):
        return None
    return str(args[0]) if isinstance(args, (tuple, list)) and args else None


def _record_fields(_logger: Any, _name: str, event: EventDict) -> EventDict:
    """Time, level, logger and process of the stdlib record, and the submission it is about."""
    record: logging.LogRecord = event["_record"]
    stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
    event["timestamp"] = stamp.replace("+00:00", "Z")
    event["level"] = record.levelname
    event["logger"] = record.name
    event["process"] = record.process
    if event.get(_KEY) is None:
        sid = _from_celery(record)
        if sid is None and record.threadName and record.threadName.startswith(_LEASE_THREAD):
            # The heartbeat thread does not inherit the task's context; its name carries the id.
            sid = record.threadName[len(_LEASE_THREAD) :]
        event[_KEY] = sid
    event.setdefault(_REQUEST, None)
    for key in _NOT_EXTRAS:
        event.pop(key, None)
    if "stack_info" in event:
        event["stack"] = event.pop("stack_info")
    return event


_CHAIN = (
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.ExtraAdder(),
    _record_fields,
    structlog.processors.format_exc_info,
    structlog.processors.EventRenamer("message"),
)
_ORDER = ("timestamp", "level", "logger", "message", _KEY, _REQUEST, "process")


def _render_json(_logger: Any, _name: str, event: EventDict) -> str:
    ordered = {key: event.pop(key, None) for key in _ORDER} | dict(event)
    # A value that is not JSON becomes its repr: a log line never fails to render.
    return json.dumps(ordered, ensure_ascii=False, default=repr)


def _render_text(_logger: Any, _name: str, event: EventDict) -> str:
    sid, rid = event.get(_KEY), event.get(_REQUEST)
    line = f"{event['timestamp']} {event['level']} {event['logger']}"
    line += f"{f' [submission {sid}]' if sid else ''}{f' [request {rid}]' if rid else ''}: "
    line += str(event.get("message", ""))
    for key in ("exception", "stack"):
        if event.get(key):
            line += "\n" + str(event[key])
    return line


def formatter(fmt: str) -> logging.Formatter:
    """The stdlib formatter of ``fmt`` (``json`` or ``text``): structlog's chain, then the renderer."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=list(_CHAIN),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _render_json if fmt == "json" else _render_text,
        ],
    )


def log_format() -> str:
    """``EDX_LOG_FORMAT`` from the settings; the raw variable when the settings are invalid
    (the error about them must still be logged)."""
    try:
        return get_settings().log_format
    except Exception:
        value = os.environ.get("EDX_LOG_FORMAT", "text").strip().lower()
        return value if value in ("json", "text") else "text"


def logging_config(fmt: str | None = None, level: str = "INFO") -> dict:
    """A ``logging.config.dictConfig`` dict: one stderr handler on the root logger; uvicorn's
    and Celery's loggers propagate to it (also usable as uvicorn's ``log_config``)."""
    fmt = fmt or log_format()
    propagate = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter, "fmt": fmt}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "default"}
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


def connect_celery(submission_tasks: Collection[str]) -> None:
    """Wire the worker: our setup instead of Celery's, and the submission id around each task
    of ``submission_tasks`` (tasks whose first argument is a submission id)."""
    global _submission_tasks
    _submission_tasks = frozenset(submission_tasks)

    @signals.celeryd_init.connect(weak=False)
    def _early(**_kwargs) -> None:  # before the worker's first warnings, which precede setup_logging
        configure_logging()

    @signals.setup_logging.connect(weak=False)
    def _setup(loglevel=None, **_kwargs) -> None:  # a receiver here stops Celery configuring logging itself
        level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else (loglevel or "INFO")
        configure_logging(level=level)

    @signals.task_prerun.connect(weak=False)
    def _enter(task=None, args=None, **_kwargs) -> None:
        if task is not None and task.name in _submission_tasks and args:
            bind_contextvars(**{_KEY: str(args[0])})

    @signals.task_postrun.connect(weak=False)
    def _leave(**_kwargs) -> None:
        unbind_contextvars(_KEY)


class SubmissionContextMiddleware:
    """Binds the submission id for requests about one submission (pure ASGI, near free)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        with bound_contextvars(**{_KEY: match.group(1)}):
            await self.app(scope, receive, send)

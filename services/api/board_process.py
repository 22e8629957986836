"""Board pages computed in a child process of the API process, not in one of its threads.

A board computation is partly Python (rows into entries, tie verdicts): in a thread it holds
the interpreter lock for several 5 ms slices at a time, and every reader the event loop serves
meanwhile waits for them; at 100,000 submissions the overall board is over a second of that.
In a child the event loop keeps its interpreter to itself, so the cached pages
(:mod:`services.api.page_cache`) are answered at their usual latency while a board refreshes.

One child per API process (pages are computed one at a time there, which the page cache's
single flight already implies), started on first use with ``spawn`` (a fork of a process with
threads and open database connections is not safe) and the parent's environment, so it reads
the same settings; replaced after a crash, dropped when the settings change (tests).
``leaderboard_process = false`` computes in a thread instead.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from starlette.concurrency import run_in_threadpool

from core.caches import on_reset
from core.settings import get_settings

__all__ = ["off_the_loop", "shutdown", "warm"]

_pool: ProcessPoolExecutor | None = None
_lock = threading.Lock()


def _adopt(env: dict[str, str], parent: int) -> None:
    # The child's settings are the parent's: the same environment, read the same way.
    os.environ.clear()
    os.environ.update(env)
    threading.Thread(target=_exit_with, args=(parent,), name="edx-board-parent-watch", daemon=True).start()


def _exit_with(parent: int) -> None:
    """End the child when its API process is gone (killed, or exited without shutting the pool
    down): the child holds both ends of its task queue, so it would never see them close and
    would stay behind, holding the parent's inherited file descriptors."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _get_pool() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_adopt,
                initargs=(dict(os.environ), os.getpid()),
            )
        return _pool


def _ready() -> bool:
    return True


def warm() -> None:
    """Start the child now (API start-up), not on the first board request: a Python start
    with the API's imports takes a second or two, which no reader should wait for."""
    if get_settings().leaderboard_process:
        _get_pool().submit(_ready)


@on_reset
def shutdown(*, wait: bool = False) -> None:
    """Stop the child (API shutdown, with ``wait``; a settings change; tests). The next page
    starts a new one."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=wait, cancel_futures=True)


async def off_the_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in the board child (or a worker thread when ``leaderboard_process`` is
    off). ``fn`` must be a module-level function and its arguments and result picklable."""
    if not get_settings().leaderboard_process:
        return await run_in_threadpool(fn, *args)
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(_get_pool(), fn, *args)
    except BrokenProcessPool:
        # The child died (killed, out of memory): a new one computes this page.
        shutdown()
        return await loop.run_in_executor(_get_pool(), fn, *args)

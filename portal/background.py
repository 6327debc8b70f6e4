"""Celery tasks after the response, in the embedded demo (no broker, no worker).

Without ``REDIS_URL`` Celery runs every task eagerly, inside the ``.delay()`` call: the
request that validates an RCP decision or signs an expertise report waited for its PDF
(WeasyPrint, seconds). The demo's server (``python -m portal.logging``, ``make demo``) calls
:func:`enable`: from then on a task sent with ``.delay()`` is put on a queue and run by one
thread of the server process, in the order sent, as ``Task.apply`` runs it eagerly (the same
code path as the tests, retries included: an eager task retries at once). The request answers
at once; the pages already poll until the PDF is ready.

One thread, not a pool: the tasks write to the same SQLite file as the requests, and one writer
at a time is what SQLite allows. Tests and management commands (``seed_demo``) never call
:func:`enable` and keep running tasks inline; the production shape has Redis and a real worker.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass, field
from functools import partial

from asgiref.sync import async_to_sync, sync_to_async
from celery.exceptions import Retry
from django.db import close_old_connections, connections

logger = logging.getLogger(__name__)

_jobs: queue.Queue = queue.Queue()
_lock = threading.Lock()
_state = {"enabled": False, "worker": None, "loop": None}


@dataclass
class Job:
    task: object
    args: tuple
    kwargs: dict
    task_id: str
    options: dict = field(default_factory=dict)
    loop: asyncio.AbstractEventLoop | None = None


def enable() -> None:
    """Run the tasks sent from now on in the background thread of this process."""
    _state["enabled"] = True


def disable() -> None:
    """Back to eager, inline tasks (what the tests expect)."""
    _state["enabled"] = False


def enabled() -> bool:
    from django.conf import settings

    return _state["enabled"] and getattr(settings, "TASKS_IN_BACKGROUND", False)


def submit(task, args, kwargs, task_id: str, options: dict | None = None) -> None:
    """Queue ``task(*args, **kwargs)`` for the background thread (started on first use)."""
    with _lock:
        worker = _state["worker"]
        if worker is None or not worker.is_alive():
            worker = threading.Thread(target=_work, name="mirc-background-tasks", daemon=True)
            worker.start()
            _state["worker"] = worker
        loop = _state["loop"]
        if loop is None or not loop.is_running():
            loop = _state["loop"] = _server_loop()
    _jobs.put(Job(task, tuple(args or ()), dict(kwargs or {}), task_id, options or {}, loop))


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def _server_loop() -> asyncio.AbstractEventLoop | None:
    """The server's event loop, seen from a request's thread; None elsewhere.

    A task sends live notifications with ``async_to_sync(channel_layer.group_send)``: run
    from the server's loop (as a request's code is), they reach the in-memory channel layer
    of the server's WebSockets; from a thread of its own they would go to a new, empty loop.
    """
    try:
        loop = async_to_sync(_running_loop)()
    except RuntimeError:  # called from async code: no loop to borrow
        return None
    return loop if loop.is_running() else None


def wait_idle(timeout: float) -> bool:
    """Whether every queued task has finished within ``timeout`` seconds."""
    with _jobs.all_tasks_done:
        return _jobs.all_tasks_done.wait_for(lambda: not _jobs.unfinished_tasks, timeout)


def _work() -> None:
    while True:
        job = _jobs.get()
        try:
            if job.loop is not None and job.loop.is_running():
                # In a thread of the server's loop, as a request's code runs (see _server_loop);
                # this thread waits, so the tasks still run one at a time.
                done = asyncio.run_coroutine_threadsafe(
                    sync_to_async(_run, thread_sensitive=False)(job), job.loop
                )
                done.result()
            else:
                _run(job)
        except Exception:
            logger.exception("Background task %s[%s] could not run", job.task.name, job.task_id)
        finally:
            _jobs.task_done()


def _run(job: Job) -> None:
    # A connection left by the previous task (or broken meanwhile) is not reused blindly,
    # and none is left open between tasks: the thread may wait a long time for the next one.
    close_old_connections()
    try:
        call = partial(job.task.apply, job.args, job.kwargs, task_id=job.task_id, throw=False)
        while True:
            try:
                result = call()
                break
            except Retry as retry:
                # An eager retry runs its next try inside apply(), with Celery's global
                # "propagate" (on): a second retry escapes as this exception. Run it here,
                # at once (an eager retry ignores the countdown), up to the task's max_retries.
                if retry.sig is None:
                    raise
                call = partial(retry.sig.apply, throw=False)
        if result.failed():
            logger.error(
                "Background task %s[%s] failed: %r",
                job.task.name,
                job.task_id,
                result.result,
                extra={"traceback": result.traceback},
            )
    except Exception:
        logger.exception("Background task %s[%s] could not run", job.task.name, job.task_id)
    finally:
        connections.close_all()

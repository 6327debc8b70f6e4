"""Celery tasks sent by their registered name, so that a service never imports a tasks module.

Tasks are thin: they take ids and call a service, so ``tasks.py`` imports ``services.py``. A
service that scheduled its task by importing it would close the cycle; it names the task
instead (``enqueue_on_commit("imaging.ingest_batch", batch.pk)``) and this module finds it in
the Celery application.

The task found is sent with ``.delay`` rather than ``app.send_task``: ``send_task`` always
goes to the broker, while ``.delay`` goes through ``Task.apply_async`` (portal/celery.py), so
it still runs in-process where there is no broker (CELERY_TASK_ALWAYS_EAGER, the tests) or in
the demo server's background thread (portal/background.py).
"""

from __future__ import annotations

from django.db import transaction

from portal.celery import app


class UnknownTask(LookupError):
    """No task is registered under this name, even after every app's tasks were loaded."""


def task_named(name: str):
    """The task registered as ``name``.

    A worker imports every app's tasks module when it starts; a web process only when
    something imports it, which nothing does any more: the first unknown name loads them all
    (Celery's autodiscovery), once, and a name still unknown after that is a mistake.
    """
    if name not in app.tasks:
        app.loader.import_default_modules()
    try:
        return app.tasks[name]
    except KeyError:
        raise UnknownTask(f"No Celery task is registered as {name!r}.") from None


def enqueue(name: str, *args, **kwargs):
    """Send the task ``name`` now (inside a transaction, prefer :func:`enqueue_on_commit`)."""
    return task_named(name).delay(*args, **kwargs)


def enqueue_on_commit(name: str, *args, **kwargs) -> None:
    """Send the task ``name`` once the current transaction commits: a worker never looks for
    a row that is not committed yet, and a rolled back change sends nothing.

    The name is looked up at once, so a wrong name fails in the caller, not after its commit.
    """
    task = task_named(name)
    transaction.on_commit(lambda: task.delay(*args, **kwargs))


def runs_inline() -> bool:
    """Whether a task sent now runs in this process (no broker: the tests, the demo)."""
    return bool(app.conf.task_always_eager)

"""Long-lived ingest processes, shared by the archive import and the DICOM gateway.

The ingest (header parsing, DICOM JSON, ORM, the archive client) is CPU-bound Python: in
one process every thread shares one interpreter lock. Worker processes are forked after
``django.setup()`` (the settings and imports are already there), each opens its own
database connections and sandbox fork server (:func:`after_fork`), and runs what it is
given one task at a time. Every file of one study goes to the same worker
(:func:`worker_for`), so two workers never race to create the same study, series or
instance.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import zlib
from concurrent.futures import Future

from django.db import connections

logger = logging.getLogger(__name__)

_INHERITED_POOLS: list = []  # the parent's connection pools, kept (never closed) in a worker


def after_fork() -> None:
    """A forked worker gets its own database connections and sandbox fork server.

    The parent's sockets (database connections, a PostgreSQL pool) are shared with the child
    after fork: they are kept referenced, never used nor closed here (closing would end the
    parent's session), and new ones are opened. The sandbox's fork server belongs to the
    parent: the worker starts its own (imaging.sandbox).
    """
    # Ctrl-C and a service manager's stop (sent to the whole group) are the parent's to
    # handle: it stops feeding, and the worker leaves once its tasks are done (None), or
    # when it finds the parent gone (getppid).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for alias in connections:
        connection = connections[alias]
        _INHERITED_POOLS.append(connection.connection)
        connection.connection = None
        pools = getattr(type(connection), "_connection_pools", None)
        if pools:
            _INHERITED_POOLS.append(dict(pools))
            pools.clear()
    from multiprocessing import forkserver

    server = forkserver._forkserver
    server._forkserver_pid = server._forkserver_address = server._forkserver_alive_fd = None


def worker_for(study_uid: str, workers: int, fallback: int = 0) -> int:
    """The worker every file of ``study_uid`` goes to (stable across processes, unlike
    ``hash``); files without a readable StudyInstanceUID are spread by ``fallback``."""
    if not study_uid:
        return fallback % workers
    return zlib.crc32(study_uid.encode()) % workers


class WorkerDied(Exception):
    """The worker process that had the task stopped before answering."""


def _serve(tasks, results, parent_pid: int) -> None:
    after_fork()
    try:
        while True:
            try:
                task = tasks.get(timeout=1.0)
            except queue.Empty:
                if os.getppid() != parent_pid:
                    return  # the parent was killed
                continue
            if task is None:
                return
            task_id, function, args = task
            try:
                results.put((task_id, True, function(*args)))
            except Exception as error:  # noqa: BLE001 - the parent decides; the worker goes on
                logger.exception("ingest worker: task failed")
                results.put((task_id, False, f"{type(error).__name__}: {error}"[:300]))
    finally:
        connections.close_all()


class IngestPool:
    """``workers`` processes running module-level functions; ``submit`` returns a Future.

    Create it before any thread is started (fork copies only the calling thread) and
    after ``django.setup()``. Tasks given to one worker run in order. A worker that dies
    fails its pending tasks with WorkerDied and takes no more (``alive``).
    """

    def __init__(self, workers: int):
        context = multiprocessing.get_context("fork")
        connections.close_all()  # the workers open their own
        self.workers = workers
        self._results = context.Queue()
        self._tasks = [context.Queue() for _ in range(workers)]
        self._processes = [
            # Not daemonic: a worker's ingest starts sandboxed children of its own. A worker
            # whose parent was killed notices (getppid) and leaves.
            context.Process(
                target=_serve,
                args=(self._tasks[index], self._results, os.getpid()),
                daemon=False,
                name=f"ingest-worker-{index}",
            )
            for index in range(workers)
        ]
        for process in self._processes:
            process.start()
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[int, Future]] = {}
        self._next_id = 0
        self._closed = False
        self._collector = threading.Thread(
            target=self._collect, name="ingest-pool-results", daemon=True
        )
        self._collector.start()

    def alive(self, worker: int) -> bool:
        return self._processes[worker].is_alive()

    def submit(self, worker: int, function, *args) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed or not self._processes[worker].is_alive():
                future.set_exception(WorkerDied(f"ingest worker {worker} is not running"))
                return future
            task_id = self._next_id
            self._next_id += 1
            self._pending[task_id] = (worker, future)
        self._tasks[worker].put((task_id, function, args))
        return future

    def _collect(self) -> None:
        while True:
            try:
                task_id, ok, value = self._results.get(timeout=1.0)
            except queue.Empty:
                self._fail_dead()
                if self._closed and not self._pending:
                    return
                continue
            except (EOFError, OSError):
                return
            with self._lock:
                _worker, future = self._pending.pop(task_id, (None, None))
            if future is None:
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(RuntimeError(value))

    def _fail_dead(self) -> None:
        with self._lock:
            dead = {i for i, p in enumerate(self._processes) if not p.is_alive()}
            lost = [(i, f) for i, (w, f) in self._pending.items() if w in dead]
            for task_id, _future in lost:
                del self._pending[task_id]
        for _task_id, future in lost:
            logger.error("ingest worker stopped before answering a task")
            future.set_exception(WorkerDied("the ingest worker stopped before answering"))

    def close(self, timeout: float = 30.0) -> None:
        """Let the workers finish their tasks, then end them."""
        with self._lock:
            self._closed = True
        for tasks in self._tasks:
            tasks.put(None)
        for process in self._processes:
            process.join(timeout=timeout)
            if process.is_alive():
                process.kill()
                process.join()
        self._fail_dead()

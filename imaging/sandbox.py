"""Pixel decoding of untrusted files, in a child process with time and memory limits.

A crafted JPEG 2000 or RLE stream can make a decoder allocate gigabytes or loop: decoding
never happens in a web or worker process itself. Each call runs in a sandbox worker: a
child started from a small fork server (multiprocessing "forkserver", which preloads the
imaging modules), under an address-space limit (RLIMIT_AS) and a CPU-time limit (RLIMIT_CPU)
set afresh for every job, and killed at the job's deadline.

Starting a child costs more than most jobs (a fork, a pipe, the imports of a job's module):
each process keeps a small pool of workers (SANDBOX_POOL_SIZE), started when first needed
and reused from job to job. A worker is replaced after SANDBOX_POOL_MAX_JOBS jobs, and at
once after a crash, a timeout or a job that ran out of memory, so that what a hostile file
did to one worker (a fragmented heap, a decoder left in a bad state) never reaches the next
job. The pool belongs to the process that started it: a process forked from it (Celery's
prefork children, the ingest processes) starts its own, and the workers end with the
process (atexit, and their end of the pipe closing).
"""

from __future__ import annotations

import atexit
import contextlib
import math
import multiprocessing
import os
import resource
import signal
import threading
from collections.abc import Callable

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["numpy", "pydicom", "PIL.Image", "imaging.render"])

DEFAULT_POOL_SIZE = 2
DEFAULT_MAX_JOBS = 200


OUT_OF_MEMORY = "decoding needs more memory than allowed"


class DecodeError(Exception):
    """The pixel data could not be decoded within the limits; the message says why."""


# --- In the worker (no Django here) -----------------------------------------------------------


def _limit(kind: int, soft: int) -> None:
    """Lower the soft limit only: the hard one stays, so the next job may get another."""
    _old_soft, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(kind, (soft, hard))


def _serve(connection) -> None:
    """A sandbox worker: run jobs one at a time until the parent closes the pipe.

    RLIMIT_CPU counts the process's whole life: each job may use ``cpu_seconds`` more than
    the worker has used so far (SIGXCPU ends it past that).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # Ended by its parent at exit (multiprocessing terminates daemonic children): a parent
    # that ignores SIGTERM (an ingest process) passes that on through the fork server.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        try:
            function, args, memory_bytes, cpu_seconds = connection.recv()
        except (EOFError, OSError):
            return
        usage = resource.getrusage(resource.RUSAGE_SELF)
        _limit(resource.RLIMIT_CPU, math.ceil(usage.ru_utime + usage.ru_stime) + cpu_seconds)
        _limit(resource.RLIMIT_AS, memory_bytes)
        try:
            reply = ("ok", function(*args), False)
        except MemoryError:
            reply = ("error", OUT_OF_MEMORY, True)
        except Exception as error:  # noqa: BLE001 - reported to the parent as text
            reply = ("error", f"{type(error).__name__}: {error}"[:300], False)
        try:
            connection.send(reply)
        except MemoryError:
            reply = ("error", OUT_OF_MEMORY, True)
            connection.send(reply)
        except (EOFError, OSError):
            return
        except Exception as error:  # noqa: BLE001 - an answer that cannot be sent (pickling)
            connection.send(("error", f"{type(error).__name__}: {error}"[:300], False))
        if reply[2]:
            return  # the parent replaces this worker for the next job
        del reply


# --- In the parent -----------------------------------------------------------------------------


class _Worker:
    def __init__(self):
        parent_end, child_end = _CONTEXT.Pipe(duplex=True)
        self.process = _CONTEXT.Process(
            target=_serve, args=(child_end,), daemon=True, name="sandbox-worker"
        )
        self.process.start()
        child_end.close()
        self.connection = parent_end
        self.jobs = 0

    def stop(self, *, kill: bool) -> None:
        """End the worker: closing its pipe ends a worker between jobs; ``kill`` one in a job."""
        self.connection.close()
        if kill and self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)

    def forget(self) -> None:
        """In a forked child: drop this copy of the parent's pipe, leave the worker alone."""
        with contextlib.suppress(OSError):
            self.connection.close()
        multiprocessing.process._children.discard(self.process)


class SandboxPool:
    """Up to ``size`` workers, each replaced after ``max_jobs`` jobs or any failure.

    With every worker busy, a job waits for one: decoding is CPU-bound, more decoders
    than the pool's size would only share the same CPUs (and multiply the memory limit).
    """

    def __init__(self, *, size: int, max_jobs: int):
        self.size, self.max_jobs = size, max_jobs
        self._condition = threading.Condition()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._starting = 0
        self._closed = False

    def run(self, function: Callable, args: tuple, *, timeout: float, memory_bytes: int):
        worker = self._acquire()
        broken = True  # until the worker answers: killed at the deadline, or found dead
        try:
            try:
                worker.connection.send((function, args, memory_bytes, max(1, int(timeout))))
                if not worker.connection.poll(timeout):
                    raise DecodeError("decoding took too long")
                status, value, broken = worker.connection.recv()
            except (EOFError, OSError):
                raise DecodeError("the decoder stopped (memory or time limit)") from None
        finally:
            worker.jobs += 1
            self._release(worker, broken=broken)
        if status != "ok":
            raise DecodeError(value)
        return value

    def _acquire(self) -> _Worker:
        with self._condition:
            while True:
                if self._closed:
                    raise DecodeError("the decoding sandbox is shut down")
                if self._idle:
                    worker = self._idle.pop()
                    self._busy.add(worker)
                    return worker
                if len(self._busy) + self._starting < self.size:
                    self._starting += 1
                    break
                self._condition.wait()
        try:
            worker = _Worker()
        except BaseException:
            with self._condition:
                self._starting -= 1
                self._condition.notify()
            raise
        with self._condition:
            self._starting -= 1
            self._busy.add(worker)
        return worker

    def _release(self, worker: _Worker, *, broken: bool) -> None:
        # A crash, a timeout or a memory blow-up may have left the worker in any state.
        retire = broken or worker.jobs >= self.max_jobs or self._closed
        with self._condition:
            self._busy.discard(worker)
            if not retire:
                self._idle.append(worker)
            self._condition.notify()
        if retire:
            worker.stop(kill=broken)

    def start(self, warm_up: Callable | None = None) -> None:
        """Start the workers now rather than on first use (a server before it listens), each
        running ``warm_up()`` once, if given, to import what its jobs will need."""
        for _ in range(self.size):
            with self._condition:
                if self._closed or len(self._idle) + len(self._busy) + self._starting >= self.size:
                    return
                self._starting += 1
            worker = None
            try:
                worker = _Worker()
                if warm_up is not None:
                    worker.connection.send((warm_up, (), 2 * 1024**3, 60))
                    if not worker.connection.poll(60):
                        raise DecodeError("the sandbox worker did not start")
                    worker.connection.recv()
            except (DecodeError, EOFError, OSError):
                if worker is not None:
                    worker.stop(kill=True)
                worker = None
            finally:
                with self._condition:
                    self._starting -= 1
                    if worker is not None:
                        self._idle.append(worker)
                    self._condition.notify()

    def workers(self) -> list[int]:
        """Process ids of the workers, idle and busy (for the tests and the operator)."""
        with self._condition:
            return [worker.process.pid for worker in (*self._idle, *self._busy)]

    def close(self) -> None:
        with self._condition:
            self._closed = True
            idle, self._idle = self._idle, []
            self._condition.notify_all()
        for worker in idle:
            worker.stop(kill=True)

    def forget(self) -> None:
        # Without the condition's lock: another thread of the parent may have held it.
        workers, self._idle, self._busy = [*self._idle, *self._busy], [], set()
        self._closed = True
        for worker in workers:
            worker.forget()


_pool: SandboxPool | None = None
_pool_lock = threading.Lock()


def _settings() -> tuple[int, int]:
    try:
        from django.conf import settings

        return (
            getattr(settings, "SANDBOX_POOL_SIZE", DEFAULT_POOL_SIZE),
            getattr(settings, "SANDBOX_POOL_MAX_JOBS", DEFAULT_MAX_JOBS),
        )
    except Exception:  # noqa: BLE001 - outside Django (a script, a benchmark): the defaults
        return DEFAULT_POOL_SIZE, DEFAULT_MAX_JOBS


def pool() -> SandboxPool:
    """This process's pool, started on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            size, max_jobs = _settings()
            _pool = SandboxPool(size=size, max_jobs=max_jobs)
        return _pool


def shutdown() -> None:
    """End this process's workers (at exit; the tests, to start from a fresh pool)."""
    global _pool
    with _pool_lock:
        current, _pool = _pool, None
    if current is not None:
        current.close()


def _after_fork_in_child() -> None:
    """A forked process starts its own fork server and workers when it needs them: the
    parent's answer only the parent (the fork server's children are not this process's)."""
    global _pool, _pool_lock
    _pool_lock = threading.Lock()  # another thread may have held it at the fork
    if _pool is not None:
        _pool.forget()
        _pool = None
    from multiprocessing import forkserver

    server = forkserver._forkserver
    if server._forkserver_alive_fd is not None:
        with contextlib.suppress(OSError):
            os.close(server._forkserver_alive_fd)  # this copy would keep the parent's alive
    server._forkserver_pid = server._forkserver_address = server._forkserver_alive_fd = None


atexit.register(shutdown)
os.register_at_fork(after_in_child=_after_fork_in_child)


def run_limited(function: Callable, *args, timeout: float = 20.0, memory_bytes: int = 2 * 1024**3):
    """Run ``function(*args)`` in a sandbox worker and return its result.

    ``function`` must be importable at module level from a module that does not need
    Django (the worker has no settings), and its result picklable. Raises DecodeError when
    it fails, runs out of memory or time, or the worker dies.
    """
    return pool().run(function, args, timeout=timeout, memory_bytes=memory_bytes)

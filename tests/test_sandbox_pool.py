"""The decoding sandbox's pool of workers: reused between jobs, never trusted after a failure.

Every job still runs under its limits (memory, CPU, deadline); a worker that crashed, ran
out of time or memory is replaced before the next job, and every worker is replaced after
SANDBOX_POOL_MAX_JOBS jobs. The functions run are real ones (tests/sandbox_targets.py, and
the standard library's), the workers real processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from imaging import sandbox
from imaging.sandbox import DecodeError, SandboxPool, run_limited
from tests import sandbox_targets
from tests.waiting import wait_until


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """Waits until process ``pid`` has ended and been reaped (a zombie still answers)."""

    def ended() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    return wait_until(ended, timeout=timeout, what=f"process {pid} to end")


@pytest.fixture
def small_pool():
    pool = SandboxPool(size=1, max_jobs=3)
    yield pool
    pool.close()


def _run(pool, function, *args, timeout=20.0, memory_bytes=1024**3):
    return pool.run(function, args, timeout=timeout, memory_bytes=memory_bytes)


def test_jobs_run_in_a_worker_kept_between_them(small_pool):
    first = _run(small_pool, os.getpid)
    assert first != os.getpid()
    assert _run(small_pool, os.getpid) == first
    assert _run(small_pool, sandbox_targets.answer, 21) == 42


def test_a_worker_is_replaced_after_its_number_of_jobs(small_pool):
    pids = [_run(small_pool, os.getpid) for _ in range(3)]
    assert len(set(pids)) == 1
    assert _run(small_pool, os.getpid) != pids[0]
    assert _gone(pids[0])


def test_a_hostile_decode_fails_cleanly_and_the_next_job_succeeds(small_pool):
    before = _run(small_pool, os.getpid)
    with pytest.raises(DecodeError, match="memory"):
        _run(small_pool, sandbox_targets.allocate, 2048, memory_bytes=1024**3)
    # The limit was the job's, not the worker's for ever: a fresh worker takes the next one.
    assert _run(small_pool, sandbox_targets.allocate, 64, memory_bytes=1024**3) == 64 << 20
    assert _gone(before)
    assert small_pool.workers() and before not in small_pool.workers()


def test_a_looping_decoder_is_killed_at_its_deadline_and_replaced(small_pool, tmp_path):
    pid_file = tmp_path / "decoder.pid"
    started = time.monotonic()
    with pytest.raises(DecodeError, match="too long"):
        _run(small_pool, sandbox_targets.spin, 120, str(pid_file), timeout=1)
    assert time.monotonic() - started < 5
    assert _gone(int(pid_file.read_text()))
    assert _run(small_pool, sandbox_targets.answer, 1) == 2


def test_the_cpu_limit_counts_each_job_not_the_workers_life(small_pool):
    # Three jobs of 0.6 s of CPU each under a 1 s limit: a limit on the worker's whole life
    # would stop the second.
    for _ in range(3):
        assert _run(small_pool, sandbox_targets.spin, 0.6, timeout=1.5) > 0


def test_a_worker_that_crashes_is_replaced(small_pool):
    before = _run(small_pool, os.getpid)
    with pytest.raises(DecodeError, match="stopped"):
        _run(small_pool, os._exit, 3)
    after = _run(small_pool, os.getpid)
    assert after != before
    assert _gone(before)


def test_a_job_error_is_reported_and_the_worker_kept(small_pool):
    before = _run(small_pool, os.getpid)
    with pytest.raises(DecodeError, match="ValueError"):
        _run(small_pool, int, "not a number")
    assert _run(small_pool, os.getpid) == before


def test_jobs_beyond_the_pools_size_wait_for_a_worker(small_pool):
    results, errors = [], []

    def job():
        try:
            results.append(_run(small_pool, sandbox_targets.spin, 0.3, timeout=10))
        except Exception as error:  # noqa: BLE001 - the assertion below shows it
            errors.append(error)

    threads = [threading.Thread(target=job) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert len(results) == 3
    assert len(small_pool.workers()) <= 1


def test_a_forked_process_gets_its_own_workers_and_leaves_the_parents_alone():
    sandbox.shutdown()
    parent_worker = run_limited(os.getpid, timeout=10)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.close(reader)
            worker = run_limited(os.getpid, timeout=10)
            os.write(writer, str(worker).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as stream:
        child_worker = int(stream.read() or 0)
    os.waitpid(child, 0)
    assert child_worker and child_worker != parent_worker
    # The child's exit ended its own worker, not the parent's.
    assert _gone(child_worker)
    assert run_limited(os.getpid, timeout=10) == parent_worker


def test_a_bad_pool_setting_stops_the_start():
    environment = {**os.environ, "SANDBOX_POOL_SIZE": "0"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**environment, "DJANGO_SETTINGS_MODULE": "portal.settings"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "SANDBOX_POOL_SIZE" in result.stderr


def _use_the_sandbox_ignoring_sigterm(pids) -> None:
    """An ingest process (imaging.ingest_pool) ignores SIGTERM, its service manager's."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pids.put(run_limited(os.getpid, timeout=10))


def test_a_process_that_ignores_sigterm_still_ends_with_its_workers():
    import multiprocessing

    context = multiprocessing.get_context("fork")
    pids = context.Queue()
    process = context.Process(target=_use_the_sandbox_ignoring_sigterm, args=(pids,))
    process.start()
    try:
        worker = pids.get(timeout=30)
        # It returns: multiprocessing ends its daemonic children (the sandbox worker) on exit.
        process.join(timeout=30)
        assert process.exitcode == 0
        assert _gone(worker)
    finally:
        if process.is_alive():  # stuck waiting for its worker: the test has failed
            process.kill()
            process.join()


def test_a_server_starts_its_workers_before_the_first_job():
    from imaging.dicom_checks import warm_up

    pool = SandboxPool(size=2, max_jobs=10)
    try:
        pool.start(warm_up=warm_up)
        started = pool.workers()
        assert len(started) == 2
        pool.start(warm_up=warm_up)  # already there: none more
        assert sorted(pool.workers()) == sorted(started)
        assert _run(pool, os.getpid) in started
    finally:
        pool.close()

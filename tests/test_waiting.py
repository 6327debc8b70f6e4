"""tests/waiting.py: a test waits for its condition, and no longer than its deadline."""

import socket
import time

import pytest

from tests.waiting import async_wait_until, listening, on_page, wait_until


def test_the_wait_ends_as_soon_as_the_condition_holds_and_gives_its_value():
    ready_at = time.monotonic() + 0.1
    start = time.monotonic()
    value = wait_until(lambda: time.monotonic() >= ready_at and "ready", timeout=10)
    assert value == "ready"
    assert time.monotonic() - start < 5


def test_a_condition_that_never_holds_fails_at_the_deadline_naming_what_was_awaited():
    start = time.monotonic()
    with pytest.raises(AssertionError, match="timed out after 0.3 s waiting for the archive"):
        wait_until(lambda: False, timeout=0.3, what="the archive")
    assert 0.3 <= time.monotonic() - start < 5


@pytest.mark.asyncio
async def test_the_async_wait_lets_the_loop_run_and_awaits_a_coroutine_condition():
    seen = []

    async def arrived():
        seen.append(1)
        return len(seen) >= 3 and seen

    assert await async_wait_until(arrived, timeout=10) == [1, 1, 1]
    with pytest.raises(AssertionError, match="waiting for the relay"):
        await async_wait_until(lambda: False, timeout=0.2, what="the relay")


def test_a_timeout_tells_what_was_seen_last_and_a_failing_look_ends_the_wait_at_once():
    with pytest.raises(AssertionError, match="waiting for the log line; last seen: starting"):
        wait_until(lambda: False, timeout=0.1, what="the log line", seen=lambda: "starting")

    def server_died():
        raise RuntimeError("the server exited")

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="exited"):
        wait_until(server_died, timeout=10)
    assert time.monotonic() - start < 5


def test_a_wait_on_a_page_passes_its_time_in_the_page():
    waited = []

    class Page:
        def wait_for_timeout(self, milliseconds):
            waited.append(milliseconds)

    looks = iter([False, False, "shown"])
    assert wait_until(lambda: next(looks), sleep=on_page(Page()), longest_pause=0.02) == "shown"
    assert waited == [20, 20]


def test_a_port_is_listening_once_a_server_accepts_on_it():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        assert not listening(port)
        server.listen()
        assert wait_until(lambda: listening(port), timeout=10, what="the port")

"""Waiting in tests: for a condition, with a deadline, never for a fixed time.

Two busy cores shared by several runs make any fixed sleep either too short (a flaky
failure) or too long (a slow suite); a poll of the condition answers as soon as it holds and
fails with what was awaited when the deadline passes.
"""

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

POLL = 0.02  # seconds between two looks at the condition
LONGEST_PAUSE = 0.2  # a condition that takes long (a server starting) is asked less often


def _timed_out(timeout: float, what: str, seen: Callable[[], object] | None) -> AssertionError:
    message = f"timed out after {timeout:g} s waiting for {what}"
    if seen is not None:
        message += f"; last seen: {seen()}"
    return AssertionError(message)


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float = 10.0,
    what: str = "the condition",
    seen: Callable[[], object] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    longest_pause: float = LONGEST_PAUSE,
) -> T:
    """Calls ``predicate`` until it returns something truthy, and returns that; fails the
    test (AssertionError) once ``timeout`` seconds have passed without.

    An exception ``predicate`` raises ends the wait at once: the way to stop waiting for a
    server whose process already died. ``seen`` tells, on a timeout, what the test saw last
    (a log, a state). ``sleep`` passes the time between two looks: a browser page waits with
    ``on_page(page)``. ``longest_pause`` caps the growing pause, for a wait that is measured.
    """
    deadline = time.monotonic() + timeout
    pause = POLL
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what, seen)
        sleep(pause)
        pause = min(pause * 2, longest_pause)


async def async_wait_until(
    predicate: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 10.0,
    what: str = "the condition",
    seen: Callable[[], object] | None = None,
) -> T:
    """``wait_until`` inside an event loop: the loop keeps running while waiting, and
    ``predicate`` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    pause = POLL
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what, seen)
        await asyncio.sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE)


def on_page(page) -> Callable[[float], None]:
    """The pause of a wait on a Playwright page: its sync API delivers the page's events
    (console, WebSocket frames) only while it is called, which ``time.sleep`` never does."""
    return lambda seconds: page.wait_for_timeout(seconds * 1000)


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Does a server accept connections on ``host``:``port``? (a condition to wait for)"""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False

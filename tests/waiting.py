"""Waiting in tests: for a condition, with a deadline, never for a fixed time.

Two busy cores shared by several runs make any fixed sleep either too short (a flaky
failure) or too long (a slow suite); a poll of the condition answers as soon as it holds and
fails with what was awaited when the deadline passes.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

POLL = 0.02  # seconds between two looks at the condition


def wait_until(
    predicate: Callable[[], T], *, timeout: float = 10.0, what: str = "the condition"
) -> T:
    """Calls ``predicate`` until it returns something truthy, and returns that; fails the
    test (AssertionError) once ``timeout`` seconds have passed without."""
    deadline = time.monotonic() + timeout
    pause = POLL
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(pause)
        # A condition that takes long (a server starting) is asked less often.
        pause = min(pause * 2, 0.2)


async def async_wait_until(
    predicate: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 10.0,
    what: str = "the condition",
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
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.2)

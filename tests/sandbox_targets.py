"""Functions the sandbox tests run in a child process: a decoder gone wrong, on purpose.

This module must not import Django (nor anything that does): the sandbox's fork server
child has no settings, and imports these functions by name.
"""

import os
import time


def allocate(megabytes: int) -> int:
    """A decoder that believes a header announcing a huge image: fill ``megabytes`` MiB."""
    block = bytearray(megabytes * 1024 * 1024)
    # Touch every page, so the memory is really used and not only reserved.
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    return len(block)


def spin(seconds: float, pid_file: str = "") -> int:
    """A decoder caught in a loop: burn CPU for ``seconds`` (or until killed).

    With ``pid_file``, first write the process id there, so a test can check it is gone.
    """
    if pid_file:
        with open(pid_file, "w") as stream:
            stream.write(str(os.getpid()))
    deadline = time.monotonic() + seconds
    turns = 0
    while time.monotonic() < deadline:
        turns += 1
    return turns


def answer(value: int) -> int:
    """A decoder that behaves: returns at once."""
    return value * 2

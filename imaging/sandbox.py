"""Pixel decoding of untrusted files, in a child process with time and memory limits.

A crafted JPEG 2000 or RLE stream can make a decoder allocate gigabytes or loop: decoding
never happens in a web or worker process itself. Each call runs in a process forked from
a small fork server (multiprocessing "forkserver", which preloads the imaging modules),
with an address-space limit (RLIMIT_AS) and CPU-time limit, and is killed at the deadline.
"""

from __future__ import annotations

import multiprocessing
import resource
from collections.abc import Callable

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["numpy", "pydicom", "PIL.Image", "imaging.render"])


class DecodeError(Exception):
    """The pixel data could not be decoded within the limits; the message says why."""


def _child(connection, memory_bytes: int, cpu_seconds: int, function, args):
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    try:
        connection.send(("ok", function(*args)))
    except MemoryError:
        connection.send(("error", "decoding needs more memory than allowed"))
    except Exception as error:  # noqa: BLE001 - reported to the parent as text
        connection.send(("error", f"{type(error).__name__}: {error}"[:300]))
    finally:
        connection.close()


def run_limited(function: Callable, *args, timeout: float = 20.0, memory_bytes: int = 2 * 1024**3):
    """Run ``function(*args)`` in a limited child process and return its result.

    ``function`` must be importable at module level from a module that does not need
    Django (the child has no settings), and its result picklable.
    """
    receiver, sender = _CONTEXT.Pipe(duplex=False)
    process = _CONTEXT.Process(
        target=_child,
        args=(sender, memory_bytes, max(1, int(timeout)), function, args),
        daemon=True,
    )
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            raise DecodeError("decoding took too long")
        try:
            status, value = receiver.recv()
        except EOFError:
            raise DecodeError("the decoder stopped (memory or time limit)") from None
    finally:
        receiver.close()
        if process.is_alive():
            process.kill()
        process.join(timeout=5)
    if status != "ok":
        raise DecodeError(value)
    return value

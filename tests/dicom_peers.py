"""Real DICOM peers for the tests: dcmtk's storescp as an establishment's PACS.

storescp listens on a free loopback port (probed, then taken: retried if another process
took it meanwhile) and writes what it receives, bit-preserving, into its own directory.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import require_service
from tests.waiting import listening, wait_until

START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def require_dcmtk(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    require_service("dcmtk", f"{', '.join(missing)} not found" if missing else None)


def wait_for(condition, what: str, timeout: float = 30.0) -> None:
    wait_until(condition, timeout=timeout, what=what)


# Gateways serving from threads of the test process, on the test's own database connection
# (as Django's live server does), by port.
_IN_THREAD: dict[int, object] = {}


def serve_in_thread(gateway, *, host: str = "127.0.0.1") -> int:
    """Starts ``gateway`` (built with the test's shared connection) on a free port; its port.
    ``stop_in_thread`` shuts it down."""
    server = gateway.start(host=host, port=0)
    port = server.server_address[1]
    _IN_THREAD[port] = server
    return port


def stop_in_thread(port: int) -> None:
    """Once its associations have ended: the test's teardown must not roll back the database
    under a release handler still writing."""
    try:
        settle(port)
    finally:
        _IN_THREAD.pop(port).shutdown()


def _associations(port: int | None) -> set:
    servers = list(_IN_THREAD.values()) if port is None else [_IN_THREAD.get(port)]
    return {a for s in servers if s is not None for a in s.active_associations}


def settle(port: int | None = None, timeout: float = 30.0, *, keep=frozenset()) -> None:
    """Waits until the in-thread gateway at ``port`` (every one without) has ended each of
    its associations but ``keep``, release handlers included.

    A peer program has returned, or a test's own association is released, before the
    gateway's thread has run its release handlers (the transfer audit); SQLite's one
    connection cannot serve two threads at once ("cannot open savepoint - SQL statements in
    progress"), so a test reads the database only once the gateway is quiet.
    """
    wait_until(
        lambda: not (_associations(port) - keep),
        timeout=timeout,
        what="the gateway to end its associations",
    )


@contextmanager
def settling(port: int | None = None):
    """Around a peer's exchange: on leaving, waits for the associations it opened to end
    (an association the test holds open meanwhile is not waited for)."""
    before = frozenset(_associations(port))
    yield
    settle(port, keep=before)


class StoreSCP:
    """``storescp`` (dcmtk) with AE title ``ae_title``; ``options`` e.g. ``["+xi"]``."""

    def __init__(self, directory: Path, *, ae_title: str = "TOURS_PACS", options=()):
        require_dcmtk("storescp")
        self.ae_title = ae_title
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.process = None
        for _attempt in range(3):
            self.port = free_port()
            self.process = subprocess.Popen(
                ["storescp", "-aet", ae_title, "-od", str(directory), "+B", "-dhl", *options]
                + [str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            if self._listening():
                return
            self.stop()
        pytest.fail("storescp did not start")

    def _listening(self) -> bool:
        """Did storescp take its port? It exits at once when another process has it."""
        try:
            wait_until(
                lambda: self.process.poll() is not None or listening(self.port),
                timeout=START_TIMEOUT,
                what=f"storescp to listen on {self.port}",
            )
        except AssertionError:
            return False
        return self.process.poll() is None

    def files(self) -> list[Path]:
        return sorted(path for path in self.directory.iterdir() if path.is_file())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

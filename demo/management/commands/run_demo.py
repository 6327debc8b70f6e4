"""``manage.py run_demo``: the demo's servers as one command, as ``make demo`` runs them.

The portal (daphne, through ``python -m portal.logging``), the DICOM gateway
(``manage.py dicom_gateway``) and the HL7 listener (``manage.py hl7_listener``), each its own
process on loopback, supervised here:

* it prints where each listens, with commands to try, once all three accept connections;
* Ctrl-C (SIGINT) or SIGTERM stops the three (SIGINT first so each closes cleanly, SIGKILL
  after a grace period) and waits for them;
* one of them exiting stops the others, and this command exits with an error;
* on Linux each child asks the kernel for SIGTERM when this process dies, even by SIGKILL
  (``PR_SET_PDEATHSIG``), so no server is left behind holding its port.

When ``make setup`` installed it (tests/oidc_provider/node_modules) and no real provider is
configured (OIDC_SERVER_URL), a fourth server stands in for Pro Santé Connect: the tests'
OpenID Connect provider (demo/psc_provider.py), with one account per active RPPS person of the
demo's directory, and the portal configured to sign in through it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from demo import psc_provider

START_TIMEOUT = 120.0  # seconds for every server to accept connections (daphne warms up)
STOP_GRACE = 10.0  # seconds after SIGINT before SIGKILL
PR_SET_PDEATHSIG = 1
PSC_NAME = "Pro Santé Connect stand-in"
PSC_CLIENT_ID = "mirc-demo"


@dataclass
class Child:
    name: str
    port: int
    argv: list[str]
    process: subprocess.Popen | None = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Command(BaseCommand):
    help = "Runs the demo: the portal, the DICOM gateway and the HL7 listener; Ctrl-C stops all."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--dicom-port", type=int, default=settings.DICOM_GATEWAY_PORT)
        parser.add_argument("--hl7-port", type=int, default=settings.HL7_LISTENER_PORT)
        parser.add_argument(
            "--psc-port",
            type=int,
            default=int(os.environ.get("PSC_DEMO_PORT", "8090")),
            help="Port of the demo's Pro Santé Connect stand-in (when installed).",
        )

    def handle(self, *args, host, port, dicom_port, hl7_port, psc_port, **options):
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        python = sys.executable
        children = [
            Child(
                "portal",
                port,
                [python, "-m", "portal.logging", "-b", host, "-p", str(port)]
                + ["portal.asgi:application"],
            ),
            Child(
                "DICOM gateway",
                dicom_port,
                [python, manage, "dicom_gateway", "--host", host, "--port", str(dicom_port)],
            ),
            Child(
                "HL7 listener",
                hl7_port,
                [python, manage, "hl7_listener", "--host", host, "--port", str(hl7_port)],
            ),
        ]
        psc_accounts = self._psc_accounts()
        if psc_accounts and _accepts(host, psc_port):
            # Optional: the demo runs without it rather than not at all.
            self.stderr.write(f"Port {psc_port} in use: no {PSC_NAME} (--psc-port to choose).")
            psc_accounts = []
        busy = [f"{c.name} ({c.port})" for c in children if _accepts(host, c.port)]
        if busy:
            raise CommandError(f"Port already in use: {', '.join(busy)}. Choose other ports.")
        portal_env = None
        if psc_accounts:
            provider = self._start_psc(host, port, psc_port, psc_accounts)
            children.append(Child(PSC_NAME, psc_port, [], provider.process))
            portal_env = {
                **os.environ,
                "OIDC_SERVER_URL": provider.issuer,
                "OIDC_CLIENT_ID": PSC_CLIENT_ID,
                "OIDC_CLIENT_SECRET": self._psc_secret,
            }

        stopping = []

        def request_stop(signum, frame):
            stopping.append(signum)

        previous = {
            signum: signal.signal(signum, request_stop)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for child in children:
                if child.process is not None:  # the Pro Santé Connect stand-in, started above
                    continue
                # Own session: the terminal's Ctrl-C reaches this process only, which then
                # stops each child once, in order.
                child.process = subprocess.Popen(  # noqa: S603 - our own interpreter and manage.py
                    child.argv,
                    cwd=settings.BASE_DIR,
                    env=portal_env if child.name == "portal" else None,
                    start_new_session=True,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
                )
            failed = self._wait_until_listening(children, host, stopping)
            if failed is None and not stopping:
                self._print_banner(host, port, dicom_port, hl7_port)
                if psc_accounts:
                    self._print_psc_banner(host, psc_port, psc_accounts)
                failed = self._watch(children, stopping)
        finally:
            self._stop(children)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if failed is not None:
            raise CommandError(
                f"The {failed.name} stopped (exit code {failed.process.returncode}); "
                "the demo's other servers were stopped too."
            )
        self.stdout.write("Demo stopped.")

    def _psc_accounts(self) -> list[dict]:
        """The stand-in's accounts, or none when it is not installed, a real provider is
        configured, or the demo's directory is empty."""
        if settings.OIDC_SERVER_URL or not psc_provider.installed():
            return []
        return psc_provider.accounts_from_directory()

    def _start_psc(self, host, port, psc_port, accounts) -> psc_provider.RunningProvider:
        # A new client secret at each start: the provider and the portal are started together.
        self._psc_secret = secrets.token_urlsafe(32)
        client = psc_provider.client(
            base_url=f"http://{host}:{port}", client_id=PSC_CLIENT_ID, secret=self._psc_secret
        )
        try:
            return psc_provider.start(
                clients=[client],
                accounts=accounts,
                workdir=Path(settings.BASE_DIR) / "var" / "psc-demo",
                port=psc_port,
                host=host,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
            )
        except RuntimeError as exc:
            raise CommandError(str(exc)) from exc

    def _print_psc_banner(self, host, psc_port, accounts) -> None:
        first = accounts[0]["claims"]
        self.stdout.write(
            "\n".join(
                [
                    f"Pro Santé Connect (demo stand-in)  http://{host}:{psc_port}/ : on the "
                    'sign-in page, "Sign in with Pro Santé Connect", then an RPPS of the '
                    f"demo's directory ({len(accounts)} accounts), e.g. "
                    f"{first['preferred_username'][1:]} ({first['given_name']} "
                    f"{first['family_name']}), no password.",
                    "",
                ]
            )
        )
        self.stdout.flush()

    def _wait_until_listening(self, children, host, stopping) -> Child | None:
        deadline = time.monotonic() + START_TIMEOUT
        waiting = list(children)
        while waiting and not stopping:
            for child in list(waiting):
                if child.process.poll() is not None:
                    return child
                if _accepts(host, child.port):
                    waiting.remove(child)
            if time.monotonic() > deadline:
                names = ", ".join(c.name for c in waiting)
                raise CommandError(f"Not listening after {START_TIMEOUT:.0f} s: {names}")
            time.sleep(0.1)
        return None

    def _watch(self, children, stopping) -> Child | None:
        while not stopping:
            for child in children:
                if child.process.poll() is not None:
                    return child
            time.sleep(0.2)
        return None

    def _stop(self, children) -> None:
        running = [c for c in children if c.process is not None and c.process.poll() is None]
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE
        for child in running:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()

    def _print_banner(self, host, port, dicom_port, hl7_port) -> None:
        ae = settings.DICOM_GATEWAY_AE_TITLE
        python = Path(sys.executable)
        with contextlib.suppress(ValueError):
            python = python.relative_to(Path(settings.BASE_DIR))
        lines = [
            "",
            f"Portal         http://{host}:{port}/",
            f"DICOM gateway  AE title {ae} on {host}:{dicom_port} "
            "(calling AE titles of the demo: CHB_DEMO for CH Bourges, CHRUT_DEMO for CHRU Tours)",
            f"HL7 listener   MLLP on {host}:{hl7_port} (MSH-4: the FINESS, or CHB_GAM / CHRUT_GAM)",
            "",
            "Try, from another terminal:",
            f"  echoscu -aet CHB_DEMO -aec {ae} {host} {dicom_port}",
            f"  {python} manage.py demo_dicom var/demo-dicom",
            f"  storescu -aet CHB_DEMO -aec {ae} {host} {dicom_port} var/demo-dicom/*.dcm",
            "then, signed in as c.martin@mirc.test, the new CT is in her first thoracic "
            "patient's dossier.",
            "",
            "Ctrl-C stops every server of the demo.",
        ]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()

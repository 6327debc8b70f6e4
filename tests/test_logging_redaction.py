"""Viewer tokens never appear in a log line: not Django's, not daphne's access log.

A viewer token is the password to one study, and external viewers that cannot set headers
still send it as ``?token=``. The records here go through the handlers that ``LOGGING``
really configures (their filters and formatters), and the access log is read from a real
daphne started as ``make demo`` starts it.
"""

import html
import io
import logging
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, unquote_plus, urlsplit

import pytest
from django.conf import settings
from django.urls import reverse

from portal.logging import AccessLog, RedactSecrets
from tests.conftest import client_for
from tests.permission_matrix import imaged_study
from tests.waiting import listening, wait_until

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_ENV_NAMES = {"DATABASE_URL", "REDIS_URL", "EXTERNAL_VIEWER_URL", "DJANGO_DEBUG"}
SECRET = "vt_S3CR3T-viewer-token_abcdef0123456789"

# The token first, in the middle and last in the query string.
QUERIES = [
    f"token={SECRET}&StudyInstanceUIDs=1.2.3",
    f"StudyInstanceUIDs=1.2.3&token={SECRET}&frame=1",
    f"StudyInstanceUIDs=1.2.3&frame=1&token={SECRET}",
]


@contextmanager
def configured_handlers_output():
    """What the configured handlers write, as the console would show it."""
    handlers = {
        handler
        for name in ("", "django", "django.server")
        for handler in logging.getLogger(name).handlers
        # pytest's capture handlers are stream handlers too: only the configured ones.
        if isinstance(handler, logging.StreamHandler)
        and not type(handler).__module__.startswith("_pytest")
    }
    assert handlers, "LOGGING configured no stream handler?"
    buffer = io.StringIO()
    saved = {handler: handler.setStream(buffer) for handler in handlers}
    try:
        yield buffer
    finally:
        for handler, stream in saved.items():
            handler.setStream(stream)


def test_every_configured_handler_redacts_secrets():
    for name, handler in settings.LOGGING["handlers"].items():
        assert "redact_secrets" in handler.get("filters", []), name
    # Django's own default handlers (console, mail_admins, runserver) are replaced, so no
    # record reaches a handler without the filter.
    for name in ("", "django", "django.request", "django.server", "daphne", "daphne.access"):
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if type(handler).__module__.startswith("_pytest"):
                continue
            assert any(isinstance(f, RedactSecrets) for f in handler.filters), (name, handler)


@pytest.mark.parametrize("query", QUERIES, ids=["first", "middle", "last"])
def test_request_logs_never_show_a_viewer_token(query):
    path = f"/dicomweb/studies/1.2.3/series/4.5.6?{query}"
    details = {
        "path": path,
        "status": 404,
        "method": "GET",
        "client": "127.0.0.1:50412",
        "time_taken": 0.01,
        "size": 179,
    }
    with configured_handlers_output() as output:
        # daphne's access log, as `python -m portal.logging` (make demo) writes it.
        AccessLog()("http", "complete", details)
        # daphne's runserver (manage.py runserver) and Django's own runserver lines.
        logging.getLogger("django.channels.server").warning(
            "HTTP %(method)s %(path)s %(status)s [%(time_taken).2f, %(client)s]", details
        )
        logging.getLogger("django.server").warning(
            '"%s" %s %s', f"GET {path} HTTP/1.1", "404", "179", extra={"status_code": 404}
        )
        # A failure whose message and traceback quote the URL it was fetching.
        try:
            raise ConnectionError(f"archive refused http://archive.local{path}")
        except ConnectionError:
            logging.getLogger("django.request").exception("Internal Server Error: %s", path)
        # A header dump, as a debugging line might write it.
        logging.getLogger("imaging.dicomweb").warning(
            "headers: %s", {"HTTP_AUTHORIZATION": f"Bearer {SECRET}", "HTTP_ACCEPT": "*/*"}
        )
    logged = output.getvalue()
    assert SECRET not in logged
    # The lines are still there and still useful: only the credential is gone.
    assert "- - [" in logged and "series/4.5.6?" in logged and '" 404 179' in logged
    assert logged.count("token=[redacted]") >= 5
    assert "HTTP_AUTHORIZATION': 'Bearer [redacted]'" in logged
    assert "ConnectionError: archive refused" in logged


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(predicate, what, timeout=60.0):
    return wait_until(predicate, timeout=timeout, what=what)


def test_the_demo_servers_access_log_never_shows_a_viewer_token(tmp_path):
    """daphne as make demo runs it: every request is in its access log, no token is."""
    port = _free_port()
    log_path = tmp_path / "server.log"
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}},
        "DJANGO_DEBUG": "true",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        "ARCHIVE_ROOT": str(tmp_path / "archive"),
        "MEDIA_ROOT": str(tmp_path / "media"),
    }
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "portal.logging", "-b", "127.0.0.1", "-p", str(port)]
            + ["portal.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def accepting():
            if server.poll() is not None:
                pytest.fail("the server stopped: " + log_path.read_text())
            return listening(port)

        _wait_for(accepting, "the server to listen")
        paths = [f"/nulle-part/?{q}" for q in QUERIES] + [f"/static/css/portal.css?{QUERIES[1]}"]
        for path in paths:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10).close()  # noqa: S310
            except urllib.error.HTTPError as error:
                assert error.code == 404
        logged = _wait_for(
            lambda: (text := log_path.read_text()).count('"GET ') >= len(paths) and text,
            "the access log lines",
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert SECRET not in logged
    # daphne's access-log format, token redacted, in each position.
    assert '"GET /nulle-part/?token=[redacted]&StudyInstanceUIDs=1.2.3" 404' in logged
    assert '"GET /nulle-part/?StudyInstanceUIDs=1.2.3&token=[redacted]&frame=1" 404' in logged
    assert '"GET /nulle-part/?StudyInstanceUIDs=1.2.3&frame=1&token=[redacted]" 404' in logged
    assert '"GET /static/css/portal.css?StudyInstanceUIDs=1.2.3&token=[redacted]&frame=1" 200' in (
        logged
    )


# --- Links the portal generates: the token never in a path or a query -------------------------


def test_the_viewer_links_keep_the_token_out_of_every_url_a_server_sees(world, settings):
    settings.EXTERNAL_VIEWER_URL = (
        "https://viewer.example.org/?StudyInstanceUIDs={study_uid}&dicomweb={dicomweb}"
        "#token={token}"
    )
    study = imaged_study(world)["study"]
    response = client_for(world.gp.user).post(reverse("viewer-link-create", args=[study.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    raw = response.context["raw"]
    links = [html.unescape(href) for href in re.findall(r'href="([^"]+)"', page)]
    external = [link for link in links if link.startswith("https://viewer.example.org/")]
    assert len(external) == 1
    parts = urlsplit(external[0])
    assert raw not in unquote(parts.path + "?" + parts.query)
    assert parts.fragment == f"token={raw}"
    # Weasis receives it as the Authorization header of its own DICOMweb requests.
    weasis = [unquote_plus(link) for link in links if link.startswith("weasis:")]
    assert len(weasis) == 1 and f"Authorization:Bearer {raw}" in weasis[0]
    for link in links:
        if link.startswith(("http", "/")):
            parts = urlsplit(link)
            assert raw not in unquote(parts.path + "?" + parts.query), link


def test_an_external_viewer_url_with_the_token_in_its_query_is_refused_at_start_up():
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV_NAMES}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={
            **env,
            "EXTERNAL_VIEWER_URL": "https://ohif.example.org/viewer?StudyInstanceUIDs="
            "{study_uid}&token={token}",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "EXTERNAL_VIEWER_URL" in result.stderr

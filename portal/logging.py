"""Logs without credentials: the viewer tokens, bearer headers and share links never reach a
log line.

A viewer token is a password to one study: an external viewer may still send it as
``?token=`` (DICOMweb clients that cannot set headers), and every access log writes the
request line with its query string. ``RedactSecrets`` sits on every handler of ``LOGGING``
and rewrites each record before it is formatted: its message, its traceback and its stack.

daphne's own access log (``daphne`` on the command line) is written straight to stdout,
out of Python logging's reach. ``python -m portal.logging`` runs daphne with the same
options but sends each access-log line, in daphne's format, to the ``daphne.access``
logger, so through the handlers and their redaction. It is also the demo's server
(``make demo``): there, Celery's tasks run in a background thread (portal/background.py).
"""

import logging
import re
import sys

from daphne.access import AccessLogGenerator

REDACTED = "[redacted]"

# A credential passed as a query parameter, in any position (after ?, & or ;), raw or
# percent-encoded (a ``next=`` carrying another URL), as it appears in a request line.
_QUERY_SECRET = re.compile(
    r"(?i)((?:^|[?&;\s\"']|%3f|%26)(?:access_)?token(?:=|%3d))[^&;#\s\"'%]*",
)
# An Authorization header, as a header line, a WSGI/ASGI key or a dict entry.
_AUTHORIZATION = re.compile(
    r"(?i)((?:http_)?authorization['\"]?\s*[:=,]\s*[(\[]?\s*(?:b(?=['\"]))?['\"]?)"
    r"((?:bearer|basic|token)\s+)?[^\s'\",)\]}]+",
)
# A bearer credential on its own ("Bearer abc...").
_BEARER = re.compile(r"(?i)\b(bearer\s+)(?!\[redacted\])[A-Za-z0-9._~+/=-]+")
# The link of a share (imaging.shares): its token is the path segment after /partage/
# (the author's own pages there, "patients" and "gestion", carry none).
_SHARE_LINK = re.compile(
    r"(?i)((?:/|%2f)partage(?:/|%2f))(?!patients(?:/|%2f)|gestion(?:/|%2f))[A-Za-z0-9_-]{16,}"
)


def redact(text: str) -> str:
    """The text with every query-string token and Authorization credential replaced."""
    if not text:
        return text
    text = _QUERY_SECRET.sub(rf"\1{REDACTED}", text)
    text = _AUTHORIZATION.sub(rf"\1\2{REDACTED}", text)
    text = _BEARER.sub(rf"\1{REDACTED}", text)
    return _SHARE_LINK.sub(rf"\1{REDACTED}", text)


class RedactSecrets(logging.Filter):
    """Rewrites a record's message, traceback and stack with ``redact``; never drops one.

    On a handler (not a logger) so that records propagated from any logger pass through it.
    The traceback is formatted here, once, because an exception's message may quote the
    URL it failed on; the formatter then reuses ``exc_text`` as it is.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


access_logger = logging.getLogger("daphne.access")


class AccessLog(AccessLogGenerator):
    """daphne's access log (NCSA-like lines), written to the ``daphne.access`` logger."""

    def __init__(self):
        super().__init__(stream=None)

    def write_entry(self, host, date, request, status=None, length=None, ident=None, user=None):
        access_logger.info(
            '%s %s %s [%s] "%s" %s %s',
            host,
            ident or "-",
            user or "-",
            date.strftime("%d/%b/%Y:%H:%M:%S"),
            request,
            status or "-",
            length or "-",
        )


def warm_up() -> None:
    """Import every view and compile every template before the first request.

    Django imports the URLconf (hence every view, pydicom, WeasyPrint's callers...) on the
    first request, and compiles each template on its first use: the demo's first pages took
    seconds each. Done here, before daphne listens, and before ``gc.freeze()`` so that what it
    loads stays out of the collector's sight too (see portal/asgi.py).
    """
    import contextlib
    import gc
    from pathlib import Path

    from django.template import TemplateSyntaxError, engines
    from django.template.utils import get_app_template_dirs
    from django.urls import get_resolver

    import portal.asgi  # noqa: F401 (django.setup())

    get_resolver().url_patterns  # noqa: B018 (imports every urls.py and its views)
    for engine in engines.all():
        folders = [Path(d) for d in engine.engine.dirs]
        folders += [Path(d) for d in get_app_template_dirs("templates")]
        for folder in folders:
            for path in folder.rglob("*.html"):
                # A fragment that only compiles where it is included is compiled there.
                with contextlib.suppress(TemplateSyntaxError):
                    engine.get_template(path.relative_to(folder).as_posix())
    gc.collect()
    gc.freeze()


def serve(argv: list[str] | None = None) -> None:
    """daphne's command line, with the access log going through Python logging."""
    # Imported here: daphne.server installs Twisted's asyncio reactor when imported, which
    # only the server process wants (not manage.py, Celery or the tests).
    from daphne.cli import CommandLineInterface
    from daphne.server import Server

    class LoggedServer(Server):
        def __init__(self, *args, action_logger=None, **kwargs):
            # daphne builds a stdout writer when its access log is on (-v 1, the default, or
            # --access-log): keep it on, but through logging.
            if action_logger is not None:
                action_logger = AccessLog()
            super().__init__(*args, action_logger=action_logger, **kwargs)

    class LoggedCommandLine(CommandLineInterface):
        server_class = LoggedServer

    # Without a broker (the demo), Celery's tasks run after the response, in a background
    # thread of this server, not inside the request that sends them (portal/background.py).
    from portal import background

    background.enable()
    warm_up()
    LoggedCommandLine().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    serve()

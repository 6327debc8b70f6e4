"""DICOMweb reads served by Django's synchronous handler on a pool of kept threads.

Under daphne, Django's ASGI handler gives each request a thread of its own (a new
thread-sensitive context) and crosses between the event loop and threads at each sync-only
middleware: a request that Django answers in 4 to 6 ms costs 10 to 25 ms through it
(benchmarks/README.md, QIDO). A viewer opening a study, searching, or asking for the frames
and rendered images the fast path cannot answer pays it on every request. Here the same
Django (same middleware, same views, same settings) runs as WSGI does: the whole request in
one worker thread, kept from request to request, and the answer handed to the event loop
piece by piece (a streamed answer waits for each piece to be sent, as a WSGI server would).

Only ``GET`` and ``HEAD`` under ``/dicomweb/``: they carry no body. Everything else (STOW-RS,
the pages, the WebSockets) goes to Django's ASGI handler as before.
"""

from __future__ import annotations

import asyncio
import io
import sys
from concurrent.futures import ThreadPoolExecutor

from django.core.handlers.wsgi import WSGIHandler

PREFIX = "/dicomweb/"
THREADS = 8  # requests served at once per process; the others wait their turn on the loop


def wsgi_environ(scope) -> dict:
    """The WSGI environment (PEP 3333) of an ASGI HTTP request without a body."""
    root = scope.get("root_path", "")
    path = scope["path"]
    if root and path.startswith(root):
        path = path[len(root) :]
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    environ = {
        "REQUEST_METHOD": scope["method"],
        # Native strings holding the bytes as latin-1, as PEP 3333 wants and Django reads.
        "SCRIPT_NAME": root.encode().decode("latin-1"),
        "PATH_INFO": path.encode().decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1] or 80),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": str(client[0]),
        "REMOTE_PORT": str(client[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        key = name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{name}"
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


class SyncDicomWebReads:
    """ASGI middleware: DICOMweb reads through Django's WSGI handler, in kept threads."""

    def __init__(self, app, *, threads: int = THREADS):
        self.app = app
        self.handler = WSGIHandler()
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dicomweb")

    async def __call__(self, scope, receive, send):
        if (
            scope["type"] != "http"
            or scope["method"] not in ("GET", "HEAD")
            or not scope["path"].startswith(PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        while True:  # the request's (empty) body, up to its end
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            if not message.get("more_body", False):
                break
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self._respond, scope, send, loop)

    def _respond(self, scope, send, loop) -> None:
        """In a worker thread: Django answers, each piece is sent on the loop in turn."""
        started: dict = {}

        def start_response(status, headers, exc_info=None):
            started["status"] = int(status.split(" ", 1)[0])
            started["headers"] = [
                (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers
            ]

        def emit(message) -> None:
            asyncio.run_coroutine_threadsafe(send(message), loop).result()

        response = self.handler(wsgi_environ(scope), start_response)
        head = scope["method"] == "HEAD"
        try:
            emit(
                {
                    "type": "http.response.start",
                    "status": started["status"],
                    "headers": started["headers"],
                }
            )
            for piece in response:
                if piece and not head:
                    emit({"type": "http.response.body", "body": piece, "more_body": True})
            emit({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            # Django's request_finished: the database connection goes back (PEP 3333 close()).
            response.close()

"""The MLLP server of the HL7 v2 identity feed (IHE PAM, French profile).

One asyncio process; each establishment's interface engine keeps a connection open and
sends one message at a time (MLLP: ``<VT> message <FS><CR>``), waiting for its ACK. The
application side is :func:`portal.hl7.handle_message`, run in a worker thread because
the ORM is synchronous; its database connection is closed after each message so the
process holds nothing between messages.

A frame never ended (no ``<FS><CR>`` within ``HL7_READ_TIMEOUT_SECONDS``) or one larger
than ``HL7_MAX_MESSAGE_BYTES`` closes that connection only (the oversize one after an AR);
the server keeps serving the others.
"""

import asyncio
import contextlib
import logging
import signal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connections
from hl7.mllp import InvalidBlockError, start_hl7_server

from portal.hl7 import handle_message, refusal_ack

logger = logging.getLogger("portal.hl7")


def _encoding_of(block: bytes) -> str:
    """MSH-18 names the character set; French systems still often send ISO 8859-1."""
    first = block.split(b"\r", 1)[0]
    fields = first.split(b"|")
    charset = fields[17].strip().upper() if len(fields) > 17 else b""
    if charset.startswith(b"8859/1"):
        return "latin-1"
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"


def _handle_in_thread(text: str, peer: str) -> str:
    try:
        return handle_message(text, peer=peer).ack
    finally:
        connections.close_all()


async def handle_connection(reader, writer) -> None:
    peer = (writer.get_extra_info("peername") or ("",))[0]
    timeout = settings.HL7_READ_TIMEOUT_SECONDS
    try:
        while True:
            try:
                block = await asyncio.wait_for(reader.readblock(), timeout)
            except (TimeoutError, asyncio.IncompleteReadError, InvalidBlockError):
                # Idle, closed by the peer, cut mid-frame or not MLLP: nothing to answer.
                return
            except ValueError:
                # Over HL7_MAX_MESSAGE_BYTES: refused, and the rest of that frame is lost.
                writer.writeblock(refusal_ack("").encode())
                await writer.drain()
                logger.warning("HL7 message from %s over the size limit", peer)
                return
            encoding = _encoding_of(block)
            text = block.decode(encoding, errors="replace")
            ack = await sync_to_async(_handle_in_thread, thread_sensitive=False)(text, peer)
            writer.writeblock(ack.encode(encoding, errors="replace"))
            await writer.drain()
    except (ConnectionError, OSError):
        return
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def start_listener(host: str, port: int):
    """Start serving; returns the asyncio server (port 0 picks a free one, for tests)."""
    return await start_hl7_server(
        handle_connection, host, port, limit=settings.HL7_MAX_MESSAGE_BYTES
    )


class Command(BaseCommand):
    help = "Runs the HL7 v2 (MLLP) listener of the establishments' identity feeds."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=None, help="default: HL7_LISTENER_HOST")
        parser.add_argument("--port", type=int, default=None, help="default: HL7_LISTENER_PORT")

    def handle(self, *args, host=None, port=None, **options):
        host = host or settings.HL7_LISTENER_HOST
        port = settings.HL7_LISTENER_PORT if port is None else port
        asyncio.run(self._serve(host, port))

    async def _serve(self, host: str, port: int) -> None:
        server = await start_listener(host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        bound = ", ".join(str(s.getsockname()[:2]) for s in server.sockets)
        self.stdout.write(f"HL7 MLLP listener on {bound}")
        async with server:
            await stop.wait()
        self.stdout.write("HL7 MLLP listener stopped")

"""The PDFs read the same as before they moved onto the shared documents capability
(portal/documents.py): the fiche RCP, the session minutes and the tele-expertise report are
rendered from a fixed world at a fixed time, their text extracted with pypdf and compared with
the text the code produced before the move (tests/fixtures/document_texts/*.txt, made from
that code by this same test with ``UPDATE_DOCUMENT_TEXTS=1``).

What the world cannot fix (the record numbers, database ids that depend on what ran before in
the database) is replaced by a placeholder before comparing.
"""

import datetime as dt
import os
import re
from pathlib import Path

import pytest
import time_machine
from django.utils import timezone

from tests.test_expertise_pdf import capture, sign, story  # noqa: F401
from tests.test_expertise_pdf import pdf_text as report_text
from tests.test_expertise_pdf import stored as report_stored
from tests.test_rcp_pdf import board, fiche  # noqa: F401
from tests.test_rcp_pdf import pdf_text as rcp_text
from tests.test_rcp_pdf import stored as rcp_stored

EXPECTED = Path(__file__).parent / "fixtures" / "document_texts"
# A Monday morning in Paris: every date and time printed is this one, whatever today is.
MOMENT = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def frozen():
    # Set up before the worlds (autouse fixtures come first), so their dates are fixed too.
    with time_machine.travel(MOMENT, tick=False):
        yield


def _without_ids(text: str) -> str:
    """The record numbers (database ids), the personas' RPPS numbers (drawn from a counter the
    whole test run shares) and the signed content's SHA-256, which holds them."""
    text = re.sub(r"n° \d+", "n° <id>", text)
    text = re.sub(r"\bRPPS \d{11}\b", "RPPS <rpps>", text)
    return re.sub(r"\b[0-9a-f]{64}\b", "<sha256>", text)


def _compare(name: str, text: str) -> None:
    path = EXPECTED / f"{name}.txt"
    if os.environ.get("UPDATE_DOCUMENT_TEXTS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    assert text == path.read_text(encoding="utf-8").rstrip("\n")


def test_the_fiche_rcp_reads_as_before(board):  # noqa: F811
    assert timezone.now() == MOMENT
    text = rcp_text(rcp_stored(fiche(board.v2)))
    _compare("fiche", _without_ids(text))


def test_the_minutes_read_as_before(board, capture):  # noqa: F811
    from rcp import pdf

    with capture(execute=True):
        document = pdf.request_minutes_pdf(session=board.session, by=board.coordination)
    document.refresh_from_db()
    text = rcp_text(rcp_stored(document))
    _compare("minutes", _without_ids(text))


def test_the_tele_expertise_report_reads_as_before(story, capture):  # noqa: F811
    document = sign(story, capture)
    text = report_text(report_stored(document))
    _compare("report", _without_ids(text))

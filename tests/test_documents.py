"""The shared documents capability (portal/documents.py) as both kinds of document live it: the
RCP's fiche and the tele-expertise report are made by one task, taken by the model's label and
the document's id, and a redelivered task behaves the same for both.

The worlds are those of tests/test_rcp_pdf.py (the thoracic board, Jeanne Dupont's fiche) and
tests/test_expertise_pdf.py (Dr Martin's request, signed by the teleradiologist).
"""

import pytest
from celery import current_app

from expertise import pdf as expertise_pdf
from expertise.models import ReportDocument
from portal import documents
from portal.documents import render_document
from rcp import pdf as rcp_pdf
from rcp.models import RcpDocument
from tests import test_expertise_pdf, test_rcp_pdf

# The worlds of the two kinds' own tests.
board, fiche = test_rcp_pdf.board, test_rcp_pdf.fiche
capture, sign, story = test_expertise_pdf.capture, test_expertise_pdf.sign, test_expertise_pdf.story

Status = documents.GeneratedDocument.Status


def _fiche_failed(board, capture):
    """Jeanne Dupont's fiche v2, failed (say after its retries), and how to ask for it again."""
    document = fiche(board.v2)
    RcpDocument.objects.filter(pk=document.pk).update(status=Status.FAILED, error="OSError")

    def ask_again():
        with capture(execute=True):
            return rcp_pdf.request_case_pdf(case=board.case, decision=board.v2, by=board.chair)

    return document, ask_again


def _report_failed(story, capture):
    document = sign(story, capture)
    ReportDocument.objects.filter(pk=document.pk).update(status=Status.FAILED, error="OSError")

    def ask_again():
        with capture(execute=True):
            return expertise_pdf.report_pdf_ask_again(request=story.request, by=story.expert)

    return document, ask_again


@pytest.fixture(params=["rcp fiche", "expertise report"])
def failed(request, db):
    if request.param == "rcp fiche":
        return _fiche_failed(request.getfixturevalue("board"), request.getfixturevalue("capture"))
    return _report_failed(request.getfixturevalue("story"), request.getfixturevalue("capture"))


def test_a_redelivered_task_leaves_a_failed_document_failed_and_another_try_is_a_new_one(
    failed,
    capture,
):
    document, ask_again = failed
    before = type(document).objects.get(pk=document.pk)

    # The worker died after marking it failed, before acknowledging: the task comes again.
    with capture(execute=True):
        render_document.apply(args=[document._meta.label, document.pk])

    document.refresh_from_db()
    assert document.status == Status.FAILED
    assert document.attempts == before.attempts
    assert (document.file.name, document.generated_at) == (before.file.name, before.generated_at)
    # The page's "make it again" makes a new document, and that one is made.
    again = ask_again()
    again.refresh_from_db()
    assert again.pk != document.pk
    assert again.status == Status.READY and again.file
    assert documents.read(again).startswith(b"%PDF-")


@pytest.mark.parametrize(
    ("name", "builder", "model"),
    [
        ("rcp.render_document", "board", RcpDocument),
        ("expertise.render_report", "story", ReportDocument),
    ],
)
def test_a_render_queued_under_the_former_task_names_is_still_made(
    request,
    capture,
    name,
    builder,
    model,
):
    """Messages left in the broker by the version before the shared task still make their
    document after an upgrade."""
    request.getfixturevalue(builder)
    document = model.objects.exclude(status=Status.FAILED).order_by("-pk").first()
    if document is None:  # the report: signed without running its task
        document = sign(request.getfixturevalue("story"), capture, execute=False)
    model.objects.filter(pk=document.pk).update(status=Status.PENDING, file="", sha256="")

    with capture(execute=True):
        current_app.tasks[name].apply(args=[document.pk])

    document.refresh_from_db()
    assert document.status == Status.READY
    assert documents.read(document).startswith(b"%PDF-")


def test_a_document_of_a_kind_nobody_registered_is_marked_failed_not_left_pending(
    board,
    monkeypatch,
):
    document = fiche(board.v2)
    RcpDocument.objects.filter(pk=document.pk).update(status=Status.PENDING)
    monkeypatch.delitem(documents._KINDS, ("rcp.RcpDocument", RcpDocument.Kind.FICHE))

    render_document.apply(args=["rcp.RcpDocument", document.pk])

    document.refresh_from_db()
    assert document.status == Status.FAILED
    assert "no document kind registered" in document.error

"""The views of a page's PDF block (portal/documents.py), once for every kind of document: the
block polled while a document is being made, the download of a ready one, and what a request
for one answers.

An app builds its views from these with its subject's access helper, called first with the
address's ids, so outsiders get its audited 404 before anything else is read; what differs
(the block's template and contents, the words and the audit of a download) stays the app's::

    case_outputs = documents_views.outputs_view(
        open_subject=get_case_for_user,
        template="rcp/_outputs.html",
        outputs=lambda case, user: pdf.case_outputs(case=case, user=user),
    )
"""

from collections.abc import Callable

from django.contrib import messages
from django.db.models import QuerySet
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from portal.documents_models import GeneratedDocument
from portal.views import patient_data_view

# (request, **the address's ids) -> the subject, or the access helper's 404.
OpenSubject = Callable[..., object]


def block(request, template: str, outputs, *, error: str = "") -> HttpResponse:
    """The PDF block ``template`` showing ``outputs``, with ``error`` when a request was
    refused."""
    return render(request, template, {"outputs": outputs, "error": error})


def answer(request, template: str, outputs, *, error: str, back: HttpResponse) -> HttpResponse:
    """What a request for a document answers: the refreshed block for htmx; otherwise the
    refusal as a message, and ``back`` to the page the form was on."""
    if request.htmx:
        return block(request, template, outputs, error=error)
    if error:
        messages.error(request, error)
    return back


def outputs_view(*, open_subject: OpenSubject, template: str, outputs: Callable):
    """The view of the PDF block of a subject, which the block polls while a document is being
    made: the documents' state only, nothing of the record, so it writes no audit event.
    ``outputs(subject, user)`` is what the block shows."""

    @patient_data_view
    @require_GET
    def view(request, **ids):
        subject = open_subject(request, **ids)
        return block(request, template, outputs(subject, request.user))

    return view


def download_view(
    *,
    open_subject: OpenSubject,
    documents: Callable[[object], QuerySet],
    serve: Callable[..., HttpResponse | None],
    back: Callable[[object], str],
):
    """The view downloading a ready document among the subject's ``documents(subject)``.

    ``serve(request, subject, document)`` answers with the app's
    :func:`portal.documents.download_response` (its words, its audit event, inline or as an
    attachment); when that finds the file altered, the reader goes to ``back(subject)``, where
    the message is shown. A document of another subject, or not ready, is a 404.
    """

    @patient_data_view
    @require_GET
    def view(request, document_id, **ids):
        subject = open_subject(request, **ids)
        document = (
            documents(subject).filter(pk=document_id, status=GeneratedDocument.Status.READY).first()
        )
        if document is None:
            raise Http404
        return serve(request, subject, document) or redirect(back(subject))

    return view

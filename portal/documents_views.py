"""The views of a page's PDF block (portal/documents.py), once for every kind of document: the
block polled while a document is being made, the request for one, and the download of a ready
one.

An app describes the block of one kind of subject (an RCP case, a tele-expertise request) by
its access helper, its template and what it shows, and builds its views from it. Every view
opens the subject through that helper first, with the address's ids, so an outsider gets its
audited 404 before anything else is read; what differs (who may ask, the words and the audit
of a download) stays the app's::

    CASE_PDF = documents_views.PdfBlock(
        open_subject=get_case_for_user,
        template="rcp/_outputs.html",
        outputs=lambda case, user: pdf.case_outputs(case=case, user=user),
    )
    case_outputs = CASE_PDF.outputs_view()
"""

from collections.abc import Callable
from dataclasses import dataclass

from django.contrib import messages
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from portal.access import child_or_not_found
from portal.documents_models import GeneratedDocument, UploadedFile
from portal.views import patient_data_view


@dataclass(frozen=True)
class PdfBlock:
    """The PDF block of one kind of subject."""

    # (request, **the address's ids) -> the subject, or the access helper's 404.
    open_subject: Callable[..., object]
    # The block's include, which extends documents/_outputs.html.
    template: str
    # (subject, user) -> what the block shows (its documents, its urls, its buttons).
    outputs: Callable[[object, object], object]

    def render(self, request, subject, *, error: str = "") -> HttpResponse:
        """The block of ``subject``, with ``error`` when a request was refused."""
        outputs = self.outputs(subject, request.user)
        return render(request, self.template, {"outputs": outputs, "error": error})

    def outputs_view(self):
        """The view of the block, which polls it while a document is being made: the
        documents' state only, nothing of the record, so it writes no audit event."""

        @patient_data_view
        @require_GET
        def view(request, **ids):
            return self.render(request, self.open_subject(request, **ids))

        return view

    def request_view(
        self,
        *,
        ask: Callable[[object, object], object],
        refused: type[Exception],
        back: Callable[[object, object], HttpResponse],
    ):
        """The view asking for a document of the subject: ``ask(request, subject)`` queues it,
        or raises the app's ``refused`` exception with the reason for the user. htmx gets the
        refreshed block; a plain form gets the refusal as a message and
        ``back(request, subject)``."""

        @patient_data_view
        @require_POST
        def view(request, **ids):
            subject = self.open_subject(request, **ids)
            error = ""
            try:
                ask(request, subject)
            except refused as refusal:
                error = str(refusal)
            if request.htmx:
                return self.render(request, subject, error=error)
            if error:
                messages.error(request, error)
            return back(request, subject)

        return view

    def download_view(
        self,
        *,
        documents: Callable[[object], QuerySet],
        serve: Callable[[object, object, GeneratedDocument], HttpResponse | None],
        back: Callable[[object], str],
    ):
        """The view downloading a ready document among the subject's ``documents(subject)``
        (another subject's, or one not ready, is a 404).

        ``serve(request, subject, document)`` answers with the app's
        :func:`portal.documents.download_response` (its words, its audit event, inline or as
        an attachment); when that finds the file altered, the reader goes to ``back(subject)``,
        where the message is shown.
        """

        @patient_data_view
        @require_GET
        def view(request, document_id, **ids):
            subject = self.open_subject(request, **ids)
            ready = GeneratedDocument.Status.READY
            document = documents(subject).filter(pk=document_id, status=ready).first()
            if document is None:
                raise Http404
            return serve(request, subject, document) or redirect(back(subject))

        return view


def uploaded_file_view(
    *,
    open_parent: Callable[..., object],
    files: Callable[[object, object], QuerySet],
    object_type: str,
    audit: Callable[[object, object, UploadedFile], None],
    filename: Callable[[UploadedFile], str],
    as_attachment: Callable[[UploadedFile], bool] = lambda uploaded: False,
    purpose: str = "",
    file_id: str = "document_id",
):
    """The view serving a file people gave to a subject (an RCP case's document, a
    tele-expertise request's attachment): the subject through its access helper
    (``open_parent(request, **ids)``), then the file among ``files(subject, user)``, so that
    another subject's file is the same audited 404 as a missing one, naming the subject's
    patient; ``audit(request, subject, file)`` writes the app's read event."""

    @patient_data_view
    @require_GET
    def view(request, **ids):
        pk = ids.pop(file_id)
        subject = open_parent(request, **ids)
        uploaded = child_or_not_found(
            request,
            files(subject, request.user),
            pk,
            object_type=object_type,
            patient=subject.patient,
            purpose=purpose,
        )
        audit(request, subject, uploaded)
        return uploaded_file_response(
            uploaded, filename=filename(uploaded), as_attachment=as_attachment(uploaded)
        )

    return view


def uploaded_file_response(
    uploaded: UploadedFile, *, filename: str, as_attachment: bool = False
) -> FileResponse:
    """A file people gave (an RCP case's document, a tele-expertise attachment), served with the
    type checked at upload (portal/uploads.py) and never sniffed again by the browser: a file
    that is not what its checked type says must not run as a page of the portal."""
    response = FileResponse(
        uploaded.file.open("rb"),
        content_type=uploaded.content_type,
        as_attachment=as_attachment,
        filename=filename,
    )
    response["X-Content-Type-Options"] = "nosniff"
    return response

"""Generated documents: the PDFs the portal makes from a record and keeps (the fiche RCP and the
session minutes of rcp, the signed report of expertise, and whatever kind comes next).

Everything but the words is here, once:

* :class:`GeneratedDocument` — the abstract model (status, attempts, file, SHA-256, size,
  error, made and generated times) each app's document model inherits;
* :func:`reuse_or_create` — the document being made or made for a subject, else a new one,
  queued after the caller's transaction commits;
* :func:`render_document` — the one Celery task, given the model's label and the document's
  id, and its retry loop (:func:`portal.pdf.render_with_retries`);
* :func:`render` — the template rendered in French (Paris time) with WeasyPrint, stored with
  its SHA-256 (:mod:`portal.pdf`);
* :func:`download_response` — the verified file with its EXPORT audit event, inline or as an
  attachment; an altered file is never served (:func:`integrity_failed`);
* ``templates/documents/_outputs.html`` — the PDF block of a page, which each app's block
  extends — and ``static/css/print.css``, the print style of every document.

A new kind of document needs only its template and the function building its context (and,
for a new subject, the model naming it); its views call :func:`download_response`::

    # myapp/models.py
    class Letter(GeneratedDocument):
        patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="letters")
        file = models.FileField(upload_to="myapp/pdf/%Y/%m/", blank=True)

    # myapp/pdf.py
    from portal import documents

    @documents.kind(Letter, template="myapp/pdf/letter.html", folder="myapp/pdf")
    def letter_context(document: Letter) -> dict:
        return {"patient": document.patient}

    def request_letter(*, patient) -> Letter:
        return documents.reuse_or_create(
            Letter, live=Letter.objects.filter(patient=patient).exclude(status="failed"),
            patient=patient,
        )

The template links ``{{ css_url }}`` (``static/css/print.css``); ``logo_url`` and
``generated_at`` are in every context, and :func:`specialty_label` and :func:`ins_context` print
what several kinds print. A context function returns :class:`Content` instead of a dict when the
document shows stored files (key images): WeasyPrint may fetch those and nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from celery import shared_task
from django.apps import apps
from django.contrib import messages
from django.db import IntegrityError, models, transaction
from django.db.models import F
from django.http import HttpResponse
from django.template.loader import render_to_string
from django.utils import timezone, translation
from django.utils.http import content_disposition_header

from portal import audit
from portal import pdf as portal_pdf
from portal.audit import Actor
from portal.documents_models import GeneratedDocument
from portal.models import InsOid, Specialty
from portal.pdf import MAX_RETRIES, DocumentCorrupted, describe_error, render_with_retries
from portal.task_queue import enqueue_on_commit

logger = logging.getLogger(__name__)

# The documents are records (of a meeting, of an act): French, in Paris time, whatever the
# language of the page or the worker that made them.
LANGUAGE = "fr"
PARIS = ZoneInfo("Europe/Paris")
STYLESHEET = "css/print.css"
LOGO = "img/favicon.svg"


Status = GeneratedDocument.Status


# --- Kinds: a template and the function building its context --------------------------------


@dataclass(frozen=True)
class Content:
    """A template's context and the stored files (storage names) the document may show."""

    context: dict
    media: Sequence[str] = ()


@dataclass(frozen=True)
class Kind:
    template: str
    context: Callable[[GeneratedDocument], dict | Content]
    folder: str
    # Run once the file is stored and the document ready (expertise tells the requester).
    on_ready: Callable[[GeneratedDocument], object] | None = None


_KINDS: dict[tuple[str, str], Kind] = {}


def kind(model, *, template: str, folder: str, value: str = "", on_ready=None):
    """Register the decorated context function as the kind ``value`` of ``model``'s documents
    (``value`` is the document's ``kind`` field, for a model holding several kinds)."""

    def register(context):
        _KINDS[(model._meta.label, value)] = Kind(
            template=template, context=context, folder=folder, on_ready=on_ready
        )
        return context

    return register


def kind_of(document: GeneratedDocument) -> Kind:
    key = (document._meta.label, getattr(document, "kind", ""))
    try:
        return _KINDS[key]
    except KeyError:
        raise LookupError(f"no document kind registered for {key}") from None


# --- What the templates of several kinds print the same way ----------------------------------


def specialty_label(code: str) -> str:
    """A specialty's label (in French when rendered), or the code the portal does not know."""
    try:
        return str(Specialty(code).label)
    except ValueError:
        return code


def ins_context(patient) -> dict | None:
    """The patient's INS as a document prints it, only for a qualified identity."""
    ins = patient.ins_for_output()
    if not ins:
        return None
    return {"matricule": ins[0], "oid": ins[1], "kind": str(InsOid(ins[1]).label)}


# --- Reuse or create ----------------------------------------------------------------------------


def reuse_or_create(model, *, live: models.QuerySet, **fields) -> GeneratedDocument:
    """The document ``live`` finds (being made or made), else a new one with ``fields``,
    queued to be made after the caller's transaction commits. The model's unique constraints
    say what may be live at once: a request racing this one and winning is returned."""
    with transaction.atomic():
        existing = live.first()
        if existing is not None:
            return existing
        try:
            with transaction.atomic():
                document = model.objects.create(**fields)
        except IntegrityError:
            # Asked twice at once: the other request made it.
            return live.first()
        queue(document)
    return document


def queue(document: GeneratedDocument) -> None:
    """Render ``document`` once the current transaction commits (never inside it)."""
    enqueue_on_commit("documents.render", document._meta.label, document.pk)


@shared_task(bind=True, max_retries=MAX_RETRIES, acks_late=True, name="documents.render")
def render_document(self, model_label: str, document_id: int) -> None:
    """Render one document; transient errors (storage, database) are retried, bounded.

    A ready document is left as it is (a redelivery, acks_late, of a finished task), and so is
    a failed one: another try is a new document (the live-document constraints allow it), so
    re-rendering the old one would give its subject two live documents.
    """
    _render_task(self, model_label, document_id)


def _render_task(task, model_label: str, document_id: int) -> None:
    document = apps.get_model(model_label).objects.filter(pk=document_id).first()
    if document is None or document.status in (Status.READY, Status.FAILED):
        return
    render_with_retries(
        task,
        document=document,
        render=render,
        mark_retrying=mark_retrying,
        mark_failed=mark_failed,
        logger=logger,
    )


# The names the apps' own render tasks had: messages queued before an upgrade are still made.
@shared_task(bind=True, max_retries=MAX_RETRIES, acks_late=True, name="rcp.render_document")
def _render_rcp_document(self, document_id: int) -> None:
    _render_task(self, "rcp.RcpDocument", document_id)


@shared_task(bind=True, max_retries=MAX_RETRIES, acks_late=True, name="expertise.render_report")
def _render_report_document(self, document_id: int) -> None:
    _render_task(self, "expertise.ReportDocument", document_id)


# --- Rendering ----------------------------------------------------------------------------------


def html(document: GeneratedDocument) -> tuple[str, list[str]]:
    """The HTML of ``document`` and the stored files it may show."""
    spec = kind_of(document)
    with translation.override(LANGUAGE), timezone.override(PARIS):
        content = spec.context(document)
        if not isinstance(content, Content):
            content = Content(context=content)
        context = {
            "css_url": portal_pdf.static_url(STYLESHEET),
            "logo_url": portal_pdf.static_url(LOGO),
            "generated_at": timezone.now(),
            **content.context,
        }
        return render_to_string(spec.template, context), list(content.media)


def render(*, document: GeneratedDocument) -> GeneratedDocument:
    """Render the document's PDF, store it with its SHA-256 and mark it ready."""
    model = type(document)
    model.objects.filter(pk=document.pk).update(status=Status.RUNNING, attempts=F("attempts") + 1)
    text, media = html(document)
    # Looked up at each call: a test (or the benchmark) replacing portal.pdf's functions sees
    # what this document fetched and wrote.
    data = portal_pdf.write_pdf(text, fetcher=portal_pdf.portal_resources(media=media))
    stored = portal_pdf.store_pdf(data, folder=kind_of(document).folder)
    model.objects.filter(pk=document.pk).update(
        status=Status.READY,
        file=stored.name,
        sha256=stored.sha256,
        size=stored.size,
        generated_at=stored.stored_at,
        error="",
    )
    document.refresh_from_db()
    on_ready = kind_of(document).on_ready
    if on_ready is not None:
        on_ready(document)
    return document


def mark_retrying(*, document: GeneratedDocument, error: Exception) -> None:
    type(document).objects.filter(pk=document.pk).update(
        status=Status.RETRYING, error=describe_error(error)
    )


def mark_failed(*, document: GeneratedDocument, error: Exception) -> None:
    type(document).objects.filter(pk=document.pk).update(
        status=Status.FAILED, error=describe_error(error)
    )


# --- Reading and serving ------------------------------------------------------------------------


def read(document: GeneratedDocument) -> bytes:
    """The stored PDF, checked against its SHA-256 (a changed file is never handed out)."""
    name = f"{document._meta.label_lower} {document.pk}"
    if document.status != Status.READY or not document.file:
        raise DocumentCorrupted(f"{name} is not ready")
    try:
        return portal_pdf.read_verified(name=document.file.name, sha256=document.sha256)
    except DocumentCorrupted as error:
        raise DocumentCorrupted(f"{name}: {error}") from error


def integrity_failed(*, document: GeneratedDocument, by: Actor, patient=None, purpose="") -> None:
    """A stored PDF no longer matches its SHA-256: never serve it, say so in the audit trail
    (security alert, serious failure) and mark it failed, so that it can be made again."""
    with transaction.atomic():
        mark_failed(document=document, error=DocumentCorrupted("SHA-256 mismatch"))
        audit.record(
            actor=by,
            event=audit.AuditEventId.SECURITY_ALERT,
            action=audit.AuditAction.EXECUTE,
            outcome=audit.AuditOutcome.SERIOUS_FAILURE,
            obj=document,
            patient=patient,
            purpose=purpose,
            detail={"integrity": "sha256 mismatch", "expected": document.sha256},
        )


def download_response(
    request,
    document: GeneratedDocument,
    *,
    filename: str,
    attachment: bool,
    purpose,
    detail: dict,
    altered_message: str,
    patient=None,
    subject: dict | None = None,
) -> HttpResponse | None:
    """The verified file with its EXPORT audit event (DCM 110106, action R), inline or as an
    attachment; ``subject`` names what the event is about (the document and ``patient`` by
    default). None when the file was altered: the caller sends the reader back to the page,
    where ``altered_message`` is shown."""
    actor = Actor.from_request(request)
    try:
        data = read(document)
    except DocumentCorrupted as error:
        logger.error("%s", error)
        integrity_failed(document=document, by=actor, patient=patient, purpose=purpose)
        messages.error(request, altered_message)
        return None
    audit.record(
        actor=actor,
        event=audit.AuditEventId.EXPORT,
        action=audit.AuditAction.READ,
        purpose=purpose,
        detail={**detail, "sha256": document.sha256},
        **(subject if subject is not None else {"obj": document, "patient": patient}),
    )
    # The bytes checked above, not the file opened again: what was verified is what leaves.
    response = HttpResponse(data, content_type="application/pdf")
    response["Content-Disposition"] = content_disposition_header(attachment, filename)
    return response

"""The PDF of a tele-expertise report: made when the expert signs, delivered, downloaded.

Dr Claire Martin, Jeanne Dupont's oncologist, asks the teleradiology pool of the CHRU de Tours
about a nodule on her CT. Dr Sophie Garnier, the teleradiologist, claims the request and signs
her report; the PDF is made by the Celery task (in-process here) and goes to Dr Martin and to
Jeanne Dupont's GP, Dr Pierre Lemoine. Dr Marc Henry, the pool's other radiologist, never had
the request; world.outsider is the expert of another pool.
"""

import hashlib
import io
import re
import unicodedata

import pytest
from celery.exceptions import Retry
from django.contrib.messages import get_messages
from django.core import mail
from django.core.files.storage import default_storage
from django.urls import reverse
from pypdf import PdfReader

from expertise import pdf, services
from expertise.models import Report, ReportDocument, Request
from expertise.services import ExpertiseError
from portal import pdf as portal_pdf
from portal.audit import Actor
from portal.documents import render_document
from portal.models import AuditEvent, AuditEventId, AuditOutcome, AuditPurpose, Notification
from tests.conftest import client_for
from tests.expertise_world import QUESTION, REPORT, consent, expertise_world

Status = ReportDocument.Status
PORTAL_URL = "https://portail.mirc.test"


def pdf_text(data: bytes) -> str:
    """The text of a PDF, one space between words (layout breaks lines anywhere)."""
    reader = PdfReader(io.BytesIO(data))
    text = " ".join(page.extract_text() or "" for page in reader.pages)
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text))


def stored(document: ReportDocument) -> bytes:
    with default_storage.open(document.file.name, "rb") as stream:
        return stream.read()


@pytest.fixture
def capture(django_capture_on_commit_callbacks):
    return django_capture_on_commit_callbacks


@pytest.fixture
def story(world, settings):
    """Dr Martin's request, claimed by the teleradiologist, with a saved draft report."""
    settings.PORTAL_URL = PORTAL_URL
    w = expertise_world(world)
    w.requester = w.oncologist
    w.expert = Actor(user=w.teleradiologist.user)
    oncologist = Actor(user=w.oncologist.user)
    request = services.request_create(
        patient=w.patient,
        pool=w.teleradiology,
        by=oncologist,
        urgency="priority",
        question=QUESTION,
        clinical_context="Fumeuse, 40 paquets-années. Découverte fortuite.",
        studies=[w.ct],
        **consent(),
    )
    services.request_send(request=request, by=oncologist)
    w.request = services.request_claim(request=request, by=w.expert)
    w.draft = services.report_save(request=w.request, by=w.expert, revision=None, **REPORT)
    return w


def sign(w, capture, *, execute=True) -> ReportDocument:
    """The teleradiologist signs: the PDF is queued on commit (run now when ``execute``)."""
    with capture(execute=execute):
        services.report_sign_and_send(request=w.request, by=w.expert, revision=w.draft.revision)
    w.request.refresh_from_db()
    return ReportDocument.objects.filter(report__request=w.request).first()


def urls(w, document=None) -> dict:
    kwargs = {"request_id": w.request.pk}
    result = {
        "outputs": reverse("expertise-report-outputs", kwargs=kwargs),
        "retry": reverse("expertise-report-pdf-retry", kwargs=kwargs),
        "page": reverse("expertise-request", kwargs=kwargs),
    }
    if document is not None:
        result["download"] = reverse(
            "expertise-report-pdf", kwargs={**kwargs, "document_id": document.pk}
        )
    return result


def delivered_to(user) -> int:
    return Notification.objects.filter(recipient=user).count()


@pytest.fixture
def failing_render(monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(portal_pdf, "write_pdf", full_disk)
    return monkeypatch


# --- The PDF ------------------------------------------------------------------------------------


def test_signing_the_report_makes_a_ready_pdf_with_the_whole_record(story, capture):
    document = sign(story, capture)

    assert story.request.state == Request.State.ANSWERED
    assert document.status == Status.READY
    assert document.generated_at is not None and document.attempts == 1
    data = stored(document)
    assert data.startswith(b"%PDF-")
    assert document.sha256 == hashlib.sha256(data).hexdigest()
    assert document.size == len(data)
    report = Report.objects.get(request=story.request)
    text = pdf_text(data)
    patient = story.patient
    for expected in [
        "Compte rendu de télé-expertise",
        f"Demande n° {story.request.pk}",
        patient.display_name,
        "Féminin",
        "12/03/1956",
        "37261",
        patient.ins_matricule,
        "1.2.250.1.213.1.4.10",
        "Dr Claire Martin",  # the requester
        story.oncologist.rpps,
        "Dr Sophie Garnier",  # the expert, as signed
        "Téléradiologie — CHRU de Tours",
        "Radiologie",
        "Prioritaire",
        "Information orale",
        QUESTION,
        "Découverte fortuite.",
        "CT",  # the study attached
        REPORT["findings"],
        REPORT["conclusion"],
        REPORT["recommendation"],
        REPORT["exam_detail"],
        "Signé électroniquement par Dr Sophie Garnier",
        report.signer_rpps,
        report.content_sha256,
        "TE2",
        "RQD",
        "Dr Pierre Lemoine",  # the GP, who receives it
    ]:
        assert expected in text, f"{expected!r} missing from the report's PDF"


def test_the_ins_of_an_identity_not_qualified_is_not_printed(story, capture):
    from portal.models import IdentityStatus, Patient

    Patient.objects.filter(pk=story.patient.pk).update(identity_status=IdentityStatus.RETRIEVED)
    text = pdf_text(stored(sign(story, capture)))

    assert story.patient.display_name in text
    assert story.patient.ins_matricule not in text
    assert "identité non qualifiée" in text


def test_a_draft_report_has_no_pdf(story, capture):
    with pytest.raises(ExpertiseError):
        pdf.request_report_pdf(report=story.draft)
    # Nor through the page: the retry of an unsigned report is refused.
    with capture(execute=True):
        response = client_for(story.oncologist.user).post(urls(story)["retry"])
    assert response.status_code == 302
    assert not ReportDocument.objects.exists()


def test_the_pdf_is_french_when_the_page_is_english(story, capture, failing_render):
    failed = sign(story, capture)
    assert failed.status == Status.FAILED
    failing_render.undo()
    client = client_for(story.teleradiologist.user)
    client.cookies["django_language"] = "en"

    with capture(execute=True):
        response = client.post(urls(story)["retry"], HTTP_HX_REQUEST="true")

    # The block comes back at once in English, polling while the worker makes the PDF.
    html = response.content.decode()
    assert response.status_code == 200
    assert "Waiting" in html and 'hx-trigger="every 2s"' in html
    text = pdf_text(stored(ReportDocument.objects.get(status=Status.READY)))
    for french in ["Compte rendu de télé-expertise", "Radiologie", "Féminin", "Prioritaire"]:
        assert french in text
    for english in ["Radiology", "Female", "Priority", "Signed"]:
        assert english not in text


# --- Delivery -------------------------------------------------------------------------------


def test_the_requester_and_the_gp_are_told_once_in_the_portal_and_by_email(story, capture):
    requester, gp = story.oncologist.user, story.gp.user
    others = [story.second_radiologist.user, story.outsider.user]
    before = {user.pk: delivered_to(user) for user in (requester, gp, *others)}

    document = sign(story, capture)

    assert document.delivered_at is not None
    for user in (requester, gp):
        assert delivered_to(user) == before[user.pk] + 1
        notification = Notification.objects.filter(recipient=user).order_by("-pk").first()
        assert str(story.request.pk) in notification.message
        assert notification.url == urls(story)["page"]
    assert sorted(message.to[0] for message in mail.outbox) == sorted([gp.email, requester.email])
    for message in mail.outbox:
        assert str(story.request.pk) in message.subject
        assert PORTAL_URL + urls(story)["page"] in message.body
        # Nothing of the patient nor of the case leaves by e-mail.
        for secret in [
            "Dupont",
            "Jeanne",
            story.patient.ins_matricule,
            "Nodule",
            REPORT["conclusion"],
            "Radiolog",
        ]:
            assert secret not in message.subject + message.body
    # The pool's other radiologist and the outsider hear nothing of it.
    assert [delivered_to(user) for user in others] == [before[user.pk] for user in others]

    # A redelivered task (acks_late) finds the document ready and stops...
    with capture(execute=True):
        render_document.apply(args=["expertise.ReportDocument", document.pk])
    # ...and one that renders it again (two workers at once) tells nobody twice.
    ReportDocument.objects.filter(pk=document.pk).update(status=Status.RUNNING)
    with capture(execute=True):
        render_document.apply(args=["expertise.ReportDocument", document.pk])
    document.refresh_from_db()
    assert document.status == Status.READY and document.attempts == 2
    for user in (requester, gp):
        assert delivered_to(user) == before[user.pk] + 1
    assert len(mail.outbox) == 2


def test_the_pdf_is_made_after_the_signature_commits_and_polled_meanwhile(story, capture):
    with capture(execute=False) as callbacks:
        document = sign(story, capture, execute=False)
        assert document.status == Status.PENDING
    client = client_for(story.oncologist.user)
    html = client.get(urls(story)["outputs"]).content.decode()
    assert 'hx-trigger="every 2s"' in html and urls(story)["outputs"] in html
    assert urls(story, document)["download"] not in html
    assert not mail.outbox

    with capture(execute=True):
        for callback in callbacks:  # what the commit does
            callback()

    document.refresh_from_db()
    assert document.status == Status.READY
    response = client.get(urls(story)["outputs"])
    html = response.content.decode()
    assert "no-store" in response["Cache-Control"]
    assert "hx-trigger" not in html
    assert urls(story, document)["download"] in html
    assert len(mail.outbox) == 2


# --- Download -------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["outsider", "second_radiologist"])
def test_the_download_is_not_found_for_those_who_do_not_see_the_request(story, capture, who):
    document = sign(story, capture)
    user = getattr(story, who).user
    client = client_for(user)
    for method, url in [
        ("get", urls(story, document)["download"]),
        ("get", urls(story)["outputs"]),
        ("post", urls(story)["retry"]),
    ]:
        response = getattr(client, method)(url)
        assert response.status_code == 404, f"{method} {url} as {who}"
    refusals = AuditEvent.objects.filter(
        event_id=AuditEventId.SECURITY_ALERT, outcome=AuditOutcome.MINOR_FAILURE, actor=user
    )
    assert refusals.count() == 3
    assert not AuditEvent.objects.filter(event_id=AuditEventId.EXPORT, actor=user).exists()
    assert ReportDocument.objects.count() == 1


@pytest.mark.parametrize("who", ["gp", "requester"])
def test_the_gp_and_the_requester_download_it_with_one_export_event(story, capture, who):
    document = sign(story, capture)
    user = getattr(story, who).user
    client = client_for(user)  # signing in is an event of its own
    last = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first()

    response = client.get(urls(story, document)["download"])

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == (
        f'attachment; filename="compte-rendu-teleexpertise-{story.request.pk}.pdf"'
    )
    assert "no-store" in response["Cache-Control"]
    assert response.content == stored(document)
    (event,) = AuditEvent.objects.filter(pk__gt=last)
    assert event.event_id == AuditEventId.EXPORT == "110106"
    assert event.action == "R"
    assert event.purpose == AuditPurpose.EXPERTISE
    assert event.patient == story.patient
    assert event.actor == user
    assert event.object_type == "expertise.reportdocument"
    assert event.detail["sha256"] == document.sha256


def test_a_document_of_another_request_is_not_found_through_this_one(story, capture):
    document = sign(story, capture)
    mine = services.request_create(
        patient=story.patient,
        pool=story.teleradiology,
        by=Actor(user=story.gp.user),
        question="Autre question",
        **consent(),
    )
    url = reverse(
        "expertise-report-pdf", kwargs={"request_id": mine.pk, "document_id": document.pk}
    )
    assert client_for(story.gp.user).get(url).status_code == 404


def test_an_altered_file_is_never_served(story, capture):
    document = sign(story, capture)
    with open(default_storage.path(document.file.name), "ab") as stream:
        stream.write(b"% tampered")

    response = client_for(story.gp.user).get(urls(story, document)["download"])

    assert response.status_code == 302
    assert response["Location"] == urls(story)["page"]
    (message,) = get_messages(response.wsgi_request)
    assert message.level_tag == "error"
    document.refresh_from_db()
    assert document.status == Status.FAILED
    assert not AuditEvent.objects.filter(event_id=AuditEventId.EXPORT).exists()
    alert = AuditEvent.objects.get(
        event_id=AuditEventId.SECURITY_ALERT, outcome=AuditOutcome.SERIOUS_FAILURE
    )
    assert alert.patient == story.patient
    assert alert.actor == story.gp.user


# --- Failures and retries -------------------------------------------------------------------


def test_a_failed_render_is_shown_and_made_again_on_request(story, capture, failing_render):
    failed = sign(story, capture)
    assert failed.status == Status.FAILED
    assert "No space left on device" in failed.error
    assert not failed.file and failed.delivered_at is None
    assert not mail.outbox  # nothing is announced before it is there

    # The expert sees the failure and the button; the GP sees the failure only.
    html = client_for(story.teleradiologist.user).get(urls(story)["outputs"]).content.decode()
    assert "state-postponed" in html and urls(story)["retry"] in html
    assert "hx-trigger" not in html
    html = client_for(story.gp.user).get(urls(story)["outputs"]).content.decode()
    assert "state-postponed" in html and urls(story)["retry"] not in html
    with capture(execute=True):
        refused = client_for(story.gp.user).post(urls(story)["retry"])
    assert refused.status_code == 302
    assert ReportDocument.objects.count() == 1

    failing_render.undo()
    with capture(execute=True):
        response = client_for(story.teleradiologist.user).post(urls(story)["retry"])
    assert response.status_code == 302 and response["Location"] == urls(story)["page"]
    remade = ReportDocument.objects.exclude(pk=failed.pk).get()
    assert remade.status == Status.READY and remade.delivered_at is not None
    assert len(mail.outbox) == 2
    html = client_for(story.oncologist.user).get(urls(story)["outputs"]).content.decode()
    assert "state-postponed" not in html and urls(story)["retry"] not in html
    assert urls(story, remade)["download"] in html


def test_transient_errors_are_retried_a_bounded_number_of_times(story, capture, monkeypatch):
    document = sign(story, capture, execute=False)

    def locked(*args, **kwargs):
        raise OSError("storage unavailable")

    retried = []

    def retry(*, exc, countdown):
        retried.append(countdown)
        return Retry(exc=exc, when=countdown)

    monkeypatch.setattr(portal_pdf, "write_pdf", locked)
    monkeypatch.setattr(render_document, "retry", retry)
    # As a worker runs it: the first failures are retried with a growing delay...
    for attempt in range(render_document.max_retries):
        render_document.push_request(retries=attempt, is_eager=False)
        try:
            with pytest.raises(Retry):
                render_document.run("expertise.ReportDocument", document.pk)
        finally:
            render_document.pop_request()
        document.refresh_from_db()
        assert document.status == Status.RETRYING
    assert retried == [15, 30, 60, 120, 240]
    # ...and the last one gives up: the page then offers to make it again.
    render_document.push_request(retries=render_document.max_retries, is_eager=False)
    try:
        render_document.run("expertise.ReportDocument", document.pk)
    finally:
        render_document.pop_request()
    document.refresh_from_db()
    assert document.status == Status.FAILED
    assert document.attempts == render_document.max_retries + 1

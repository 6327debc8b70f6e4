"""The PDFs of the RCP: the fiche of a validated decision and the minutes of a session.

The thoracic board of the CHRU de Tours (tests/rcp_world.py: the oncologist chairs, with the
thoracic surgeon, a radiation oncologist and the coordinator) discusses Jeanne Dupont, whose GP
submitted her case. The
PDFs are made by the Celery task (run in-process here), read back with pypdf, and fetched
through the views as each persona would.
"""

import datetime as dt
import hashlib
import io
import re
import socket
import unicodedata
import urllib.request

import pytest
from celery.exceptions import Retry
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse
from PIL import Image
from pypdf import PdfReader

from portal import documents
from portal import pdf as portal_pdf
from portal.audit import Actor
from portal.documents import render_document
from portal.models import AuditEvent, AuditEventId, AuditOutcome, CareRole
from rcp import pdf, services
from rcp.models import Committee, KeyImage, RcpDocument, Session
from tests import builders
from tests.conftest import client_for, make_patient, make_professional
from tests.rcp_world import COMPLETE_THORACIC, open_session, rcp_world

QUESTION = "Chirurgie d'emblée ou traitement néoadjuvant avant lobectomie ?"
PROPOSAL_V1 = "Lobectomie supérieure droite avec curage ganglionnaire."
PROPOSAL_V2 = "Chimiothérapie néoadjuvante (3 cycles) puis lobectomie supérieure droite."
REASON_V2 = "Résultat du TEP-TDM reçu après la séance : fixation médiastinale."


def pdf_text(data: bytes) -> str:
    """The text of a PDF, one space between words (layout breaks lines anywhere)."""
    reader = PdfReader(io.BytesIO(data))
    text = " ".join(page.extract_text() or "" for page in reader.pages)
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text))


def stored(document: RcpDocument) -> bytes:
    with default_storage.open(document.file.name, "rb") as stream:
        return stream.read()


def png(color=(40, 40, 40)) -> bytes:
    output = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(output, format="PNG")
    return output.getvalue()


@pytest.fixture
def board(world, django_capture_on_commit_callbacks, settings):
    """tests/rcp_world.py's thoracic board (the oncologist chairs) with Jeanne Dupont's case,
    submitted by her GP (not a member), validated twice. The digestive board's member is
    world.outsider; a pulmonologist of Bourges sits on no board at all."""
    settings.PORTAL_URL = getattr(settings, "PORTAL_URL", "https://portail.mirc.test")
    w = rcp_world(world)
    w.committee = w.thoracic
    w.stranger = make_professional(
        email="pneumologue.bourges@mirc.test",
        first_name="Lucie",
        last_name="Petit",
        specialty="pneumologie",
        establishment=w.bourges,
    )
    Session.objects.filter(pk=w.session.pk).update(place="Salle de staff, pavillon B")
    w.session.refresh_from_db()
    # The day of the meeting: its coordinator opens it (decisions are validated in it).
    open_session(w.session, by_user=w.coordinator.user)
    w.chair = Actor(user=w.oncologist.user)
    w.coordination = Actor(user=w.coordinator.user)
    w.case = _discussed_case(w, w.patient, proposal=PROPOSAL_V1, treatments=["387713003"])
    # Marked in the viewer during the meeting, before the decision is validated.
    KeyImage.objects.create(
        case=w.case,
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        sop_uid="1.2.3.4.5",
        rendering=ContentFile(png(), name="key.png"),
        caption="Masse lobaire supérieure droite, 32 mm",
        created_by=w.oncologist.user,
    )
    # Validating a version queues its fiche (rcp.services.decision_validate): made here.
    with django_capture_on_commit_callbacks(execute=True):
        w.v1 = services.decision_validate(
            case=w.case, revision=services.decision_draft(w.case).revision, by=w.chair
        )
        services.decision_amend(case=w.case, reason=REASON_V2, by=w.chair)
        draft = services.decision_save(
            case=w.case,
            revision=services.decision_draft(w.case).revision,
            by=Actor(user=w.surgeon.user),
            proposal=PROPOSAL_V2,
            treatment_types=["C15632", "387713003"],
            conforms_to_guideline=False,
            non_conformity_reason="Patiente inéligible à l'essai de référence.",
            trial_proposed=True,
            trial_name="NeoADAURA",
            trial_nct="NCT04351555",
        )
        w.v2 = services.decision_validate(case=w.case, revision=draft.revision, by=w.chair)
    return w


def _discussed_case(w, patient, *, proposal, treatments):
    # The GP submits: a doctor of the patient's care team (its GP), as a case is opened by one.
    if not patient.care_relationships.filter(professional=w.gp).exists():
        builders.care_team(patient, (w.gp, CareRole.GP))
    gp = Actor(user=w.gp.user)
    case = services.case_create(patient=patient, committee=w.committee, by=gp)
    case = services.case_update(
        case=case,
        revision=case.revision,
        by=gp,
        studies=[w.ct],
        **{
            **COMPLETE_THORACIC,
            "question": QUESTION,
            "tnm_n": "N1",
            "performance_status": "MED-264",
            "diagnosis_date": dt.date(2026, 1, 20),
            "history": "Tabagisme sevré (30 paquets-années).",
            "comorbidities": "BPCO stade 2.",
            "results": "TDM thoracique : masse de 32 mm du lobe supérieur droit.",
        },
    )
    services.case_submit(case=case, by=gp)
    services.case_put_on_agenda(case=case, session=w.session, by=w.coordination)
    for professional in (w.surgeon, w.oncologist, w.radiotherapist, w.coordinator):
        services.attendance_arrive(
            by=Actor.system("tests"), session=w.session, professional=professional, mode="in_person"
        )
    services.decision_save(
        case=case,
        revision=None,
        by=Actor(user=w.surgeon.user),
        proposal=proposal,
        treatment_types=treatments,
        conforms_to_guideline=True,
    )
    case.refresh_from_db()
    return case


def make_fiche(w, decision, capture) -> RcpDocument:
    with capture(execute=True):
        document = pdf.request_case_pdf(case=w.case, decision=decision, by=w.chair)
    document.refresh_from_db()
    return document


def fiche(decision) -> RcpDocument:
    return RcpDocument.objects.exclude(status=RcpDocument.Status.FAILED).get(decision=decision)


def fiches_failed(w) -> None:
    """As if the fiches made at validation had failed: the page offers to make them again."""
    RcpDocument.objects.filter(case=w.case).update(status=RcpDocument.Status.FAILED)


@pytest.fixture
def capture(django_capture_on_commit_callbacks):
    return django_capture_on_commit_callbacks


# --- The fiche RCP -----------------------------------------------------------------------------


def test_validating_a_new_version_makes_its_fiche_with_the_whole_record(board):
    document = fiche(board.v2)

    assert document.status == RcpDocument.Status.READY
    data = stored(document)
    assert data.startswith(b"%PDF-")
    assert document.sha256 == hashlib.sha256(data).hexdigest()
    assert document.size == len(data)
    text = pdf_text(data)
    patient = board.patient
    for expected in [
        # Identity, with the INS of a qualified identity.
        patient.display_name,
        "12/03/1956",
        patient.ins_matricule,
        "1.2.250.1.213.1.4.10",
        "Dr Pierre Lemoine",  # the GP, also the requesting doctor
        "Dr Claire Martin",  # the chair, who validated
        # Issuer, committee, meeting.
        "CHRU de Tours",
        "FINESS 370000481",
        "RCP thoracique — CHRU de Tours",
        "Salle de staff, pavillon B",
        "Quorum atteint",
        "Pr Antoine Rousseau",
        "Dr Claire Martin",
        "Dr Hélène Bertrand",
        "Oncologie médicale",
        "Présentiel",
        # The case.
        QUESTION,
        "RCP Appareil - Organes",
        "Phase initiale du cancer",
        "C34.1 — Tumeur maligne du lobe supérieur, bronches ou poumon",
        "8140/3 — Adénocarcinome, SAI",
        "cT2a N1 M0",
        "OMS 1",
        "BPCO stade 2.",
        # The decision, version 2.
        PROPOSAL_V2,
        "chimiothérapie",
        "intervention chirurgicale",
        "Patiente inéligible à l'essai de référence.",
        "NeoADAURA",
        "NCT04351555",
        "Version 2",
        "remplace la version 1",
        REASON_V2,
        "Validée par",
    ]:
        assert expected in text, f"{expected!r} missing from the fiche"
    assert PROPOSAL_V1 not in text


def test_each_validated_version_has_its_own_fiche(board, capture):
    first, second = fiche(board.v1), fiche(board.v2)

    assert first.pk != second.pk
    text = pdf_text(stored(first))
    assert PROPOSAL_V1 in text
    assert PROPOSAL_V2 not in text and "remplace la version" not in text
    # Asking again for a version returns its fiche: no second file.
    again = pdf.request_case_pdf(case=board.case, decision=board.v1, by=board.chair)
    assert again.pk == first.pk
    assert RcpDocument.objects.filter(decision=board.v1).count() == 1


def test_fiche_shows_the_key_images_from_storage(board, capture):
    image = KeyImage.objects.get(case=board.case)
    seen = []
    original = portal_pdf.portal_resources

    def spy(*, media=()):
        fetcher = original(media=media)
        seen.append(fetcher)
        return fetcher

    fiches_failed(board)
    portal_pdf.portal_resources = spy
    try:
        document = make_fiche(board, board.v2, capture)
    finally:
        portal_pdf.portal_resources = original

    assert "Masse lobaire supérieure droite, 32 mm" in pdf_text(stored(document))
    (fetcher,) = seen
    assert fetcher.media == {image.rendering.name}
    assert fetcher.refused == []
    reader = PdfReader(io.BytesIO(stored(document)))
    images = [img for page in reader.pages for img in page.images]
    assert images, "the key image is embedded in the PDF"


def test_the_cpdpn_opinion_shows_the_pregnancy_the_team_opinion_and_the_attestation(board, capture):
    w = board
    core = {
        "gynecologie_obstetrique": ("Sophie", "Lambert"),
        "medecine_foetale": ("Nicolas", "Girard"),
        "pediatrie_neonatologie": ("Anne", "Roux"),
        "genetique": ("Thomas", "Blanc"),
    }
    team = {
        specialty: make_professional(
            email=f"{specialty}@mirc.test",
            first_name=first,
            last_name=last,
            specialty=specialty,
            establishment=w.tours,
        )
        for specialty, (first, last) in core.items()
    }
    cpdpn = services.committee_create(
        by=Actor.system("tests"),
        name="CPDPN du CHRU de Tours",
        kind=Committee.Kind.CPDPN,
        establishment=w.tours,
        members=[
            (team["gynecologie_obstetrique"], "chair"),
            *[(pro, "member") for s, pro in team.items() if s != "gynecologie_obstetrique"],
        ],
    )
    (session,) = services.sessions_schedule(
        by=Actor.system("tests"),
        committee=cpdpn,
        first_start=w.session.starts_at + dt.timedelta(hours=1),
        duration=dt.timedelta(hours=2),
    )
    open_session(session, by_user=team["gynecologie_obstetrique"].user)
    builders.care_team(w.patient, (team["medecine_foetale"], CareRole.CARE_TEAM))
    midwife_case = Actor(user=team["medecine_foetale"].user)
    case = services.case_create(patient=w.patient, committee=cpdpn, by=midwife_case)
    case = services.case_update(
        case=case,
        revision=case.revision,
        by=midwife_case,
        studies=[w.ct],
        question="Avis sur la poursuite de la grossesse.",
        gestational_weeks=22,
        gestational_days=3,
        fetal_findings="Cardiopathie complexe découverte à l'échographie morphologique.",
        couple_wishes="Le couple souhaite être reçu par l'équipe.",
        termination_attestation_requested=True,
    )
    services.case_submit(case=case, by=midwife_case)
    chair = Actor(user=team["gynecologie_obstetrique"].user)
    services.case_put_on_agenda(case=case, session=session, by=chair)
    for professional in team.values():
        services.attendance_arrive(
            by=Actor.system("tests"), session=session, professional=professional, mode="remote"
        )
    draft = services.decision_save(
        case=case,
        revision=None,
        by=chair,
        team_opinion="Pathologie d'une particulière gravité, incurable au moment du diagnostic.",
        proposal="Remise de l'attestation ; consultation avec le couple.",
        termination_attested=True,
        attesting_physicians=[
            {"name": "Dr Sophie Lambert", "specialty": "gynecologie_obstetrique"},
            {"name": "Dr Nicolas Girard", "specialty": "medecine_foetale"},
        ],
    )
    with capture(execute=True):
        decision = services.decision_validate(case=case, revision=draft.revision, by=chair)
    text = pdf_text(stored(fiche(decision)))

    for expected in [
        "AVIS DU CPDPN",
        "CPDPN du CHRU de Tours",
        "22 SA + 3 j",
        "Cardiopathie complexe",
        "Le couple souhaite être reçu par l'équipe.",
        "Pathologie d'une particulière gravité",
        "Remise de l'attestation",
        "Interruption médicale de grossesse attestée",
        "Dr Sophie Lambert (Gynécologie obstétrique)",
        "Quorum atteint",
        "À distance",
    ]:
        assert expected in text, f"{expected!r} missing from the CPDPN opinion"
    assert "Conforme au référentiel" not in text  # a cancer notion
    # Labels and values sit side by side: the PDF's text order does not keep them together.
    html, _media = documents.html(fiche(decision))
    assert re.search(r"Interruption médicale de grossesse attestée</th><td>Oui</td>", html)
    assert re.search(r"Attestation d'IMG demandée</th><td>Oui</td>", html)


def test_a_draft_decision_has_no_fiche(board):
    draft = services.decision_amend(case=board.case, reason="Relecture", by=board.chair)
    with pytest.raises(services.RcpError):
        pdf.request_case_pdf(case=board.case, decision=draft, by=board.chair)
    assert not RcpDocument.objects.filter(decision=draft).exists()


def test_the_ins_of_an_identity_not_qualified_is_not_printed(board, capture):
    unqualified = make_patient(
        birth_name="Moreau", first_names="Louise", order=7, qualified=False, ipp="T100077"
    )
    case = _discussed_case(board, unqualified, proposal="Surveillance.", treatments=[])
    with capture(execute=True):
        decision = services.decision_validate(
            case=case, revision=services.decision_draft(case).revision, by=board.chair
        )
    text = pdf_text(stored(fiche(decision)))

    assert "MOREAU Louise" in text
    assert unqualified.ins_matricule not in text
    assert "identité non qualifiée" in text


def test_the_fiche_is_made_after_the_validation_commits(board, capture):
    case = _discussed_case(board, board.other_patient, proposal="Surveillance.", treatments=[])
    with capture(execute=False) as callbacks:
        decision = services.decision_validate(
            case=case, revision=services.decision_draft(case).revision, by=board.chair
        )
        document = fiche(decision)
        assert document.status == RcpDocument.Status.PENDING
    for callback in callbacks:  # what the commit does
        callback()
    document.refresh_from_db()
    assert document.status == RcpDocument.Status.READY
    assert "Surveillance." in pdf_text(stored(document))


# --- The minutes -------------------------------------------------------------------------------


def test_minutes_list_the_cases_in_agenda_order_with_attendance_and_quorum(board, capture):
    durand = board.other_patient
    second = _discussed_case(board, durand, proposal="Radiothérapie stéréotaxique.", treatments=[])
    with capture(execute=True):
        document = pdf.request_minutes_pdf(session=board.session, by=board.coordination)
    document.refresh_from_db()
    assert document.status == RcpDocument.Status.READY
    text = pdf_text(stored(document))

    for expected in [
        "Compte rendu de séance",
        "RCP thoracique — CHRU de Tours",
        "Liste de présence",
        "Pr Antoine Rousseau",
        "Dr Claire Martin",
        "Dr Hélène Bertrand",
        "Mme Julie Perrin",
        "Quorum atteint",
        PROPOSAL_V2,  # the last validated version of the first case
        QUESTION,
        "Pas de décision validée",  # the second case, discussed but not validated
    ]:
        assert expected.casefold() in text.casefold(), f"{expected!r} missing from the minutes"
    assert PROPOSAL_V1 not in text
    assert text.index(board.patient.display_name) < text.index(durand.display_name)
    # Every key image of the session's cases is in the minutes too.
    reader = PdfReader(io.BytesIO(stored(document)))
    assert KeyImage.objects.filter(case__session=board.session).exists()
    assert [img for page in reader.pages for img in page.images], "the key image is embedded"

    # The coordinator reorders the agenda: the next minutes follow it.
    services.agenda_reorder(
        session=board.session, case_ids=[second.pk, board.case.pk], by=board.coordination
    )
    with capture(execute=True):
        again = pdf.request_minutes_pdf(session=board.session, by=board.coordination)
    again.refresh_from_db()
    assert again.pk != document.pk
    text = pdf_text(stored(again))
    assert text.index(durand.display_name) < text.index(board.patient.display_name)


def test_the_minutes_read_the_same_number_of_queries_for_any_number_of_cases(board):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries():
        with CaptureQueriesContext(connection) as captured:
            documents.html(RcpDocument(kind=RcpDocument.Kind.MINUTES, session=board.session))
        return len(captured)

    one_case = queries()
    for patient in (
        board.other_patient,
        make_patient(birth_name="Moreau", first_names="Louise", order=7),
    ):
        case = _discussed_case(board, patient, proposal="Surveillance.", treatments=[])
        services.decision_validate(
            case=case, revision=services.decision_draft(case).revision, by=board.chair
        )
    assert queries() == one_case


# --- The url fetcher ---------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or a URL fails the test."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"network or file access attempted: {args!r}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request.OpenerDirector, "open", refuse)
    return attempts


def test_the_fetcher_refuses_everything_but_static_files_and_the_documents_media(db, no_network):
    default_storage.save("rcp/key-images/2026/03/allowed.png", ContentFile(png()))
    default_storage.save("rcp/documents/2026/03/other-patient.png", ContentFile(png()))
    fetcher = portal_pdf.portal_resources(media=["rcp/key-images/2026/03/allowed.png"])

    assert (
        fetcher.fetch(portal_pdf.static_url("css/print.css")).read().startswith(b"/* Print style")
    )
    assert fetcher.fetch(portal_pdf.media_url("rcp/key-images/2026/03/allowed.png")).read() == png()
    refused = [
        "http://example.com/x.png",
        "https://example.com/x.png",
        "file:///etc/passwd",
        "data:text/plain,hello",
        portal_pdf.media_url(
            "rcp/documents/2026/03/other-patient.png"
        ),  # stored, not this document's
        portal_pdf.BASE_URL + "static/../../../../etc/passwd",
        portal_pdf.BASE_URL + "static/rcp/%2e%2e/%2e%2e/portal/settings.py",
        portal_pdf.BASE_URL + "media/rcp/key-images/2026/03/../../../../etc/passwd",
        portal_pdf.BASE_URL + "etc/passwd",
        "https://pdf.mirc.invalid@example.com/static/css/print.css",
    ]
    for url in refused:
        with pytest.raises(portal_pdf.ResourceRefused):
            fetcher.fetch(url)
    assert fetcher.refused == refused
    assert no_network == []


def test_a_template_pointing_outside_renders_without_fetching_it(db, no_network):
    html = f"""<html><head>
      <link rel="stylesheet" href="http://example.com/evil.css">
      <link rel="stylesheet" href="{portal_pdf.static_url("css/print.css")}">
    </head><body>
      <h1>Fiche</h1>
      <img src="http://example.com/x.png">
      <img src="file:///etc/passwd">
      <object data="file:///etc/hostname"></object>
      <p style="background: url('file:///etc/shadow')">texte</p>
    </body></html>"""
    fetcher = portal_pdf.portal_resources()
    data = portal_pdf.write_pdf(html, fetcher=fetcher)

    assert data.startswith(b"%PDF-")
    assert "FICHE" in pdf_text(data).upper()
    assert "root:" not in pdf_text(data)
    assert {
        "http://example.com/evil.css",
        "http://example.com/x.png",
        "file:///etc/passwd",
    } <= set(fetcher.refused)
    assert portal_pdf.static_url("css/print.css") not in fetcher.refused
    assert no_network == []


# --- Failures and retries ----------------------------------------------------------------------


def test_a_storage_failure_marks_the_document_failed_and_it_can_be_made_again(
    board, capture, monkeypatch
):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    fiches_failed(board)
    monkeypatch.setattr(portal_pdf.default_storage, "save", full_disk)
    failed = make_fiche(board, board.v2, capture)
    assert failed.status == RcpDocument.Status.FAILED
    assert "No space left on device" in failed.error
    assert not failed.file

    # The block shows the last failed try of each version (v1's and v2's), and its button.
    html = client_for(board.coordinator.user).get(_case_urls(board)["outputs"]).content.decode()
    assert html.count("state-postponed") == 2
    assert 'name="version" value="2"' in html

    monkeypatch.undo()
    remade = make_fiche(board, board.v2, capture)
    assert remade.pk != failed.pk
    assert remade.status == RcpDocument.Status.READY
    # v2's failed tries are superseded and no longer listed; v1 still waits for its own.
    html = client_for(board.coordinator.user).get(_case_urls(board)["outputs"]).content.decode()
    assert html.count("state-postponed") == 1
    assert 'name="version" value="2"' not in html
    assert 'name="version" value="1"' in html


def test_transient_errors_are_retried_a_bounded_number_of_times(board, capture, monkeypatch):
    fiches_failed(board)
    with capture(execute=False):
        document = pdf.request_case_pdf(case=board.case, decision=board.v2, by=board.chair)

    def locked(*args, **kwargs):
        raise OSError("storage unavailable")

    retried = []

    def retry(*, exc, countdown):
        retried.append(countdown)
        return Retry(exc=exc, when=countdown)

    monkeypatch.setattr(portal_pdf.default_storage, "save", locked)
    monkeypatch.setattr(render_document, "retry", retry)
    # As a worker runs it: the first failures are retried with a growing delay...
    for attempt in range(render_document.max_retries):
        render_document.push_request(retries=attempt, is_eager=False)
        try:
            with pytest.raises(Retry):
                render_document.run("rcp.RcpDocument", document.pk)
        finally:
            render_document.pop_request()
        document.refresh_from_db()
        assert document.status == RcpDocument.Status.RETRYING
    assert retried == [15, 30, 60, 120, 240]
    # ...and the last one gives up: the page then offers to make it again.
    render_document.push_request(retries=render_document.max_retries, is_eager=False)
    try:
        render_document.run("rcp.RcpDocument", document.pk)
    finally:
        render_document.pop_request()
    document.refresh_from_db()
    assert document.status == RcpDocument.Status.FAILED
    assert document.attempts == render_document.max_retries + 1
    assert len(retried) == render_document.max_retries


# --- Views -------------------------------------------------------------------------------------


def _case_urls(board, document=None):
    urls = {
        "request": reverse("rcp-case-pdf-request", kwargs={"case_id": board.case.pk}),
        "outputs": reverse("rcp-case-outputs", kwargs={"case_id": board.case.pk}),
    }
    if document is not None:
        urls["download"] = reverse(
            "rcp-case-pdf", kwargs={"case_id": board.case.pk, "document_id": document.pk}
        )
    return urls


def _minutes_urls(board, document=None):
    urls = {
        "request": reverse("rcp-minutes-pdf-request", kwargs={"session_id": board.session.pk}),
        "outputs": reverse("rcp-session-outputs", kwargs={"session_id": board.session.pk}),
    }
    if document is not None:
        urls["download"] = reverse(
            "rcp-minutes-pdf",
            kwargs={"session_id": board.session.pk, "document_id": document.pk},
        )
    return urls


def test_the_coordinator_asks_for_the_fiche_and_sees_it_ready(board, capture):
    fiches_failed(board)
    client = client_for(board.coordinator.user)
    with capture(execute=True):
        response = client.post(
            _case_urls(board)["request"], {"version": "2"}, HTTP_HX_REQUEST="true"
        )
    # The block comes back at once, polling while the worker makes the PDF...
    assert response.status_code == 200
    assert 'hx-trigger="every 2s"' in response.content.decode()
    document = fiche(board.v2)
    assert document.status == RcpDocument.Status.READY
    # ...and the next poll shows it ready, with its link, and stops polling.
    response = client.get(_case_urls(board)["outputs"], HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert "hx-trigger" not in html
    assert _case_urls(board, document)["download"] in html


def test_the_block_polls_while_the_pdf_is_being_made(board, capture):
    fiches_failed(board)
    with capture(execute=False):
        document = pdf.request_case_pdf(case=board.case, decision=board.v2, by=board.chair)
    response = client_for(board.oncologist.user).get(_case_urls(board)["outputs"])
    html = response.content.decode()
    assert response.status_code == 200
    assert 'hx-trigger="every 2s"' in html
    assert _case_urls(board)["outputs"] in html
    assert "no-store" in response["Cache-Control"]
    assert _case_urls(board, document)["download"] not in html


def test_the_polled_block_reads_a_constant_number_of_queries(board, capture):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = client_for(board.coordinator.user)
    url = _minutes_urls(board)["outputs"]

    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured)

    with capture(execute=True):
        pdf.request_minutes_pdf(session=board.session, by=board.coordination)
    once = queries()
    for _ in range(3):
        with capture(execute=True):
            pdf.request_minutes_pdf(session=board.session, by=board.coordination)
    assert queries() == once


def test_the_submitting_doctor_may_ask_for_the_fiche_a_plain_member_may_not(board, capture):
    fiches_failed(board)
    live = RcpDocument.objects.exclude(status=RcpDocument.Status.FAILED)
    with capture(execute=True):
        refused = client_for(board.surgeon.user).post(
            _case_urls(board)["request"], {"version": "2"}, HTTP_HX_REQUEST="true"
        )
    assert refused.status_code == 200
    assert "message-error" in refused.content.decode()  # the refusal, said in the block
    assert not live.exists()

    with capture(execute=True):
        response = client_for(board.gp.user).post(_case_urls(board)["request"], {})
    assert response.status_code == 302
    assert live.get().decision == board.v2  # the last version by default


def test_downloading_the_fiche_is_one_export_event_with_the_patient(board, capture):
    document = fiche(board.v2)
    client = client_for(board.gp.user)
    last = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first()

    response = client.get(_case_urls(board, document)["download"])

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response.content == stored(document)
    # Opened in the browser, where the expertise report is downloaded (attachment).
    assert response["Content-Disposition"] == f'inline; filename="fiche-rcp-{board.case.pk}-v2.pdf"'
    assert "no-store" in response["Cache-Control"]
    (event,) = AuditEvent.objects.filter(pk__gt=last)
    assert event.event_id == AuditEventId.EXPORT == "110106"
    assert event.action == "R"
    assert event.patient == board.patient
    assert event.actor == board.gp.user
    assert event.object_type == "rcp.rcpdocument"
    assert event.detail["sha256"] == document.sha256


def test_downloading_the_minutes_is_one_export_event_on_the_session(board, capture):
    with capture(execute=True):
        document = pdf.request_minutes_pdf(session=board.session, by=board.coordination)
    client = client_for(board.radiotherapist.user)  # signing in is an event of its own
    last = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first()

    response = client.get(_minutes_urls(board, document)["download"])

    assert response.status_code == 200
    assert response.content[:5] == b"%PDF-"
    (event,) = AuditEvent.objects.filter(pk__gt=last)
    assert event.event_id == AuditEventId.EXPORT
    assert (event.object_type, event.object_id) == ("rcp.session", str(board.session.pk))
    assert event.patient is None


def test_only_coordinators_ask_for_the_minutes(board, capture):
    member = client_for(board.surgeon.user)
    with capture(execute=True):
        response = member.post(_minutes_urls(board)["request"], {}, HTTP_HX_REQUEST="true")
    minutes = RcpDocument.objects.filter(kind=RcpDocument.Kind.MINUTES)
    assert "message-error" in response.content.decode()
    assert not minutes.exists()
    with capture(execute=True):
        response = client_for(board.coordinator.user).post(
            _minutes_urls(board)["request"], {"next": "https://evil.example/"}
        )
    # Not sent elsewhere: back to the block itself.
    assert response.status_code == 302
    assert response["Location"] == _minutes_urls(board)["outputs"]
    assert minutes.get().status == RcpDocument.Status.READY


@pytest.mark.parametrize("who", ["stranger", "outsider"])
def test_outsiders_and_other_boards_get_404_and_are_audited(board, capture, who):
    document = fiche(board.v2)
    with capture(execute=True):
        minutes = pdf.request_minutes_pdf(session=board.session, by=board.coordination)
    user = getattr(board, who).user
    client = client_for(user)
    documents = RcpDocument.objects.count()
    for method, url in [
        ("get", _case_urls(board, document)["download"]),
        ("get", _case_urls(board)["outputs"]),
        ("post", _case_urls(board)["request"]),
        ("get", _minutes_urls(board, minutes)["download"]),
        ("get", _minutes_urls(board)["outputs"]),
        ("post", _minutes_urls(board)["request"]),
    ]:
        refusals = AuditEvent.objects.filter(
            event_id=AuditEventId.SECURITY_ALERT, outcome=AuditOutcome.MINOR_FAILURE, actor=user
        ).count()
        response = getattr(client, method)(url)
        assert response.status_code == 404, f"{method} {url} as {who}"
        assert (
            AuditEvent.objects.filter(
                event_id=AuditEventId.SECURITY_ALERT,
                outcome=AuditOutcome.MINOR_FAILURE,
                actor=user,
            ).count()
            == refusals + 1
        )
    assert RcpDocument.objects.count() == documents
    assert not AuditEvent.objects.filter(event_id=AuditEventId.EXPORT, actor=user).exists()


def test_the_submitting_doctor_does_not_see_the_minutes_of_the_board(board, capture):
    with capture(execute=True):
        minutes = pdf.request_minutes_pdf(session=board.session, by=board.coordination)
    response = client_for(board.gp.user).get(_minutes_urls(board, minutes)["download"])
    assert response.status_code == 404


def test_a_document_of_another_case_is_not_found_through_this_one(board, capture):
    document = fiche(board.v2)
    other = _discussed_case(board, board.other_patient, proposal="Surveillance.", treatments=[])
    url = reverse("rcp-case-pdf", kwargs={"case_id": other.pk, "document_id": document.pk})
    assert client_for(board.coordinator.user).get(url).status_code == 404


def test_an_altered_file_is_never_served(board):
    document = fiche(board.v2)
    path = default_storage.path(document.file.name)
    with open(path, "ab") as stream:
        stream.write(b"% tampered")

    response = client_for(board.gp.user).get(_case_urls(board, document)["download"])

    assert response.status_code == 302
    document.refresh_from_db()
    assert document.status == RcpDocument.Status.FAILED
    assert not AuditEvent.objects.filter(event_id=AuditEventId.EXPORT).exists()
    alert = AuditEvent.objects.get(
        event_id=AuditEventId.SECURITY_ALERT, outcome=AuditOutcome.SERIOUS_FAILURE
    )
    assert alert.patient == board.patient

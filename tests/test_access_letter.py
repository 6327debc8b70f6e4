"""The access report as a letter: Jeanne Dupont asks the CHRU de Tours who looked at her record
(RGPD art. 15); the data protection officer prints a French PDF on the Tours letterhead, with
her identity, the period, and every access of the period in words (who, role, establishment,
why, what), thirty to a page, numbered, without the trail's internal ids, hashes or addresses.
Her oncologist, though in her care team, may not print it.
"""

import datetime as dt
import hashlib
import html
import io
import re
import unicodedata
import zoneinfo

import pytest
import time_machine
from django.urls import reverse
from pypdf import PdfReader

from portal import audit
from portal.audit import Actor
from portal.models import (
    AuditAction,
    AuditEvent,
    AuditEventId,
    AuditOutcome,
    AuditPurpose,
    Patient,
)
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

PARIS = zoneinfo.ZoneInfo("Europe/Paris")
# Some months ago, at 09:30 in Paris: within the letter's default twelve months.
SOME_MONTHS_AGO = dt.datetime.combine(
    dt.datetime.now(tz=PARIS).date() - dt.timedelta(days=200), dt.time(9, 30), tzinfo=PARIS
)
SINCE = (SOME_MONTHS_AGO - dt.timedelta(days=30)).date().isoformat()
THEN = f"{SOME_MONTHS_AGO:%d/%m/%Y %H:%M}"


def today() -> dt.date:
    return dt.datetime.now(tz=PARIS).date()


def pdf_text(data: bytes) -> tuple[int, str]:
    """The number of pages and the text, one space between words."""
    reader = PdfReader(io.BytesIO(data))
    text = " ".join(page.extract_text() or "" for page in reader.pages)
    return len(reader.pages), re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text))


def letter_url(patient: Patient, **query) -> str:
    params = "&".join(f"{key}={value}" for key, value in query.items())
    return f"{reverse('patient-access-letter', args=[patient.pk])}?{params}"


def _reads(world, count: int, *, by=None, purpose=AuditPurpose.CARE):
    for _ in range(count):
        audit.record(
            actor=Actor(user=by or world.oncologist.user, ip="192.0.2.7", session_hash="ab" * 32),
            event=AuditEventId.PATIENT_RECORD,
            action=AuditAction.READ,
            obj=world.patient,
            purpose=purpose,
        )


@pytest.fixture
def history(world):
    """Some months ago the surgeon opened her images for an RCP; the outsider of Bourges was
    refused; then her oncologist read her record 40 times."""
    with time_machine.travel(SOME_MONTHS_AGO, tick=False):
        audit.record(
            actor=Actor(user=world.surgeon.user),
            event=AuditEventId.INSTANCES_ACCESSED,
            action=AuditAction.READ,
            patient=world.patient,
            object_type="imaging.study",
            object_id="1.2.826.0.1.3680043.8.498.1",
            purpose=AuditPurpose.RCP,
        )
        audit.record(
            actor=Actor(user=world.outsider.user),
            event=AuditEventId.SECURITY_ALERT,
            action=AuditAction.EXECUTE,
            outcome=AuditOutcome.MINOR_FAILURE,
            patient=world.patient,
            object_type="portal.patient",
            object_id=str(world.patient.pk),
            purpose=AuditPurpose.CARE,
        )
    _reads(world, 40)
    return world


def test_the_dpo_prints_the_letter_on_the_establishments_letterhead(history):
    world = history
    dpo = client_for(world.auditor_user)
    before = AuditEvent.objects.count()
    # The accesses of the period: those of the fixture, and her registration before them.
    assert AuditEvent.objects.filter(patient=world.patient).count() == 42 + 3

    answer = dpo.get(
        letter_url(
            world.patient,
            date_from=SINCE,
            date_to=today().isoformat(),
            establishment=world.tours.pk,
        )
    )

    assert answer.status_code == 200
    assert answer["Content-Type"] == "application/pdf"
    assert "no-store" in answer["Cache-Control"]
    assert answer["Content-Disposition"].startswith('attachment; filename="releve-des-acces-')
    assert "Dupont" not in answer["Content-Disposition"]
    pages, text = pdf_text(answer.content)
    # The letter, then 45 accesses: 30 on one page, 15 on the next.
    assert pages == 3
    assert "Page 1 / 3" in text and "Page 3 / 3" in text
    assert "Traitement automatique du portail" in text and "Création du dossier" in text
    assert "CHRU de Tours" in text and "FINESS 370000481" in text
    assert "Relevé des accès à votre dossier" in text
    assert "Madame DUPONT Jeanne" in text and "née le 12/03/1956" in text
    assert f"du {SOME_MONTHS_AGO - dt.timedelta(days=30):%d/%m/%Y} au {today():%d/%m/%Y}" in text
    assert "45 accès, par 3 personnes" in text
    assert THEN in text
    assert "Antoine Rousseau" in text and "Réunion de concertation (RCP)" in text
    assert "Consultation d'images médicales" in text
    assert "Paul Lefèvre" in text and "CH de Bourges" in text
    assert "Tentative d'accès refusée" in text
    assert text.count("Claire Martin") == 40 and "Consultation du dossier" in text
    assert "Oncologie médicale" in text
    # Nothing of the trail's inner workings.
    assert "192.0.2.7" not in text and "abab" not in text
    assert "1.2.826" not in text and "110110" not in text and "portal.patient" not in text

    # Audited: one export against Jeanne, naming the period and the very bytes sent.
    assert AuditEvent.objects.count() == before + 1
    export = AuditEvent.objects.get(
        event_id=AuditEventId.EXPORT, detail__export="access letter", patient=world.patient
    )
    assert export.actor == world.auditor_user
    assert export.purpose == AuditPurpose.AUDIT
    assert export.detail["sha256"] == hashlib.sha256(answer.content).hexdigest()
    assert (export.detail["from"], export.detail["establishment"]) == (SINCE, "370000481")


def test_the_period_leaves_out_what_is_outside_it(history):
    world = history
    dpo = client_for(world.auditor_user)
    answer = dpo.get(
        letter_url(
            world.patient,
            date_from=(SOME_MONTHS_AGO - dt.timedelta(days=1)).date().isoformat(),
            date_to=(SOME_MONTHS_AGO + dt.timedelta(days=1)).date().isoformat(),
        )
    )
    assert answer.status_code == 200
    pages, text = pdf_text(answer.content)
    assert pages == 2
    assert "2 accès, par 2 personnes" in text
    assert "Claire Martin" not in text
    # No establishment chosen: the regional portal's letterhead.
    assert "Portail régional MIRC" in text and "FINESS 370000481" not in text


def test_a_period_with_no_access_says_so(world):
    answer = client_for(world.auditor_user).get(
        letter_url(world.patient, date_from="2020-01-01", date_to="2020-12-31")
    )
    assert answer.status_code == 200
    pages, text = pdf_text(answer.content)
    assert pages == 1
    assert "aucun accès n'a été enregistré pendant cette période" in text


@pytest.mark.parametrize(
    "query",
    [
        {"date_from": "2026-05-01", "date_to": "2026-04-01"},
        {"date_from": "hier", "date_to": "2026-04-01"},
        {"date_to": "2026-04-01"},
    ],
)
def test_a_bad_period_makes_no_letter_and_says_why(world, query):
    dpo = client_for(world.auditor_user)
    before = AuditEvent.objects.count()

    answer = dpo.get(letter_url(world.patient, **query), follow=True)

    assert answer.redirect_chain[0][0].endswith(f"?patient={world.patient.pk}")
    assert "La lettre n'a pas été éditée" in html.unescape(answer.content.decode())
    assert not AuditEvent.objects.filter(event_id=AuditEventId.EXPORT).exists()
    # Only the audit page's own read was added.
    assert AuditEvent.objects.count() == before + 1


def test_another_establishment_cannot_sign_her_letter(world):
    """Bourges holds no IPP of Jeanne: its letterhead is not offered, nor accepted."""
    answer = client_for(world.auditor_user).get(
        letter_url(
            world.patient,
            date_from=SINCE,
            date_to="2026-01-31",
            establishment=world.bourges.pk,
        ),
        follow=True,
    )
    assert "La lettre n'a pas été éditée" in html.unescape(answer.content.decode())
    assert not AuditEvent.objects.filter(event_id=AuditEventId.EXPORT).exists()


def test_her_oncologist_may_not_print_it(world):
    answer = client_for(world.oncologist.user).get(
        letter_url(world.patient, date_from="2026-01-01", date_to="2026-01-31")
    )
    assert answer.status_code == 404
    assert not AuditEvent.objects.filter(event_id=AuditEventId.EXPORT).exists()
    assert AuditEvent.objects.filter(
        event_id=AuditEventId.SECURITY_ALERT, actor=world.oncologist.user, patient=world.patient
    ).exists()


def test_the_audit_page_offers_the_letter_for_the_chosen_patient(world):
    page = client_for(world.auditor_user).get(
        f"{reverse('audit-event-list')}?patient={world.patient.pk}"
    )
    content = page.content.decode()
    assert reverse("patient-access-letter", args=[world.patient.pk]) in content
    assert "Éditer la lettre (PDF)" in content
    # Her establishments only, Tours chosen.
    assert f'<option value="{world.tours.pk}" selected>CHRU de Tours</option>' in content
    assert f'value="{world.bourges.pk}"' not in content


def test_a_few_hundred_accesses_print_in_the_request_in_a_fixed_number_of_queries(
    world, django_assert_max_num_queries
):
    _reads(world, 300)
    dpo = client_for(world.auditor_user)
    url = letter_url(world.patient, date_from=SINCE, date_to=today().isoformat())
    dpo.get(url)  # fonts and styles loaded once

    # How long it takes is a benchmark's to say (a busy machine stretches any clock); what a
    # test can hold is that the rows cost no query each.
    with django_assert_max_num_queries(20):
        answer = dpo.get(url)

    assert answer.status_code == 200
    pages, _text = pdf_text(answer.content)
    accesses = AuditEvent.objects.filter(patient=world.patient).count() - 1  # this export
    assert accesses > 300
    assert pages == 1 + -(-accesses // 30)  # the letter, then the accesses by 30


def test_a_period_too_long_for_one_letter_is_refused_with_a_word(world, monkeypatch):
    monkeypatch.setattr("portal.patient_letters.MAX_ROWS", 2)
    answer = client_for(world.auditor_user).get(
        letter_url(world.patient, date_from=SINCE, date_to=today().isoformat()),
        follow=True,
    )
    assert "choisissez une période plus courte" in html.unescape(answer.content.decode())
    assert not AuditEvent.objects.filter(event_id=AuditEventId.EXPORT).exists()


def test_without_a_query_the_usual_letter_is_made(history):
    """The last twelve months, on the letterhead of her establishment (Tours)."""
    world = history
    answer = client_for(world.auditor_user).get(
        reverse("patient-access-letter", args=[world.patient.pk])
    )
    assert answer.status_code == 200
    _pages, text = pdf_text(answer.content)
    assert f"au {today():%d/%m/%Y}" in text
    assert "FINESS 370000481" in text
    assert THEN in text  # within the last twelve months

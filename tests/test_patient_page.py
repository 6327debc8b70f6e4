"""The patient page: age, birthplace by its commune's name, and the patient's RCP cases and
tele-expertise requests that the reader may open (and only those), at a constant cost."""

import datetime as dt
import html
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from expertise.models import Request
from portal.audit import Actor
from portal.communes import birth_place_label, commune_name
from portal.models import Patient
from rcp import services
from tests.conftest import client_for as _client_for
from tests.expertise_world import expertise_world, sent_request
from tests.rcp_world import rcp_world, submitted_case
from tests.test_i18n import catalogues, compiled_locale  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db


def client_for(user, language="fr"):
    client = _client_for(user)
    client.cookies["django_language"] = language
    return client


def _page(user, patient, language="fr") -> str:
    response = client_for(user, language).get(reverse("patient-detail", args=[patient.pk]))
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def _text(page: str, testid: str) -> str:
    match = re.search(rf'data-testid="{testid}"[^>]*>(.*?)</(?:dd|section)>', page, re.S)
    assert match, testid
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", match.group(1))).strip()


def _expected_age(birth: dt.date) -> int:
    today = timezone.localdate()
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


# --- Age and birthplace ----------------------------------------------------------------------


@pytest.mark.usefixtures("catalogues")
def test_the_age_shows_next_to_the_birth_date_in_french_and_english(world):
    age = _expected_age(world.patient.birth_date)
    french = _text(_page(world.oncologist.user, world.patient), "patient-birth-date")
    assert french == f"12/03/1956 ({age} ans)"
    english = _text(_page(world.oncologist.user, world.patient, "en"), "patient-birth-date")
    assert english == f"12/03/1956 ({age} years old)"


def test_the_age_counts_whole_years_only():
    from portal.selectors import age_on

    assert age_on(dt.date(1968, 5, 20), dt.date(2026, 5, 19)) == 57
    assert age_on(dt.date(1968, 5, 20), dt.date(2026, 5, 20)) == 58
    assert age_on(dt.date(2000, 2, 29), dt.date(2026, 2, 28)) == 25
    assert age_on(dt.date(2000, 2, 29), dt.date(2026, 3, 1)) == 26


@pytest.mark.usefixtures("catalogues")
def test_the_birthplace_is_the_communes_name(world):
    page = _page(world.oncologist.user, world.patient)
    assert _text(page, "patient-birth-place") == "Tours (INSEE 37261)"
    # The banner of every patient page too.
    assert '<span data-testid="banner-birth-place">Tours</span>' in page


@pytest.mark.usefixtures("catalogues")
def test_an_unknown_code_is_said_so_and_a_birth_abroad_is_named(world):
    Patient.objects.filter(pk=world.patient.pk).update(birth_place_code="37999")
    page = _page(world.oncologist.user, world.patient)
    assert _text(page, "patient-birth-place") == "code INSEE 37999 (commune inconnue)"
    Patient.objects.filter(pk=world.patient.pk).update(birth_place_code="99139")
    english = _page(world.oncologist.user, world.patient, "en")
    assert _text(english, "patient-birth-place") == "abroad (INSEE country code 99139)"


def test_every_commune_of_centre_val_de_loire_and_of_the_demo_is_named():
    # Prefectures of the six departments of Centre-Val de Loire, Paris, a Corsican code, and
    # a commune merged into a new one (its delegated commune keeps its code).
    assert commune_name("18033") == "Bourges"
    assert commune_name("28085") == "Chartres"
    assert commune_name("36044") == "Châteauroux"
    assert commune_name("37261") == "Tours"
    assert commune_name("41018") == "Blois"
    assert commune_name("45234") == "Orléans"
    assert commune_name("75056") == "Paris"
    assert commune_name("2A004") == "Ajaccio"
    assert birth_place_label(" 37261 ") == "Tours"
    assert commune_name("37999") is None


# --- The patient's RCP cases and tele-expertise requests --------------------------------------


def test_the_patients_rcp_cases_show_with_their_state_and_only_those_the_reader_may_open(world):
    case = submitted_case(world)
    # A case of another committee, opened by the GP: not the oncologist's to see.
    hidden = services.case_create(
        patient=world.patient, committee=world.digestive, by=Actor(user=world.gp.user)
    )
    page = _page(world.oncologist.user, world.patient, "en")
    panel = _text(page, "patient-rcp-cases")
    day = timezone.localtime(case.submitted_at).strftime("%d/%m/%Y")
    assert f"Submitted on {day} by Dr Claire Martin" in panel
    assert world.thoracic.name in panel
    assert reverse("rcp-case", args=[case.pk]) in page
    assert world.digestive.name not in page
    assert reverse("rcp-case", args=[hidden.pk]) not in page


def test_a_case_on_the_agenda_shows_its_session_date(world):
    case = submitted_case(world)
    services.case_put_on_agenda(
        case=case, session=world.session, by=Actor(user=world.coordinator.user)
    )
    panel = _text(_page(world.oncologist.user, world.patient, "en"), "patient-rcp-cases")
    when = timezone.localtime(world.session.starts_at).strftime("%d/%m/%Y %H:%M")
    assert f"On the agenda of the session of {when}" in panel
    assert "Session of" not in panel  # the date is said once


def test_the_patients_requests_show_to_their_requester_and_not_to_others(world):
    expertise_world(world)
    request = sent_request(world)
    gp_page = _page(world.gp.user, world.patient, "en")
    panel = _text(gp_page, "patient-expertise-requests")
    assert world.teleradiology.name in panel
    assert "Sent" in panel
    due = timezone.localtime(request.due_at).strftime("%d/%m/%Y %H:%M")
    assert f"answer expected by {due}" in panel
    assert reverse("expertise-request", args=[request.pk]) in gp_page
    # The oncologist of the care team did not ask it and is no expert of the pool.
    oncologist_page = _page(world.oncologist.user, world.patient, "en")
    assert reverse("expertise-request", args=[request.pk]) not in oncologist_page
    assert "No tele-expertise request that you may open." in oncologist_page


def _count_queries(user, patient) -> int:
    client = client_for(user, "en")
    url = reverse("patient-detail", args=[patient.pk])
    client.get(url)  # warm the session and caches
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def test_the_page_costs_the_same_queries_with_one_or_many_cases_and_requests(world):
    rcp_world(world)
    expertise_world(world)
    by = Actor(user=world.oncologist.user)
    services.case_create(patient=world.patient, committee=world.thoracic, by=by)
    sent_request(world)
    few = (
        _count_queries(world.oncologist.user, world.patient),
        _count_queries(world.gp.user, world.patient),
    )
    for _ in range(5):
        services.case_create(patient=world.patient, committee=world.thoracic, by=by)
        sent_request(world)
    many = (
        _count_queries(world.oncologist.user, world.patient),
        _count_queries(world.gp.user, world.patient),
    )
    assert Request.objects.filter(patient=world.patient).count() == 6
    assert many == few

"""The data protection officer looks a patient up in the audit trail by what she knows of
them, and reads the events in words.

Jeanne Dupont (born 12/03/1956, IPP T100001 at Tours) and Jean-Pierre Durand (born
02/07/1949, IPP B100002 at Bourges) are the world's patients; the auditor holds
portal.view_auditevent.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from portal import services
from portal.audit import Actor
from portal.models import AuditEvent, AuditEventId, CareRole
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

ENGLISH = {"HTTP_ACCEPT_LANGUAGE": "en"}


def _search(world, **params):
    return client_for(world.auditor_user).get(reverse("audit-event-list"), params, **ENGLISH)


def _found(response):
    return [patient.pk for patient in response.context["matches"]]


@pytest.mark.parametrize(
    "query",
    ["dupont", "DUP", "Dupônt", "jeanne", "12/03/1956", "1956-03-12", "T100001", "t100001"],
    ids=["name", "prefix", "accents", "first name", "birth date", "ISO date", "IPP", "ipp case"],
)
def test_a_patient_is_found_by_name_birth_date_or_ipp(world, query):
    response = _search(world, q=query)
    assert response.status_code == 200
    assert _found(response) == [world.patient.pk]
    # The only match is chosen: her events, her access report.
    assert response.context["patient"] == world.patient
    assert reverse("patient-access-report", args=[world.patient.pk]) in response.content.decode()


def test_a_patient_is_found_by_ins_and_by_another_establishments_ipp(world):
    assert _found(_search(world, q=world.patient.ins_matricule)) == [world.patient.pk]
    assert _found(_search(world, q="B100002")) == [world.other_patient.pk]


def test_a_prefix_is_a_word_start_and_every_word_must_match(world):
    # "pont" is inside Dupont but starts none of her names.
    assert _found(_search(world, q="pont")) == []
    assert _found(_search(world, q="du")) == sorted(
        [world.patient.pk, world.other_patient.pk],
        key=lambda pk: {world.patient.pk: "DUPONT", world.other_patient.pk: "DURAND"}[pk],
    )
    assert _found(_search(world, q="du 02/07/1949")) == [world.other_patient.pk]


def test_a_search_shows_only_the_events_of_the_patients_found(world):
    client_for(world.oncologist.user).get(reverse("patient-detail", args=[world.patient.pk]))
    client_for(world.outsider.user).get(reverse("patient-detail", args=[world.other_patient.pk]))

    several = _search(world, q="du")
    assert {e.patient_id for e in several.context["page"].object_list} <= {
        world.patient.pk,
        world.other_patient.pk,
    }
    assert several.context["patient"] is None
    one = _search(world, q="du", patient=world.other_patient.pk)
    assert {e.patient_id for e in one.context["page"].object_list} == {world.other_patient.pk}
    nobody = _search(world, q="zzz")
    assert nobody.context["page"].paginator.count == 0
    assert "No patient matches this search." in nobody.content.decode()


def test_the_search_itself_is_audited_with_the_patients_it_showed(world):
    _search(world, q="du")
    event = AuditEvent.objects.filter(
        actor=world.auditor_user, event_id=AuditEventId.AUDIT_LOG_USED
    ).latest("id")
    assert sorted(event.detail["patients_found"]) == sorted(
        [world.patient.pk, world.other_patient.pk]
    )
    assert "q=du" in event.query


def test_objects_are_shown_by_their_label(world):
    from tests.rcp_world import case_on_agenda

    case = case_on_agenda(world)
    client_for(world.outsider.user).get(reverse("rcp-case", args=[case.pk]))  # refused, audited
    client_for(world.oncologist.user).get(reverse("patient-detail", args=[world.patient.pk]))

    page = _search(world, q="dupont").content.decode()
    assert f"RCP case no. {case.pk} — DUPONT J." in page
    assert f"rcp.case {case.pk}" not in page
    assert ">DUPONT J.<" in page.replace("<br>", "<")  # the patient record read


def test_care_team_changes_are_labelled_as_such(world):
    relationship = services.care_relationship_add(
        patient=world.patient,
        professional=world.surgeon,
        role=CareRole.CARE_TEAM,
        by=Actor(user=world.oncologist.user),
    )
    services.care_relationship_end(
        relationship=relationship, by=Actor(user=world.oncologist.user), reason="Suivi terminé"
    )
    response = _search(world, q="dupont", event_id=AuditEventId.SECURITY_ALERT)
    kinds = [event.kind_label for event in response.context["page"].object_list]
    assert "Care team: added" in kinds
    assert "Care team: ended" in kinds
    page = response.content.decode()
    assert "<strong>Care team: ended</strong>" in page
    # The ATNA code stays, for the repositories that read it.
    assert "110113" in page
    assert "Care team of DUPONT J." in page


def test_the_page_takes_the_same_queries_however_many_events_and_types(world):
    from tests.rcp_world import case_on_agenda

    client = client_for(world.auditor_user)
    url = reverse("audit-event-list")

    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url, {"q": "dupont"}).status_code == 200
        return len(captured)

    case_on_agenda(world)
    before = queries()
    for _ in range(5):
        case_on_agenda(world)
        client_for(world.oncologist.user).get(reverse("patient-detail", args=[world.patient.pk]))
    assert queries() == before


def test_the_home_pages_reads_are_named_not_shown_as_raw_types(world):
    """The GP's home (his patients' panels) and his "mark the news read" are audited events
    without an object id: the auditor reads them as the home page, not "portal.home"."""
    gp = client_for(world.gp.user)
    assert gp.get(reverse("home")).status_code == 200
    assert gp.post(reverse("home-news-read")).status_code == 302
    assert AuditEvent.objects.filter(actor=world.gp.user, object_type="portal.home").exists()
    assert AuditEvent.objects.filter(actor=world.gp.user, object_type="portal.home_news").exists()

    response = _search(world, actor=world.gp.user.email)
    labels = {event.object_label for event in response.context["page"].object_list}
    assert {"Home page", "Home page: news of my patients"} <= labels
    page = response.content.decode()
    assert "portal.home" not in page

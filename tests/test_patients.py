"""Finding one's patients and running their care team, as the clinicians do it.

The oncologist (Dr Claire Martin) is Jeanne Dupont's referring doctor and Dr Pierre Lemoine
her GP; the Bourges radiologist (Dr Paul Lefèvre, the outsider) follows only Jean-Pierre
Durand; the thoracic surgeon (Pr Antoine Rousseau) follows nobody until he is asked in.
"""

import datetime as dt

import pytest
from django.contrib.messages import get_messages
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from portal.audit import Actor
from portal.models import (
    AuditAction,
    AuditEvent,
    AuditEventId,
    CareRelationship,
    CareRole,
)
from portal.selectors import patients_visible_to
from portal.services import care_relationship_add, care_relationship_end
from tests.conftest import client_for, make_patient

LIST_URL = reverse("patient-list")
# fmt: off
SURNAMES = [
    "Bernard", "Petit", "Robert", "Richard", "Moreau", "Laurent", "Simon", "Michel", "Garcia",
    "David", "Bertrand", "Roux", "Vincent", "Fournier", "Morel", "Girard", "André", "Mercier",
    "Blanc", "Guérin", "Boyer", "Garnier", "Chevalier", "François", "Legrand", "Gauthier",
    "Perrin", "Robin", "Clément", "Morin",
]
# fmt: on
SYSTEM = Actor.system("tests")


def detail_url(patient) -> str:
    return reverse("patient-detail", args=[patient.pk])


def html(response) -> str:
    return response.content.decode()


def care_team_section(response) -> str:
    """The care-team list of the record page (the add form below it names other people)."""
    page = html(response)
    start = page.index('<ul class="people">')
    return page[start : page.index("</ul>", start)]


def listed(response) -> list:
    return list(response.context["page"].object_list)


def give_care_team_access(patient, professional):
    return care_relationship_add(
        patient=patient, professional=professional, role=CareRole.CARE_TEAM, by=SYSTEM
    )


@pytest.fixture
def helene(world):
    """Hélène Lefèvre, born 25/10/1962 in Bourges, also followed by the oncologist."""
    patient = make_patient(
        birth_name="Lefèvre",
        first_names="Hélène Agnès",
        birth_date=dt.date(1962, 10, 25),
        place="18033",
        order=4,
    )
    care_relationship_add(
        patient=patient, professional=world.oncologist, role=CareRole.REFERRING, by=SYSTEM
    )
    return patient


# --- The list and its search -----------------------------------------------------------------


def test_each_clinician_sees_only_their_own_patients(world):
    oncologist_page = html(client_for(world.oncologist.user).get(LIST_URL))
    outsider_page = html(client_for(world.outsider.user).get(LIST_URL))

    assert "DUPONT Jeanne" in oncologist_page
    assert "DURAND" not in oncologist_page
    assert "DURAND Jean-Pierre" in outsider_page
    assert "DUPONT" not in outsider_page
    assert "Jeanne" not in outsider_page
    assert world.patient.ins_matricule not in outsider_page


@pytest.mark.parametrize("who", ["coordinator", "admin_user", "auditor_user"])
def test_staff_without_a_care_relationship_see_no_patient_in_the_list(world, who):
    user = getattr(world, who)
    user = getattr(user, "user", user)

    response = client_for(user).get(LIST_URL)

    assert response.status_code == 200
    assert listed(response) == []
    assert "DUPONT" not in html(response)
    assert "DURAND" not in html(response)


@pytest.mark.parametrize("query", ["lefevre", "LEFEVRE", "Lefèvre", "helene", "lefevre agnes"])
def test_the_oncologist_finds_a_patient_by_name_without_accents_or_case(world, helene, query):
    response = client_for(world.oncologist.user).get(LIST_URL, {"q": query})

    assert listed(response) == [helene]
    assert "LEFÈVRE Hélène" in html(response)
    assert "DUPONT" not in html(response)


def test_the_oncologist_finds_a_patient_by_birth_date(world, helene):
    response = client_for(world.oncologist.user).get(LIST_URL, {"q": "12/03/1956"})

    assert listed(response) == [world.patient]
    assert "LEFÈVRE" not in html(response)


def test_the_oncologist_finds_a_patient_by_the_start_of_her_ins(world, helene):
    prefix = helene.ins_matricule[:7]
    assert not world.patient.ins_matricule.startswith(prefix)

    response = client_for(world.oncologist.user).get(LIST_URL, {"q": prefix})

    assert listed(response) == [helene]


@pytest.mark.parametrize("query", ["durand", "02/07/1949", "1490718033"])
def test_searching_never_reaches_someone_elses_patient(world, query):
    # Jean-Pierre Durand exists and matches, but he is the Bourges radiologist's patient.
    response = client_for(world.oncologist.user).get(LIST_URL, {"q": query})

    assert listed(response) == []
    assert "DURAND" not in html(response)


@pytest.mark.parametrize("query", ["lefevre", "12/03/1956", "2621018", ""])
def test_each_search_leaves_one_query_event_with_its_text(world, helene, query):
    client = client_for(world.oncologist.user)
    mark = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first()

    client.get(LIST_URL, {"q": query})

    events = list(AuditEvent.objects.filter(pk__gt=mark))
    assert [(e.event_id, e.action) for e in events] == [(AuditEventId.QUERY, AuditAction.EXECUTE)]
    assert events[0].query == query
    assert events[0].actor == world.oncologist.user
    assert events[0].patient is None  # a search names no patient


def test_the_list_costs_the_same_queries_for_3_or_30_patients(world):
    client = client_for(world.surgeon.user)
    surnames = SURNAMES

    def follow(names, first_order):
        for offset, surname in enumerate(names):
            patient = make_patient(
                birth_name=surname,
                first_names="Anne",
                birth_date=dt.date(1950 + offset, 1 + offset % 12, 1),
                order=first_order + offset,
                qualified=offset % 2 == 0,
            )
            give_care_team_access(patient, world.surgeon)

    def list_queries():
        with CaptureQueriesContext(connection) as captured:
            response = client.get(LIST_URL)
        assert response.status_code == 200
        return len(captured), response

    follow(surnames[:3], first_order=100)
    client.get(LIST_URL)  # warm the session and the content-type cache
    with_three, response = list_queries()
    assert len(listed(response)) == 3

    follow(surnames[3:], first_order=200)
    with_thirty, response = list_queries()
    assert response.context["page"].paginator.count == 30

    assert with_thirty == with_three


# --- The patient's record --------------------------------------------------------------------


def test_the_record_shows_the_care_team_and_the_qualified_ins(world):
    response = client_for(world.oncologist.user).get(detail_url(world.patient))

    team = {(r.professional, r.role) for r in response.context["care_team"]}
    assert team == {(world.oncologist, CareRole.REFERRING), (world.gp, CareRole.GP)}
    team_html = care_team_section(response)
    assert "Dr Claire Martin" in team_html
    assert "Dr Pierre Lemoine" in team_html
    assert "Rousseau" not in team_html
    assert world.patient.ins_matricule in html(response)


def test_a_retrieved_identity_shows_no_ins_digits(world):
    retrieved = make_patient(
        birth_name="Lefèvre",
        first_names="Hélène Agnès",
        birth_date=dt.date(1962, 10, 25),
        place="18033",
        order=4,
        qualified=False,
    )
    give_care_team_access(retrieved, world.oncologist)
    client = client_for(world.oncologist.user)

    for page in (html(client.get(detail_url(retrieved))), html(client.get(LIST_URL))):
        assert "LEFÈVRE Hélène" in page
        assert retrieved.ins_matricule[:13] not in page


def test_a_former_member_no_longer_appears_in_the_care_team(world):
    relationship = give_care_team_access(world.patient, world.surgeon)
    care_relationship_end(relationship=relationship, by=SYSTEM)

    response = client_for(world.oncologist.user).get(detail_url(world.patient))

    assert world.surgeon not in {r.professional for r in response.context["care_team"]}
    assert "Rousseau" not in care_team_section(response)


# --- Running the care team through the page --------------------------------------------------


def test_the_oncologist_brings_the_surgeon_in_and_later_takes_him_out(world):
    oncologist = client_for(world.oncologist.user)
    surgeon = client_for(world.surgeon.user)
    assert surgeon.get(detail_url(world.patient)).status_code == 404

    added = oncologist.post(
        reverse("care-team-add", args=[world.patient.pk]), {"professional": world.surgeon.pk}
    )

    assert added.status_code == 302
    assert added["Location"] == detail_url(world.patient)
    assert surgeon.get(detail_url(world.patient)).status_code == 200
    relationship = CareRelationship.objects.get(
        patient=world.patient, professional=world.surgeon, ended_at__isnull=True
    )
    assert relationship.role == CareRole.CARE_TEAM
    assert relationship.created_by == world.oncologist.user
    assert "DUPONT Jeanne" in html(surgeon.get(LIST_URL))

    removed = oncologist.post(reverse("care-team-end", args=[world.patient.pk, relationship.pk]))

    assert removed.status_code == 302
    assert surgeon.get(detail_url(world.patient)).status_code == 404
    assert listed(surgeon.get(LIST_URL)) == []
    relationship.refresh_from_db()
    assert relationship.ended_at is not None


@pytest.mark.parametrize("member", ["oncologist", "gp"], ids=["referring-doctor", "gp"])
def test_the_referring_doctor_and_the_gp_cannot_be_removed_from_the_page(world, member):
    professional = getattr(world, member)
    relationship = CareRelationship.objects.get(patient=world.patient, professional=professional)
    alerts = AuditEvent.objects.filter(event_id=AuditEventId.SECURITY_ALERT).count()

    response = client_for(world.oncologist.user).post(
        reverse("care-team-end", args=[world.patient.pk, relationship.pk])
    )

    assert response.status_code == 302
    assert response["Location"] == detail_url(world.patient)
    assert [m.level_tag for m in get_messages(response.wsgi_request)] == ["error"]
    relationship.refresh_from_db()
    assert relationship.ended_at is None
    assert world.patient in patients_visible_to(professional.user)
    assert AuditEvent.objects.filter(event_id=AuditEventId.SECURITY_ALERT).count() == alerts


# --- The care-relationship service -----------------------------------------------------------


def test_a_patient_cannot_have_two_general_practitioners_at_once(world):
    alerts = AuditEvent.objects.filter(event_id=AuditEventId.SECURITY_ALERT).count()

    with pytest.raises(ValidationError):
        care_relationship_add(
            patient=world.patient,
            professional=world.surgeon,
            role=CareRole.GP,
            by=Actor(user=world.oncologist.user),
        )

    gps = CareRelationship.objects.filter(
        patient=world.patient, role=CareRole.GP, ended_at__isnull=True
    )
    assert [r.professional for r in gps] == [world.gp]
    assert world.patient not in patients_visible_to(world.surgeon.user)
    assert AuditEvent.objects.filter(event_id=AuditEventId.SECURITY_ALERT).count() == alerts


def test_a_new_gp_can_take_over_once_the_former_one_has_left(world):
    former = CareRelationship.objects.get(patient=world.patient, role=CareRole.GP)
    care_relationship_end(relationship=former, by=SYSTEM)

    care_relationship_add(
        patient=world.patient, professional=world.surgeon, role=CareRole.GP, by=SYSTEM
    )

    assert world.patient in patients_visible_to(world.surgeon.user)
    assert world.patient not in patients_visible_to(world.gp.user)


def test_a_coordinator_without_rpps_cannot_join_a_care_team(world):
    alerts = AuditEvent.objects.filter(event_id=AuditEventId.SECURITY_ALERT).count()

    with pytest.raises(ValidationError):
        care_relationship_add(
            patient=world.patient,
            professional=world.coordinator,
            role=CareRole.CARE_TEAM,
            by=Actor(user=world.oncologist.user),
        )

    assert not CareRelationship.objects.filter(professional=world.coordinator).exists()
    assert world.patient not in patients_visible_to(world.coordinator.user)
    assert AuditEvent.objects.filter(event_id=AuditEventId.SECURITY_ALERT).count() == alerts

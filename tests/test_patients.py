"""Finding one's patients and running their care team, as the clinicians do it.

The oncologist (Dr Claire Martin) is Jeanne Dupont's referring doctor and Dr Pierre Lemoine
her GP; the Bourges radiologist (Dr Paul Lefèvre, the outsider) follows only Jean-Pierre
Durand; the thoracic surgeon (Pr Antoine Rousseau) follows nobody until he is asked in.
"""

import datetime as dt
from html import unescape

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from portal.audit import Actor
from portal.models import (
    AuditAction,
    AuditEvent,
    AuditEventId,
    AuditOutcome,
    CareRelationship,
    CareRole,
    Notification,
)
from portal.selectors import patients_visible_to
from portal.services import care_relationship_add, care_relationship_end
from tests.conftest import client_for, make_patient, make_professional
from tests.test_i18n import catalogues, compiled_locale  # noqa: F401 - fixtures

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

    removed = oncologist.post(
        reverse("care-team-end", args=[world.patient.pk, relationship.pk]),
        {"reason": "Chirurgie récusée en RCP."},
    )

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


# --- Who may take a professional out of the care team ----------------------------------------
# Jeanne Dupont's team: Dr Martin (oncologist) her referring doctor, Dr Lemoine her GP, and
# here Pr Rousseau (thoracic surgeon) brought into the care team.

REASON = "Prise en charge chirurgicale terminée."


@pytest.fixture
def surgeon_in_team(world):
    return give_care_team_access(world.patient, world.surgeon)


def end_url(relationship) -> str:
    return reverse("care-team-end", args=[relationship.patient_id, relationship.pk])


def relationship_of(world, professional):
    return CareRelationship.objects.get(patient=world.patient, professional=professional)


def still_active(relationship) -> bool:
    relationship.refresh_from_db()
    return relationship.ended_at is None


def security_alerts():
    return AuditEvent.objects.filter(event_id=AuditEventId.SECURITY_ALERT)


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.mark.parametrize("member", ["surgeon", "oncologist"])
def test_the_gp_cannot_remove_a_colleague_from_the_care_team(world, surgeon_in_team, member):
    relationship = relationship_of(world, getattr(world, member))
    page = client_for(world.gp.user).get(detail_url(world.patient))
    confirmation = client_for(world.gp.user).get(end_url(relationship))
    posted = client_for(world.gp.user).post(end_url(relationship), {"reason": REASON})

    assert end_url(relationship) not in html(page)  # no "Remove…" offered
    for response in (confirmation, posted):
        assert response.status_code == 302
        assert response["Location"] == detail_url(world.patient)
        assert [m.level_tag for m in get_messages(response.wsgi_request)] == ["error"]
    assert still_active(relationship)
    assert world.patient in patients_visible_to(getattr(world, member).user)
    # The service refuses too, whoever calls it, and the attempt is in the trail.
    with pytest.raises(PermissionDenied):
        care_relationship_end(
            relationship=relationship, by=Actor(user=world.gp.user), reason=REASON
        )
    assert still_active(relationship)
    refusal = security_alerts().latest("pk")
    assert (refusal.actor, refusal.outcome, refusal.patient) == (
        world.gp.user,
        AuditOutcome.MINOR_FAILURE,
        world.patient,
    )


def test_a_care_team_colleague_cannot_remove_the_gp(world, surgeon_in_team):
    gp_relationship = relationship_of(world, world.gp)

    with pytest.raises(PermissionDenied):
        care_relationship_end(
            relationship=gp_relationship, by=Actor(user=world.surgeon.user), reason=REASON
        )
    response = client_for(world.surgeon.user).post(end_url(gp_relationship), {"reason": REASON})

    assert response.status_code == 302
    assert still_active(gp_relationship)
    assert world.patient in patients_visible_to(world.gp.user)


def test_the_referring_doctor_removes_a_member_with_a_reason(world, surgeon_in_team):
    oncologist = client_for(world.oncologist.user)
    surgeon = client_for(world.surgeon.user)

    confirmation = oncologist.get(end_url(surgeon_in_team))

    assert confirmation.status_code == 200
    assert "no-store" in confirmation["Cache-Control"]
    assert "Pr Antoine Rousseau" in html(confirmation)
    assert 'name="reason"' in html(confirmation)
    assert still_active(surgeon_in_team)  # asking is not removing

    removed = oncologist.post(end_url(surgeon_in_team), {"reason": REASON})

    assert removed.status_code == 302
    assert removed["Location"] == detail_url(world.patient)
    surgeon_in_team.refresh_from_db()
    assert surgeon_in_team.ended_at is not None
    assert surgeon_in_team.ended_by == world.oncologist.user
    assert surgeon_in_team.end_reason == REASON
    event = security_alerts().filter(actor=world.oncologist.user).latest("pk")
    assert event.patient == world.patient
    assert event.detail["reason"] == REASON
    # The surgeon is told, without the patient's name, and has lost the record.
    [notice] = Notification.objects.filter(recipient=world.surgeon.user)
    assert "Dr Claire Martin" in notice.message
    assert "DUPONT" not in notice.message.upper()
    assert surgeon.get(detail_url(world.patient)).status_code == 404
    assert world.patient not in patients_visible_to(world.surgeon.user)


def test_a_member_leaves_the_care_team_themself(world, surgeon_in_team):
    surgeon = client_for(world.surgeon.user)
    page = surgeon.get(detail_url(world.patient))
    assert end_url(surgeon_in_team) in html(page)
    # Only his own line: not the referring doctor's nor the GP's.
    assert end_url(relationship_of(world, world.gp)) not in html(page)

    left = surgeon.post(end_url(surgeon_in_team), {"reason": "Je quitte le service."})

    assert left.status_code == 302
    assert left["Location"] == LIST_URL
    surgeon_in_team.refresh_from_db()
    assert surgeon_in_team.ended_by == world.surgeon.user
    assert surgeon.get(detail_url(world.patient)).status_code == 404
    assert not Notification.objects.filter(recipient=world.surgeon.user).exists()


@pytest.mark.usefixtures("catalogues")
def test_an_empty_reason_is_refused_and_changes_nothing(world, surgeon_in_team):
    alerts = security_alerts().count()

    response = client_for(world.oncologist.user).post(end_url(surgeon_in_team), {"reason": "  "})

    assert response.status_code == 200
    assert "Indiquez pourquoi ce professionnel quitte l'équipe de soins." in unescape(
        html(response)
    )
    assert still_active(surgeon_in_team)
    assert security_alerts().count() == alerts
    assert not Notification.objects.filter(recipient=world.surgeon.user).exists()
    with pytest.raises(ValidationError):
        care_relationship_end(
            relationship=surgeon_in_team, by=Actor(user=world.oncologist.user), reason=""
        )
    assert still_active(surgeon_in_team)


@pytest.mark.usefixtures("catalogues")
def test_removing_twice_says_it_is_done_and_ends_it_once(world, surgeon_in_team):
    client_for(world.oncologist.user).post(end_url(surgeon_in_team), {"reason": REASON})
    ended_at = CareRelationship.objects.get(pk=surgeon_in_team.pk).ended_at

    again = client_for(world.oncologist.user).post(end_url(surgeon_in_team), {"reason": REASON})

    assert again.status_code == 302
    assert messages_of(again) == ["Pr Antoine Rousseau avait déjà quitté l'équipe de soins."]
    assert CareRelationship.objects.get(pk=surgeon_in_team.pk).ended_at == ended_at
    assert security_alerts().filter(actor=world.oncologist.user).count() == 1
    assert Notification.objects.filter(recipient=world.surgeon.user).count() == 1
    # Two removals racing: the second one to reach the database is told, not obeyed.
    with pytest.raises(ValidationError):
        care_relationship_end(
            relationship=surgeon_in_team, by=Actor(user=world.oncologist.user), reason=REASON
        )


@pytest.mark.usefixtures("catalogues")
def test_the_removal_page_speaks_french(world, surgeon_in_team):
    oncologist = client_for(world.oncologist.user)

    page = unescape(html(oncologist.get(end_url(surgeon_in_team))))
    record = html(oncologist.get(detail_url(world.patient)))

    assert "Retirer de l'équipe de soins" in page
    assert "Pourquoi ce professionnel quitte-t-il l'équipe de soins ?" in page
    assert "n'aura plus accès au dossier de ce patient et en sera informé" in page
    assert "Retirer…" in record
    gp_refused = client_for(world.gp.user).post(end_url(surgeon_in_team), {"reason": REASON})
    assert messages_of(gp_refused) == [
        "Seuls le médecin référent du patient, l'administration de l'établissement ou le "
        "professionnel concerné peuvent retirer Pr Antoine Rousseau de l'équipe de soins."
    ]


@pytest.fixture
def admissions_office(world):
    """The admissions office of CHRU de Tours, where Jeanne Dupont has her IPP."""
    officer = make_professional(
        email="admissions@mirc.test",
        first_name="Sophie",
        last_name="Marchand",
        profession="autre",
        establishment=world.tours,
        title="Mme",
        with_rpps=False,
    )
    officer.user.user_permissions.add(Permission.objects.get(codename="change_carerelationship"))
    return officer


def test_the_establishment_administration_may_change_the_gp_of_its_own_patients(
    world, admissions_office
):
    gp_relationship = relationship_of(world, world.gp)

    care_relationship_end(
        relationship=gp_relationship,
        by=Actor(user=admissions_office.user),
        reason="La patiente a déclaré un autre médecin traitant.",
    )

    assert not still_active(gp_relationship)
    assert world.patient not in patients_visible_to(world.gp.user)


def test_the_permission_alone_does_not_make_another_establishment_the_administration(
    world, admissions_office
):
    # Bourges's admissions office holds the same permission, but Jeanne Dupont is not theirs.
    bourges_office = make_professional(
        email="admissions.bourges@mirc.test",
        first_name="Luc",
        last_name="Garnier",
        profession="autre",
        establishment=world.bourges,
        title="M.",
        with_rpps=False,
    )
    bourges_office.user.user_permissions.add(
        Permission.objects.get(codename="change_carerelationship")
    )
    gp_relationship = relationship_of(world, world.gp)

    for user in (bourges_office.user, world.admin_user):
        with pytest.raises(PermissionDenied):
            care_relationship_end(relationship=gp_relationship, by=Actor(user=user), reason=REASON)

    assert still_active(gp_relationship)


# --- Who may bring a professional in ----------------------------------------------------------


def test_only_a_clinician_of_the_care_team_may_add_a_colleague(world):
    # The outsider sees other patients, not Jeanne Dupont: he cannot open her record to anyone.
    with pytest.raises(PermissionDenied):
        care_relationship_add(
            patient=world.patient,
            professional=world.surgeon,
            role=CareRole.CARE_TEAM,
            by=Actor(user=world.outsider.user),
        )

    assert world.patient not in patients_visible_to(world.surgeon.user)
    refusal = security_alerts().latest("pk")
    assert (refusal.actor, refusal.patient) == (world.outsider.user, world.patient)


def test_the_establishment_administration_may_add_a_colleague(world, admissions_office):
    care_relationship_add(
        patient=world.patient,
        professional=world.surgeon,
        role=CareRole.CARE_TEAM,
        by=Actor(user=admissions_office.user),
    )

    assert world.patient in patients_visible_to(world.surgeon.user)


@pytest.mark.parametrize("who", ["inactive doctor", "non-clinician with an RPPS"])
def test_only_an_active_clinician_of_the_directory_can_join(world, who):
    candidate = make_professional(
        email="candidat@mirc.test",
        first_name="Marc",
        last_name="Henry",
        profession="medecin" if who == "inactive doctor" else "autre",
        establishment=world.tours,
    )
    if who == "inactive doctor":
        candidate.user.is_active = False
        candidate.user.save(update_fields=["is_active"])

    with pytest.raises(ValidationError):
        care_relationship_add(
            patient=world.patient,
            professional=candidate,
            role=CareRole.CARE_TEAM,
            by=Actor(user=world.oncologist.user),
        )

    assert world.patient not in patients_visible_to(candidate.user)

"""Who takes the patient's word on sharing between establishments, and what the patient page
says of it: only the patient's establishments (those holding an IPP of Jeanne Dupont), and the
page names the source (the portal and who, or an establishment's HL7 feed) and the date.

Jeanne has her IPP at the CHRU de Tours. Her oncologist (Tours, referring doctor) and the
Tours admissions office may change it; her GP (the Vierzon practice, no IPP) may not, though
he is in her care team; nor may the Bourges radiologist in her care team until the CH de
Bourges registers her.
"""

import html
import zoneinfo

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from portal import permissions, services
from portal.audit import Actor
from portal.hl7 import handle_message
from portal.models import (
    AuditAction,
    AuditEvent,
    AuditEventId,
    CareRole,
    Patient,
    PatientIdentifier,
)
from tests.builders import professional as make_professional
from tests.conftest import client_for
from tests.test_sharing_opposition import _jeanne_a08_from_bourges

pytestmark = pytest.mark.django_db

PARIS = zoneinfo.ZoneInfo("Europe/Paris")
ENGLISH = {"HTTP_ACCEPT_LANGUAGE": "en"}


def _oppose(client, patient, opposed=True):
    return client.post(
        reverse("sharing-opposition", args=[patient.pk]), {"opposed": "1" if opposed else "0"}
    )


def _page(client, patient, **headers) -> str:
    response = client.get(reverse("patient-detail", args=[patient.pk]), **headers)
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def _changes(patient) -> int:
    return AuditEvent.objects.filter(
        patient=patient,
        event_id=AuditEventId.PATIENT_RECORD,
        action=AuditAction.UPDATE,
        detail__has_key="sharing_opposed",
    ).count()


@pytest.fixture
def admissions_office(world):
    """The admissions office of the CHRU de Tours, outside Jeanne's care team."""
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


def test_the_page_names_who_recorded_it_where_and_when(world):
    jeanne = world.patient
    oncologist = client_for(world.oncologist.user)

    assert _oppose(oncologist, jeanne).status_code == 302

    jeanne.refresh_from_db()
    assert (jeanne.sharing_opposition_source, jeanne.sharing_opposition_establishment) == (
        "portal",
        world.tours,
    )
    assert jeanne.sharing_opposition_by == world.oncologist.user
    when = jeanne.sharing_opposed_at.astimezone(PARIS).strftime("%d/%m/%Y %H:%M")
    page = _page(oncologist, jeanne)
    assert (
        f"Enregistrée le {when} dans le portail par Dr Claire Martin, CHRU de Tours "
        "(FINESS 370000481)." in page
    )
    english = _page(oncologist, jeanne, **ENGLISH)
    assert (
        f"Recorded on {when} in the portal by Dr Claire Martin, CHRU de Tours "
        "(FINESS 370000481)." in english
    )

    # Lifted: the page says the patient accepts, and names nobody.
    assert _oppose(oncologist, jeanne, opposed=False).status_code == 302
    jeanne.refresh_from_db()
    assert jeanne.sharing_opposition_source == ""
    assert jeanne.sharing_opposition_establishment is None
    page = _page(oncologist, jeanne, **ENGLISH)
    assert "Accepts sharing between the establishments caring for them." in page
    assert 'data-testid="sharing-source"' not in page
    assert _changes(jeanne) == 2


def test_the_feed_of_an_establishment_holding_her_ipp_is_named_on_the_page(world):
    jeanne = world.patient
    # The A08 of the CH de Bourges registers her IPP B300003 there, then carries PD1-12 "Y".
    handle_message(_jeanne_a08_from_bourges(indicator="Y"))

    jeanne.refresh_from_db()
    assert jeanne.sharing_opposed
    assert jeanne.sharing_opposition_source == "hl7"
    assert jeanne.sharing_opposition_establishment == world.bourges
    assert jeanne.sharing_opposition_by is None
    when = jeanne.sharing_opposed_at.astimezone(PARIS).strftime("%d/%m/%Y %H:%M")
    page = _page(client_for(world.oncologist.user), jeanne)
    assert f"Reçue le {when} du flux HL7 de CH de Bourges (FINESS 180000028)." in page


def test_a_feed_may_not_speak_for_a_patient_it_does_not_hold(world):
    with pytest.raises(PermissionDenied):
        services.sharing_opposition_record(
            patient=world.patient,
            by=Actor.system("hl7"),
            source="hl7",
            establishment=world.bourges,
        )
    assert not Patient.objects.get(pk=world.patient.pk).sharing_opposed
    assert _changes(world.patient) == 0


def test_her_gp_in_another_practice_may_not_change_it(world):
    jeanne = world.patient
    gp = client_for(world.gp.user)
    assert not permissions.may_change_sharing_opposition(user=world.gp.user, patient=jeanne)
    assert 'data-testid="sharing-opposition"' not in _page(gp, jeanne)

    answer = _oppose(gp, jeanne)

    assert answer.status_code == 302
    assert not Patient.objects.get(pk=jeanne.pk).sharing_opposed
    with pytest.raises(PermissionDenied):
        services.sharing_opposition_record(
            patient=jeanne, by=Actor(user=world.gp.user), source="portal"
        )
    assert AuditEvent.objects.filter(
        event_id=AuditEventId.SECURITY_ALERT, actor=world.gp.user, patient=jeanne
    ).exists()
    assert _changes(jeanne) == 0


def test_a_care_team_member_of_another_establishment_may_once_it_registers_her(world):
    jeanne = world.patient
    services.care_relationship_add(
        patient=jeanne,
        professional=world.outsider,
        role=CareRole.CARE_TEAM,
        by=Actor.system("tests"),
    )
    bourges_radiologist = client_for(world.outsider.user)
    assert _oppose(bourges_radiologist, jeanne).status_code == 302
    assert not Patient.objects.get(pk=jeanne.pk).sharing_opposed

    PatientIdentifier.objects.create(patient=jeanne, establishment=world.bourges, value="B300003")

    assert 'data-testid="sharing-opposition"' in _page(bourges_radiologist, jeanne)
    confirmation = bourges_radiologist.get(
        reverse("sharing-opposition", args=[jeanne.pk]), **ENGLISH
    )
    assert "Recorded in your name for CH de Bourges (FINESS 180000028)" in html.unescape(
        confirmation.content.decode()
    )
    assert _oppose(bourges_radiologist, jeanne).status_code == 302
    jeanne.refresh_from_db()
    assert jeanne.sharing_opposed
    # Recorded for the establishment she works for, where Jeanne has her IPP.
    assert jeanne.sharing_opposition_establishment == world.bourges
    event = AuditEvent.objects.get(patient=jeanne, detail__sharing_opposed=True)
    assert (event.actor, event.detail["establishment"]) == (world.outsider.user, "180000028")


def test_the_admissions_office_of_her_establishment_may_without_being_in_the_care_team(
    world, admissions_office
):
    jeanne = world.patient
    services.sharing_opposition_record(
        patient=jeanne, by=Actor(user=admissions_office.user), source="portal"
    )
    jeanne.refresh_from_db()
    assert jeanne.sharing_opposed
    assert jeanne.sharing_opposition_establishment == world.tours

    # The same permission in the Bourges admissions office opens nothing for Jeanne.
    bourges_office = make_professional(
        email="admissions.bourges@mirc.test",
        first_name="Luc",
        last_name="Garnier",
        profession="autre",
        establishment=world.bourges,
        with_rpps=False,
    )
    bourges_office.user.user_permissions.add(
        Permission.objects.get(codename="change_carerelationship")
    )
    assert not permissions.may_change_sharing_opposition(user=bourges_office.user, patient=jeanne)
    with pytest.raises(PermissionDenied):
        services.sharing_opposition_lift(
            patient=jeanne, by=Actor(user=bourges_office.user), source="portal"
        )
    assert Patient.objects.get(pk=jeanne.pk).sharing_opposed

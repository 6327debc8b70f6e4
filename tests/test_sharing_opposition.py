"""The patient's opposition to sharing between establishments (Code de la santé publique,
L1110-4): each establishment then sees only the studies it made.

Jeanne Dupont (world.patient) has a CT made at the CHRU de Tours (her oncologist's) and a CT
sent by the CH de Bourges over its DICOM link. Her Tours oncologist sees both until she
opposes sharing; then only the Tours one, in the dossier, the viewer and DICOMweb; lifting
the opposition restores it. The Bourges radiologist, once in her care team, sees only the
Bourges one meanwhile.
"""

import html
import zoneinfo

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from imaging import services as imaging_services
from imaging.models import Study
from imaging.selectors import patient_studies, studies_visible_to
from imaging.validation import UploadedFile
from portal import services
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
from portal.selectors import access_generation
from tests.conftest import client_for
from tests.dicom_factory import ct_files, uid
from tests.permission_matrix import imaged_study
from tests.test_hl7_listener import BOURGES, ack_fields, adt

pytestmark = pytest.mark.django_db

ENGLISH = {"HTTP_ACCEPT_LANGUAGE": "en"}  # the English source strings, whatever the .po says
PARIS = zoneinfo.ZoneInfo("Europe/Paris")


def bourges_study(world) -> Study:
    """Jeanne's CT sent by the CH de Bourges under its own IPP (the gateway's ingest)."""
    world.bourges.patient_id_issuer = "CH-BOURGES"
    world.bourges.save(update_fields=["patient_id_issuer"])
    PatientIdentifier.objects.create(
        patient=world.patient, establishment=world.bourges, value="B300003"
    )
    files = ct_files(
        world.patient,
        key="bourges",
        slices=1,
        ipp="B300003",
        issuer="CH-BOURGES",
        description="TDM Bourges",
    )
    results = imaging_services.ingest_from_establishment(
        uploads=[UploadedFile("BOURGES-C-STORE", data) for data in files],
        establishment=world.bourges,
        by=Actor.system("tests"),
    )
    assert [r.status for r in results] == ["accepted"], [r.reason for r in results]
    study = Study.objects.get(study_instance_uid=uid("bourges", "study"))
    assert (study.patient, study.establishment) == (world.patient, world.bourges)
    return study


@pytest.fixture
def two_studies(world):
    tours = imaged_study(world)["study"]
    if tours.establishment_id != world.tours.pk:
        Study.objects.filter(pk=tours.pk).update(establishment=world.tours)
    return {"tours": tours, "bourges": bourges_study(world)}


def _oppose(client, patient, opposed: bool):
    return client.post(
        reverse("sharing-opposition", args=[patient.pk]), {"opposed": "1" if opposed else "0"}
    )


def _sees(client, study) -> dict:
    """What the user gets for ``study``: its line in the dossier, its viewer, its DICOMweb."""
    dossier = client.get(reverse("imaging-dossier", args=[study.patient_id])).content.decode()
    return {
        "dossier": study.description in dossier,
        "viewer": client.get(reverse("study-viewer", args=[study.pk])).status_code,
        "dicomweb": client.get(
            reverse("dicomweb-study-series", args=[study.study_instance_uid])
        ).status_code,
    }


SEEN = {"dossier": True, "viewer": 200, "dicomweb": 200}
HIDDEN = {"dossier": False, "viewer": 404, "dicomweb": 404}


def test_the_opposition_hides_the_other_establishments_studies_until_it_is_lifted(
    world, two_studies
):
    jeanne = world.patient
    oncologist = client_for(world.oncologist.user)
    assert _sees(oncologist, two_studies["bourges"]) == SEEN

    answer = _oppose(oncologist, jeanne, True)

    assert answer.status_code == 302
    jeanne.refresh_from_db()
    assert jeanne.sharing_opposed and jeanne.sharing_opposed_at is not None
    assert _sees(oncologist, two_studies["bourges"]) == HIDDEN
    assert _sees(oncologist, two_studies["tours"]) == SEEN
    # The refused reads are audited against Jeanne.
    assert AuditEvent.objects.filter(
        event_id=AuditEventId.SECURITY_ALERT,
        actor=world.oncologist.user,
        object_id__in=[str(two_studies["bourges"].pk), two_studies["bourges"].study_instance_uid],
    ).exists()
    recorded = AuditEvent.objects.get(
        patient=jeanne,
        event_id=AuditEventId.PATIENT_RECORD,
        action=AuditAction.UPDATE,
        detail__sharing_opposed=True,
    )
    assert recorded.actor == world.oncologist.user
    assert recorded.detail["source"] == "portal"
    assert recorded.detail["establishment"] == "370000481"

    assert _oppose(oncologist, jeanne, False).status_code == 302

    jeanne.refresh_from_db()
    assert not jeanne.sharing_opposed and jeanne.sharing_opposed_at is None
    assert _sees(oncologist, two_studies["bourges"]) == SEEN
    assert AuditEvent.objects.filter(
        patient=jeanne, event_id=AuditEventId.PATIENT_RECORD, detail__sharing_opposed=False
    ).exists()


def test_each_establishment_keeps_its_own_studies(world, two_studies):
    services.care_relationship_add(
        patient=world.patient,
        professional=world.outsider,
        role=CareRole.CARE_TEAM,
        by=Actor.system("tests"),
    )
    generation = access_generation(world.outsider.user.pk)
    services.sharing_opposition_record(
        patient=world.patient, by=Actor(user=world.oncologist.user), source="portal"
    )
    # Grants the viewer and DICOMweb cached on the previous state are forgotten.
    assert access_generation(world.outsider.user.pk) != generation

    bourges_radiologist = client_for(world.outsider.user)
    assert _sees(bourges_radiologist, two_studies["bourges"]) == SEEN
    assert _sees(bourges_radiologist, two_studies["tours"]) == HIDDEN
    # The selectors every other page uses say the same.
    assert list(patient_studies(patient=world.patient, user=world.outsider.user)) == [
        two_studies["bourges"]
    ]
    assert set(studies_visible_to(world.oncologist.user)) == {two_studies["tours"]}


def test_the_patient_page_shows_the_state_and_asks_for_a_confirmation(world):
    jeanne = world.patient
    oncologist = client_for(world.oncologist.user)
    detail = reverse("patient-detail", args=[jeanne.pk])
    page = oncologist.get(detail, **ENGLISH).content.decode()
    assert "Accepts sharing between the establishments caring for them." in page
    assert reverse("sharing-opposition", args=[jeanne.pk]) in page

    confirmation = oncologist.get(reverse("sharing-opposition", args=[jeanne.pk]), **ENGLISH)
    assert confirmation.status_code == 200
    assert "each establishment will see only the studies it made itself" in (
        confirmation.content.decode()
    )
    assert not Patient.objects.get(pk=jeanne.pk).sharing_opposed  # a GET changes nothing

    _oppose(oncologist, jeanne, True)
    jeanne.refresh_from_db()
    since = jeanne.sharing_opposed_at.astimezone(PARIS).strftime("%d/%m/%Y")
    page = oncologist.get(detail, **ENGLISH).content.decode()
    assert f"Opposes sharing between establishments since {since}." in page
    assert "Lift the opposition…" in page
    french = html.unescape(oncologist.get(detail, HTTP_ACCEPT_LANGUAGE="fr").content.decode())
    assert f"S'oppose au partage entre établissements depuis le {since}." in french


def test_a_second_click_changes_nothing_more(world):
    oncologist = client_for(world.oncologist.user)
    _oppose(oncologist, world.patient, True)
    first_at = Patient.objects.get(pk=world.patient.pk).sharing_opposed_at

    answer = _oppose(oncologist, world.patient, True)

    assert answer.status_code == 302
    assert Patient.objects.get(pk=world.patient.pk).sharing_opposed_at == first_at
    assert (
        AuditEvent.objects.filter(
            patient=world.patient,
            event_id=AuditEventId.PATIENT_RECORD,
            action=AuditAction.UPDATE,
            detail__has_key="sharing_opposed",
        ).count()
        == 1
    )


def test_someone_outside_the_care_team_may_not_record_it(world):
    with pytest.raises(PermissionDenied):
        services.sharing_opposition_record(
            patient=world.patient, by=Actor(user=world.outsider.user), source="portal"
        )

    assert not Patient.objects.get(pk=world.patient.pk).sharing_opposed
    assert AuditEvent.objects.filter(
        event_id=AuditEventId.SECURITY_ALERT, actor=world.outsider.user, patient=world.patient
    ).exists()
    # Over HTTP the record does not even exist for him.
    assert _oppose(client_for(world.outsider.user), world.patient, True).status_code == 404
    assert not Patient.objects.get(pk=world.patient.pk).sharing_opposed


def _jeanne_a08_from_bourges(**overrides):
    jeanne = Patient.objects.get(identifiers__value="T100001")
    message = adt(
        event="A08",
        facility=BOURGES,
        control=overrides.pop("control", "PD1-1"),
        ipp="B300003^^^CH-BOURGES^PI",
        ins=jeanne.ins_matricule,
        names="DUPONT^Jeanne^Jeanne Marie^^^^L",
        birth_date="19560312",
        birth_place="37261",
    )
    indicator = overrides.pop("indicator", None)
    if indicator is not None:
        # PD1 after PID: PD1-12 is the protection indicator.
        message = message.replace("PV1||N", "PD1" + "|" * 12 + indicator + "\rPV1||N")
    return message


def test_the_feed_carries_the_opposition_in_pd1_12(world):
    jeanne = world.patient

    opposed = handle_message(_jeanne_a08_from_bourges(indicator="Y"))

    assert ack_fields(opposed.ack)["MSA"][1] == "AA"
    jeanne.refresh_from_db()
    assert jeanne.sharing_opposed
    event = AuditEvent.objects.get(patient=jeanne, detail__sharing_opposed=True)
    assert (event.detail["source"], event.detail["establishment"]) == ("hl7", "180000028")

    # Without PD1-12 nothing changes; "N" lifts it; an unknown value is refused.
    handle_message(_jeanne_a08_from_bourges(control="PD1-2"))
    jeanne.refresh_from_db()
    assert jeanne.sharing_opposed
    refused = handle_message(_jeanne_a08_from_bourges(control="PD1-3", indicator="X"))
    assert ack_fields(refused.ack)["MSA"][1] == "AE"
    assert ack_fields(refused.ack)["ERR"][2] == "PD1^1^12"
    jeanne.refresh_from_db()
    assert jeanne.sharing_opposed
    handle_message(_jeanne_a08_from_bourges(control="PD1-4", indicator="N"))
    jeanne.refresh_from_db()
    assert not jeanne.sharing_opposed


def test_a_committee_members_remembered_grant_ends_with_the_opposition(world, two_studies):
    """The radiotherapist reads Jeanne's Bourges CT through her RCP case (not her care team):
    the viewer's grant, remembered for a few seconds, is forgotten the moment she opposes."""
    from rcp import services as rcp_services
    from tests.rcp_world import submitted_case

    case = submitted_case(world)
    rcp_services.case_update(
        case=case,
        revision=case.revision,
        by=Actor(user=world.oncologist.user),
        studies=[two_studies["bourges"]],
    )
    radiotherapist = client_for(world.radiotherapist.user)
    series = reverse("dicomweb-study-series", args=[two_studies["bourges"].study_instance_uid])
    assert radiotherapist.get(series).status_code == 200

    assert _oppose(client_for(world.oncologist.user), world.patient, True).status_code == 302

    assert radiotherapist.get(series).status_code == 404

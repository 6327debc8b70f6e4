"""The HL7 feed beyond identities: the admission event, and the merges of IHE PAM France.

A01/A04/A05 announce the admission (portal.events.patient_admitted) once committed. A47
changes an establishment's IPP; A40 merges two IPPs of one establishment, and with them two
regional patients when the identity allows it (same traits, no two different qualified INS).
"""

import datetime as dt

import pytest
from django.urls import reverse

from imaging.models import Study, StudyIdentity
from portal import events
from portal.audit import Actor
from portal.hl7 import handle_message
from portal.models import (
    AuditAction,
    AuditEvent,
    AuditEventId,
    CareRelationship,
    CareRole,
    IdentityConflict,
    IdentityConflictSource,
    Patient,
    PatientIdentifier,
)
from portal.services import PatientTraits, care_relationship_add, patient_register
from tests.conftest import client_for, make_patient
from tests.dicom_factory import uid
from tests.test_hl7_listener import (  # noqa: F401 (listener: a fixture)
    BOURGES,
    TOURS,
    _exchange,
    ack_fields,
    adt,
    frame,
    listener,
)


@pytest.fixture
def admissions():
    """The admissions announced, as (patient id, establishment FINESS, trigger)."""
    received = []

    def receiver(sender, *, patient, establishment, trigger, **kwargs):
        received.append((patient.pk, establishment.finess, trigger))

    events.patient_admitted.connect(receiver, dispatch_uid="test-admissions")
    yield received
    events.patient_admitted.disconnect(dispatch_uid="test-admissions")


# --- The admission event ----------------------------------------------------------------------


@pytest.mark.parametrize("event", ["A01", "A04", "A05"])
def test_an_accepted_admission_is_announced_once_after_commit(
    world, admissions, django_capture_on_commit_callbacks, event
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = handle_message(adt(event=event))
        # Nothing before the commit: imaging must not prefetch for a rolled-back message.
        assert admissions == []
    for callback in callbacks:
        callback()

    assert ack_fields(result.ack)["MSA"][1] == "AA"
    assert admissions == [(result.patient.pk, "370000481", event)]


def test_a_failing_receiver_does_not_turn_the_accepted_admission_into_an_error(
    world, django_capture_on_commit_callbacks
):
    def broken(sender, **kwargs):
        raise RuntimeError("PACS unreachable")

    events.patient_admitted.connect(broken, dispatch_uid="test-broken")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            result = handle_message(adt(event="A01"))
    finally:
        events.patient_admitted.disconnect(dispatch_uid="test-broken")

    assert ack_fields(result.ack)["MSA"][1] == "AA"
    assert Patient.objects.filter(pk=result.patient.pk).exists()


def test_updates_registrations_conflicts_and_refusals_announce_no_admission(
    world, admissions, django_capture_on_commit_callbacks
):
    jeanne = world.patient
    with django_capture_on_commit_callbacks(execute=True):
        assert ack_fields(handle_message(adt(event="A28")).ack)["MSA"][1] == "AA"
        assert ack_fields(handle_message(adt(event="A08", control="2")).ack)["MSA"][1] == "AA"
        # Refused: no PID.
        assert ack_fields(handle_message(adt(event="A01", pid=False)).ack)["MSA"][1] == "AE"
        # Jeanne's INS with another birth date: an identity conflict, not an admission.
        conflict = handle_message(
            adt(
                event="A01",
                facility=BOURGES,
                ipp="B300003^^^CH-BOURGES^PI",
                ins=jeanne.ins_matricule,
                names="DUPONT^Jeanne^Jeanne Marie^^^^L",
                birth_date="19560321",
                birth_place="37261",
            )
        )
        assert conflict.conflict is not None
    assert admissions == []


# --- A40 and A47 ------------------------------------------------------------------------------

TOURS_IPP = "^^^CHRU-TOURS&1.2.250.1.211.10.200.2&ISO^PI"


def identifier_message(
    *,
    event="A40",
    surviving="T100001",
    merged="T100777",
    control="M-1",
    mrg=None,
    names="DUPONT^Jeanne^Jeanne Marie^^^^L",
):
    """An ADT^A40 (ADT_A39) or ADT^A47 (ADT_A30) of the CHRU de Tours (ITI TF-2b 3.30)."""
    structure = {"A40": "ADT_A39", "A47": "ADT_A30"}[event]
    segments = [
        f"MSH|^~\\&|GAM|{TOURS}|MIRC|ARS-CVL|20261205101500||ADT^{event}^{structure}"
        f"|{control}|P|2.5^FRA^2.10|||||FRA|UNICODE UTF-8|||2.10",
        "EVN||20261205101500",
        f"PID|||{surviving}{TOURS_IPP}||{names}||19560312|F|||^^TOURS^^^^BDL^^37261",
    ]
    if mrg is not False:
        segments.append(f"MRG|{mrg if mrg is not None else merged + TOURS_IPP}")
    return "\r".join(segments) + "\r"


def duplicate_of_jeanne(world, *, ipp="T100777", **traits) -> Patient:
    """A second regional record of Jeanne, made by the Tours registry under another IPP."""
    fields = {
        "birth_name": "Dupont",
        "first_names": "Jeanne Marie",
        "sex": "F",
        "birth_date": dt.date(1956, 3, 12),
        "birth_place_code": "37261",
        **traits,
    }
    return patient_register(
        traits=PatientTraits(**fields),
        by=Actor.system("tests"),
        source=IdentityConflictSource.IMPORT,
        establishment=world.tours,
        ipp=ipp,
    ).patient


def study_of(patient, establishment, key) -> Study:
    return Study.objects.create(
        study_instance_uid=uid(key, "study"),
        patient=patient,
        establishment=establishment,
        identity=StudyIdentity.MATCHED,
        modalities="CT",
        description=f"Scanner {key}",
    )


def snapshot():
    """What a refused merge must leave as it was."""
    return (
        sorted(PatientIdentifier.objects.values_list("patient_id", "establishment_id", "value")),
        sorted(Study.objects.values_list("pk", "patient_id")),
        sorted(CareRelationship.objects.values_list("patient_id", "professional_id", "ended_at")),
        sorted(Patient.objects.values_list("pk", "ins_matricule")),
    )


def test_a40_on_one_patient_drops_the_merged_ipp(world):
    jeanne = world.patient
    PatientIdentifier.objects.create(patient=jeanne, establishment=world.tours, value="T100009")

    result = handle_message(identifier_message(merged="T100009"))

    assert ack_fields(result.ack)["MSA"][1:3] == ["AA", "M-1"]
    assert "ERR" not in ack_fields(result.ack)
    assert set(jeanne.identifiers.values_list("value", flat=True)) == {"T100001"}
    event = AuditEvent.objects.get(
        patient=jeanne, event_id=AuditEventId.PATIENT_RECORD, action=AuditAction.UPDATE
    )
    assert event.detail["removed_ipp"] == "T100009"
    # Sent again (the sender did not get the ACK): already applied, accepted, nothing more.
    again = handle_message(identifier_message(merged="T100009", control="M-2"))
    assert ack_fields(again.ack)["MSA"][1:3] == ["AA", "M-2"]


def test_a40_merges_two_records_of_one_person_into_the_survivor(
    world, django_capture_on_commit_callbacks
):
    jeanne = world.patient
    duplicate = duplicate_of_jeanne(world)
    PatientIdentifier.objects.create(patient=duplicate, establishment=world.bourges, value="B9")
    study = study_of(duplicate, world.bourges, "duplicate")
    care_relationship_add(
        patient=duplicate,
        professional=world.surgeon,
        role=CareRole.CARE_TEAM,
        by=Actor.system("tests"),
    )
    surgeon = client_for(world.surgeon.user)
    assert surgeon.get(reverse("patient-detail", args=[duplicate.pk])).status_code == 200
    assert surgeon.get(reverse("patient-detail", args=[jeanne.pk])).status_code == 404

    with django_capture_on_commit_callbacks(execute=True):
        result = handle_message(identifier_message())

    assert ack_fields(result.ack)["MSA"][1:3] == ["AA", "M-1"]
    assert result.patient == jeanne
    study.refresh_from_db()
    assert study.patient == jeanne
    # The merged IPP is gone; the other establishment's IPP follows the person.
    assert set(jeanne.identifiers.values_list("establishment__finess", "value")) == {
        ("370000481", "T100001"),
        ("180000028", "B9"),
    }
    assert not duplicate.identifiers.exists()
    # The surgeon now follows Jeanne's survivor record, and the merged one opens for nobody.
    dossier = surgeon.get(reverse("imaging-dossier", args=[jeanne.pk]))
    assert dossier.status_code == 200
    assert "Scanner duplicate" in dossier.content.decode()
    assert surgeon.get(reverse("patient-detail", args=[duplicate.pk])).status_code == 404
    assert (
        client_for(world.oncologist.user)
        .get(reverse("patient-detail", args=[duplicate.pk]))
        .status_code
        == 404
    )
    assert CareRelationship.objects.filter(
        patient=jeanne, professional=world.surgeon, ended_at__isnull=True
    ).exists()
    assert not CareRelationship.objects.filter(patient=duplicate, ended_at__isnull=True).exists()
    # Kept, emptied, marked: its audit trail still names it, and it says where the data went.
    duplicate.refresh_from_db()
    assert duplicate.merged_into == jeanne and duplicate.merged_at is not None
    merged = AuditEvent.objects.filter(patient=jeanne, event_id=AuditEventId.PATIENT_RECORD)
    update = merged.get(action=AuditAction.UPDATE)
    delete = merged.get(action=AuditAction.DELETE)
    assert update.detail["merged_patient"] == duplicate.pk
    assert set(update.detail["merged_identifiers"]) == {"370000481:T100777", "180000028:B9"}
    assert (delete.object_type, delete.object_id) == ("portal.patient", str(duplicate.pk))


def test_a40_on_differing_traits_goes_to_identity_vigilance_and_merges_nothing(world):
    duplicate = duplicate_of_jeanne(world, birth_date=dt.date(1956, 3, 21))
    study_of(duplicate, world.tours, "other-person")
    before = snapshot()

    result = handle_message(identifier_message())

    ack = ack_fields(result.ack)
    assert ack["MSA"][1] == "AA"
    assert ack["ERR"][4] == "W"
    assert snapshot() == before
    conflict = IdentityConflict.objects.get(patient=world.patient)
    assert conflict.differing_traits == ["birth_date"]
    assert conflict.incoming_traits["merged_patient"] == duplicate.pk
    # The vigilance team reads what was asked and why it was not done.
    page = client_for(world.identity_reviewer).get(
        reverse("identity-conflict-list"), HTTP_ACCEPT_LANGUAGE="en"
    )
    assert (
        f"The establishment asked to merge record n° {duplicate.pk} (IPP T100777) into this one"
        in page.content.decode()
    )


def test_a40_joining_two_qualified_ins_is_refused_and_changes_nothing(world):
    # Another qualified person under a second Tours IPP (make_patient: a qualified INS).
    other = make_patient(
        birth_name="Dupont",
        first_names="Jeanne Marie",
        order=7,
        establishment=world.tours,
        ipp="T100777",
    )
    assert other.ins_matricule != world.patient.ins_matricule
    before = snapshot()

    result = handle_message(identifier_message())

    ack = ack_fields(result.ack)
    assert ack["MSA"][1] == "AE"
    assert "qualified INS" in ack["ERR"][8]
    assert snapshot() == before
    assert not IdentityConflict.objects.exists()
    refusal = AuditEvent.objects.filter(event_id=AuditEventId.IMPORT).latest("id")
    assert refusal.detail["ack"] == "AE"


def test_a47_corrects_the_ipp_of_the_same_patient(world):
    jeanne = world.patient

    result = handle_message(identifier_message(event="A47", surviving="T100002", merged="T100001"))

    assert ack_fields(result.ack)["MSA"][1] == "AA"
    assert list(jeanne.identifiers.values_list("value", flat=True)) == ["T100002"]
    event = AuditEvent.objects.get(
        patient=jeanne, event_id=AuditEventId.PATIENT_RECORD, action=AuditAction.UPDATE
    )
    assert (event.detail["previous_ipp"], event.detail["ipp"]) == ("T100001", "T100002")


def test_a47_to_an_ipp_the_patient_already_carries_drops_the_incorrect_one(world):
    jeanne = world.patient
    PatientIdentifier.objects.create(patient=jeanne, establishment=world.tours, value="T100003")

    result = handle_message(identifier_message(event="A47", surviving="T100001", merged="T100003"))

    assert ack_fields(result.ack)["MSA"][1] == "AA"
    assert list(jeanne.identifiers.values_list("value", flat=True)) == ["T100001"]


@pytest.mark.parametrize(
    "message,error",
    [
        # The incorrect IPP is unknown.
        (identifier_message(event="A47", surviving="T100002", merged="T404"), "204"),
        # The correct IPP is another record's: joining them is an A40's business.
        (identifier_message(event="A47", surviving="T100777", merged="T100001"), "205"),
        # No MRG segment.
        (identifier_message(mrg=False), "100"),
        # MRG-1 names no IPP of the sender's domain.
        (identifier_message(mrg="X1^^^OTHER-HOSPITAL^PI"), "101"),
        # Both IPPs unknown.
        (identifier_message(surviving="T404", merged="T405"), "204"),
        # MRG-1 and PID-3 name the same IPP.
        (identifier_message(merged="T100001"), "102"),
    ],
    ids=["a47-unknown", "a47-taken", "no-mrg", "foreign-mrg", "a40-unknown", "same-ipp"],
)
def test_bad_identifier_messages_get_an_ae_and_change_nothing(world, message, error):
    duplicate_of_jeanne(world)
    before = snapshot()

    result = handle_message(message)

    ack = ack_fields(result.ack)
    assert ack["MSA"][1] == "AE"
    assert ack["ERR"][3].startswith(error)
    assert snapshot() == before


def test_a40_over_the_mllp_listener(listener, world):  # noqa: F811
    duplicate = duplicate_of_jeanne(world)
    study = study_of(duplicate, world.tours, "over-mllp")

    received = _exchange(listener, frame(identifier_message(control="NET-1")))

    assert b"MSA|AA|NET-1" in received
    study.refresh_from_db()
    assert study.patient == world.patient
    assert not duplicate.identifiers.exists()


def test_a40_moves_the_rcp_cases_requests_ins_and_care_team_to_the_survivor(
    world, django_capture_on_commit_callbacks
):
    from expertise.models import Request
    from portal.selectors import access_generation
    from rcp.models import Case
    from tests.expertise_world import accepted_request, expertise_world
    from tests.rcp_world import case_on_agenda, rcp_world

    # Jeanne's qualified record disappears into the provisional one Tours keeps.
    jeanne = world.patient
    rcp_world(world)
    case = case_on_agenda(world)
    expertise_world(world)
    request = accepted_request(world)
    survivor = duplicate_of_jeanne(world)
    ins = (jeanne.ins_matricule, jeanne.ins_oid)
    generation = access_generation(world.oncologist.user.pk)

    with django_capture_on_commit_callbacks(execute=True):
        result = handle_message(identifier_message(surviving="T100777", merged="T100001"))

    assert ack_fields(result.ack)["MSA"][1] == "AA"
    assert Case.objects.get(pk=case.pk).patient == survivor
    assert Request.objects.get(pk=request.pk).patient == survivor
    survivor.refresh_from_db()
    jeanne.refresh_from_db()
    assert (survivor.ins_matricule, survivor.ins_oid) == ins
    assert survivor.identity_status == "qualifiee"
    assert jeanne.ins_matricule == ""
    # Her referring oncologist and GP follow her, with their roles; their cached grants
    # are forgotten.
    assert set(
        CareRelationship.objects.filter(patient=survivor, ended_at__isnull=True).values_list(
            "professional", "role"
        )
    ) == {(world.oncologist.pk, CareRole.REFERRING), (world.gp.pk, CareRole.GP)}
    assert access_generation(world.oncologist.user.pk) != generation
    oncologist = client_for(world.oncologist.user)
    assert oncologist.get(reverse("patient-detail", args=[survivor.pk])).status_code == 200
    assert oncologist.get(reverse("patient-detail", args=[jeanne.pk])).status_code == 404
    assert oncologist.get(reverse("rcp-case", args=[case.pk])).status_code == 200

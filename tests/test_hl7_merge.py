"""The HL7 feed beyond identities: the admission event, and the merges of IHE PAM France.

A01/A04/A05 announce the admission (portal.events.patient_admitted) once committed. A47
changes an establishment's IPP; A40 merges two IPPs of one establishment, and with them two
regional patients when the identity allows it (same traits, no two different qualified INS).
"""

import pytest

from portal import events
from portal.hl7 import handle_message
from tests.test_hl7_listener import BOURGES, ack_fields, adt


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

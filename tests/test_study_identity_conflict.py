"""A study whose DICOM identity disagrees with the patient it designates is flagged for the
identity-vigilance team exactly as a registration or an HL7 message would be: one conflict
and one security alert, recorded by portal's service (issue 14)."""

from imaging.models import StudyIdentity
from imaging.services import DicomIdentity, resolve_study_owner
from portal.audit import Actor
from portal.models import (
    AuditAction,
    AuditEvent,
    AuditEventId,
    AuditOutcome,
    IdentityConflict,
    IdentityConflictSource,
)


def test_an_outside_cd_of_someone_else_is_flagged_like_any_identity_conflict(world):
    mark = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    # Imported for Jeanne Dupont, the CD says Jean-Pierre Durand, born in 1950.
    owner = resolve_study_owner(
        identity=DicomIdentity(
            patient_id="X999",
            issuer="AUTRE-HOPITAL",
            name="DURAND^Jean-Pierre",
            birth_date="19500101",
            sex="M",
        ),
        target=world.patient,
        by=Actor(user=world.oncologist.user),
    )

    assert (owner.patient, owner.identity) == (None, StudyIdentity.REVIEW)
    conflict = IdentityConflict.objects.get()
    assert (conflict.patient, conflict.source, conflict.matched_on) == (
        world.patient,
        IdentityConflictSource.DICOM,
        "import",
    )
    assert conflict.reported_by == world.oncologist.user
    assert {"birth_name", "first_names", "birth_date"} <= set(conflict.differing_traits)
    assert conflict.incoming_traits["ipp"] == "X999"
    (alert,) = AuditEvent.objects.filter(pk__gt=mark)
    assert (alert.event_id, alert.action, alert.outcome, alert.patient) == (
        AuditEventId.SECURITY_ALERT,
        AuditAction.EXECUTE,
        AuditOutcome.MINOR_FAILURE,
        world.patient,
    )
    assert alert.detail == {
        "reason": "study identity conflict",
        "differing": conflict.differing_traits,
    }

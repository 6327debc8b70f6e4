"""Writes of the shared domain: identity, care relationships, notifications.

Each service runs in one transaction with the audit event it owes, and sends realtime
events only once that transaction has committed.
"""

import datetime as dt
from dataclasses import asdict, dataclass

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.apps import apps
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop
from guardian.shortcuts import assign_perm, remove_perm

from portal import audit, permissions
from portal.access import record_refusal
from portal.audit import Actor
from portal.mail import portal_url
from portal.models import (
    AuditPurpose,
    CareRelationship,
    CareRole,
    Establishment,
    IdentityConflict,
    IdentityConflictSource,
    IdentityStatus,
    Notification,
    Patient,
    PatientGroupObjectPermission,
    PatientIdentifier,
    PatientUserObjectPermission,
    Professional,
    SharingOppositionSource,
    search_key,
)
from portal.notification_models import EmailFrequency, NotificationPreference
from portal.notifications import notify_in_portal as notify
from portal.notifications import user_group_name
from portal.selectors import access_generation_key

PATIENT_VIEW = "portal.view_patient"


# --- Identity --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatientTraits:
    """The five strict INS traits."""

    birth_name: str
    first_names: str
    sex: str
    birth_date: dt.date
    birth_place_code: str

    def normalized(self) -> dict:
        return {
            "birth_name": search_key(self.birth_name),
            "first_names": search_key(self.first_names),
            "sex": self.sex,
            "birth_date": self.birth_date.isoformat(),
            "birth_place_code": self.birth_place_code.upper(),
        }

    @classmethod
    def of(cls, patient: Patient) -> "PatientTraits":
        return cls(
            birth_name=patient.birth_name,
            first_names=patient.first_names,
            sex=patient.sex,
            birth_date=patient.birth_date,
            birth_place_code=patient.birth_place_code,
        )


def differing_traits(a: PatientTraits, b: PatientTraits) -> list[str]:
    left, right = a.normalized(), b.normalized()
    return [name for name in left if left[name] != right[name]]


class IdentityConflictError(Exception):
    """An identifier matched a patient whose traits differ; the conflict was recorded."""

    def __init__(self, conflict: IdentityConflict):
        super().__init__(f"identity conflict on {conflict.matched_on}")
        self.conflict = conflict


@dataclass
class RegistrationResult:
    patient: Patient
    created: bool


def _name_search(*, birth_name: str, used_name: str, first_names: str, used_first_name: str) -> str:
    return " ".join(
        search_key(part) for part in (birth_name, used_name, first_names, used_first_name) if part
    )


def _matching_patients(*, ins_matricule, ins_oid, establishment, ipp) -> dict[int, tuple]:
    """Every patient an incoming identifier designates: {pk: (patient, [identifiers])}."""
    matches: dict[int, tuple] = {}
    if ins_matricule:
        patient = Patient.objects.filter(ins_matricule=ins_matricule, ins_oid=ins_oid).first()
        if patient:
            matches[patient.pk] = (patient, ["ins"])
    if establishment and ipp:
        identifier = (
            PatientIdentifier.objects.filter(establishment=establishment, value=ipp)
            .select_related("patient")
            .first()
        )
        if identifier:
            matches.setdefault(identifier.patient_id, (identifier.patient, []))[1].append("ipp")
    return matches


def _identity_disagreements(*, patient, traits, ins_matricule, ins_oid, several: bool) -> list:
    differing = differing_traits(PatientTraits.of(patient), traits)
    if several:
        # The INS and the IPP designate two different patients.
        differing.append("identifiers")
    if (
        ins_matricule
        and patient.ins_matricule
        and ((patient.ins_matricule, patient.ins_oid) != (ins_matricule, ins_oid))
    ):
        differing.append("ins")
    return differing


def _create_patient(
    *,
    traits,
    used_name,
    used_first_name,
    ins_matricule,
    ins_oid,
    identity_status,
    establishment,
    ipp,
    source,
    care_role,
    by,
) -> Patient:
    patient = Patient(
        **asdict(traits),
        used_name=used_name,
        used_first_name=used_first_name,
        ins_matricule=ins_matricule,
        ins_oid=ins_oid,
        identity_status=identity_status,
        name_search=_name_search(
            birth_name=traits.birth_name,
            used_name=used_name,
            first_names=traits.first_names,
            used_first_name=used_first_name,
        ),
    )
    patient.full_clean()
    patient.save()
    if establishment and ipp:
        PatientIdentifier.objects.create(patient=patient, establishment=establishment, value=ipp)
    detail = {"source": source}
    if care_role and by.is_authenticated:
        # Part of the creation: recorded in the creation event, not as a second one.
        relationship = CareRelationship.objects.create(
            patient=patient,
            professional=by.user.professional,
            role=care_role,
            establishment=establishment,
            created_by=by.user,
        )
        _sync_patient_permission(patient=patient, professional=relationship.professional)
        detail["care_role"] = care_role
    audit.record(
        actor=by,
        event=audit.AuditEventId.PATIENT_RECORD,
        action=audit.AuditAction.CREATE,
        obj=patient,
        detail=detail,
    )
    return patient


def patient_register(
    *,
    traits: PatientTraits,
    by: Actor,
    source: str = IdentityConflictSource.MANUAL,
    establishment: Establishment | None = None,
    ipp: str = "",
    ins_matricule: str = "",
    ins_oid: str = "",
    identity_status: str = IdentityStatus.PROVISIONAL,
    used_name: str = "",
    used_first_name: str = "",
    care_role: str = "",
) -> RegistrationResult:
    """Find or create the patient an identity designates, without ever merging blindly.

    An INS or IPP that designates an existing patient with the same five traits (and no
    other INS) designates that patient. Any disagreement (other traits, another INS, an
    INS and an IPP pointing at two patients) is recorded as an :class:`IdentityConflict`
    for the identity-vigilance team and raises :class:`IdentityConflictError`: nothing is
    attached.

    With ``care_role``, the professional registering a new patient gets that care
    relationship with it; an existing patient is never opened this way.
    """
    ins_matricule = ins_matricule.upper()
    if bool(ins_matricule) != bool(ins_oid):
        raise ValidationError(_("An INS needs both its matricule and its OID."))
    if identity_status == IdentityStatus.QUALIFIED and not ins_matricule:
        raise ValidationError(_("A qualified identity must carry its INS."))
    with transaction.atomic():
        matches = _matching_patients(
            ins_matricule=ins_matricule, ins_oid=ins_oid, establishment=establishment, ipp=ipp
        )
        if not matches:
            patient = _create_patient(
                traits=traits,
                used_name=used_name,
                used_first_name=used_first_name,
                ins_matricule=ins_matricule,
                ins_oid=ins_oid,
                identity_status=identity_status,
                establishment=establishment,
                ipp=ipp,
                source=source,
                care_role=care_role,
                by=by,
            )
            return RegistrationResult(patient=patient, created=True)
        conflicts = []
        for patient, matched_on in matches.values():
            differing = _identity_disagreements(
                patient=patient,
                traits=traits,
                ins_matricule=ins_matricule,
                ins_oid=ins_oid,
                several=len(matches) > 1,
            )
            if not differing:
                continue
            conflict = identity_conflict_record(
                patient=patient,
                source=source,
                establishment=establishment,
                matched_on="+".join(matched_on),
                incoming_traits={**traits.normalized(), "ipp": ipp, "ins": ins_matricule},
                differing=differing,
                by=by,
            )
            conflicts.append(conflict)
        if not conflicts:
            ((existing, _matched_on),) = matches.values()
            # An identity feed completes the identifiers; a person typing an identity in
            # does not get to change a record they may not see.
            if establishment and ipp and source != IdentityConflictSource.MANUAL:
                PatientIdentifier.objects.get_or_create(
                    establishment=establishment, value=ipp, defaults={"patient": existing}
                )
            return RegistrationResult(patient=existing, created=False)
    # Raised after the atomic block so the conflicts and their audit events stay committed.
    raise IdentityConflictError(conflicts[0])


def identity_conflict_record(
    *,
    patient: Patient,
    source: str,
    establishment: Establishment | None,
    matched_on: str,
    incoming_traits: dict,
    differing: list[str],
    by: Actor,
    reason: str = "identity conflict",
    context: dict | None = None,
) -> IdentityConflict:
    """Record that an incoming identity designates ``patient`` but disagrees with it on
    ``differing``, for the identity-vigilance team, with its security-alert audit (DICOM
    DCM 110113). Every feed that finds one calls this: registration, the HL7 feed, the
    imaging ingest. ``context`` says where the identity came from (the HL7 message, say)."""
    conflict = IdentityConflict.objects.create(
        patient=patient,
        source=source,
        establishment=establishment,
        matched_on=matched_on,
        incoming_traits=incoming_traits,
        differing_traits=differing,
        reported_by=by.user if by.is_authenticated else None,
    )
    audit.record(
        actor=by,
        event=audit.AuditEventId.SECURITY_ALERT,
        action=audit.AuditAction.EXECUTE,
        outcome=audit.AuditOutcome.MINOR_FAILURE,
        obj=conflict,
        patient=patient,
        detail={**(context or {}), "reason": reason, "differing": differing},
    )
    return conflict


def identity_conflict_resolve(
    *, conflict: IdentityConflict, resolution: str, by: Actor
) -> IdentityConflict:
    """Close a conflict once the identity-vigilance team has checked the identity."""
    resolution = resolution.strip()
    if not resolution:
        raise ValidationError(_("Say how the conflict was resolved."))
    with transaction.atomic():
        conflict = IdentityConflict.objects.select_for_update().get(pk=conflict.pk)
        if conflict.resolved_at is not None:
            raise ValidationError(_("This conflict was already resolved."))
        conflict.resolved_at = timezone.now()
        conflict.resolved_by = by.user
        conflict.resolution = resolution
        conflict.save(update_fields=["resolved_at", "resolved_by", "resolution"])
        audit.record(
            actor=by,
            event=audit.AuditEventId.PATIENT_RECORD,
            action=audit.AuditAction.UPDATE,
            obj=conflict,
            patient=conflict.patient,
            purpose=audit.AuditPurpose.ADMINISTRATION,
            detail={"identity_conflict": "resolved"},
        )
    return conflict


# --- Care relationships ----------------------------------------------------------------------


def access_changed(*, user_id: int) -> None:
    """Forget the access decisions cached for this user (see selectors.access_generation).

    The generation moves now and again once the transaction commits: a request served
    between the two would otherwise cache a grant that the commit is about to end.
    """
    _bump_access_generation(user_id)

    def after_commit():
        _bump_access_generation(user_id)
        # Open WebSockets (live review) check again at once, not at their next message.
        async_to_sync(get_channel_layer().group_send)(
            user_group_name(user_id), {"type": "access.changed"}
        )

    transaction.on_commit(after_commit)


def _bump_access_generation(user_id: int) -> None:
    key = access_generation_key(user_id)
    if not cache.add(key, 1, timeout=None):
        try:
            cache.incr(key)
        except ValueError:
            cache.set(key, 1, timeout=None)


def _sync_patient_permission(*, patient: Patient, professional: Professional) -> None:
    user = professional.user
    active = CareRelationship.objects.filter(
        patient=patient, professional=professional, ended_at__isnull=True
    ).exists()
    if active:
        assign_perm(PATIENT_VIEW, user, patient)
    else:
        remove_perm(PATIENT_VIEW, user, patient)
        # Cached grants (DICOMweb, live review) must not outlive the access.
        access_changed(user_id=user.pk)


def audit_care_team_change(*, by: Actor, relationship: CareRelationship, detail: dict) -> None:
    """A care relationship begun, ended or changed changes who may open the record: a
    security-attribute change on the patient (DCM 110113)."""
    audit.record(
        actor=by,
        event=audit.AuditEventId.SECURITY_ALERT,
        event_type=audit.AuditEventType.OBJECT_SECURITY_ATTRIBUTES_CHANGED,
        action=audit.AuditAction.EXECUTE,
        obj=relationship,
        patient=relationship.patient,
        purpose=audit.AuditPurpose.CARE,
        detail=detail,
    )


def _refuse_care_team_change(*, by: Actor, relationship_or_patient, patient, reason) -> None:
    """Audit a refused change of the care team (DCM 110113, outcome 4), then refuse it."""
    record_refusal(
        actor=by,
        object_type=relationship_or_patient._meta.label_lower,
        object_id=relationship_or_patient.pk,
        patient=patient,
        purpose=audit.AuditPurpose.CARE,
        reason=reason,
    )
    raise PermissionDenied(reason)


def care_relationship_add(
    *,
    patient: Patient,
    professional: Professional,
    role: str,
    by: Actor,
    establishment: Establishment | None = None,
) -> CareRelationship:
    """Give ``professional`` access to ``patient`` for ``role``; a permission change, audited.

    Who may add: a clinician of the patient's care team, or the establishment's
    administration (portal.permissions.may_add_to_care_team). Who may be added: a
    professional of the national directory (an RPPS number), whose account is active, and
    who takes care of patients (physician, midwife, nurse): a hospital opens a record to a
    colleague who will treat the patient, not to any account that happens to exist.
    """
    if by.user is not None and not permissions.may_add_to_care_team(user=by.user, patient=patient):
        _refuse_care_team_change(
            by=by, relationship_or_patient=patient, patient=patient, reason="may not add"
        )
    if not professional.rpps:
        raise ValidationError(
            _("Only a health professional with an RPPS number can join a care team.")
        )
    if not permissions.may_join_care_team(professional=professional):
        raise ValidationError(_("Only an active clinician of the directory can join a care team."))
    with transaction.atomic():
        if role == CareRole.GP:
            current_gp = CareRelationship.objects.filter(
                patient=patient, role=CareRole.GP, ended_at__isnull=True
            ).first()
            if current_gp and current_gp.professional_id != professional.pk:
                raise ValidationError(_("This patient already has a general practitioner."))
        relationship, created = CareRelationship.objects.get_or_create(
            patient=patient,
            professional=professional,
            role=role,
            ended_at=None,
            defaults={
                "establishment": establishment,
                "created_by": by.user if by.is_authenticated else None,
            },
        )
        if created:
            _sync_patient_permission(patient=patient, professional=professional)
            audit_care_team_change(
                by=by,
                relationship=relationship,
                detail={"granted_to": professional.user.email, "role": role},
            )
    return relationship


class CareRelationshipAlreadyEnded(ValidationError):
    """The relationship had already ended (a second click, or someone else was quicker)."""


def end_running_relationship(*, relationship: CareRelationship, by: Actor, reason: str) -> bool:
    """End ``relationship`` if it still runs: one conditioned UPDATE, so that of two people
    ending it at once only one does (False for the other). Who ended it and why are kept."""
    return bool(
        CareRelationship.objects.filter(pk=relationship.pk, ended_at__isnull=True).update(
            ended_at=timezone.now(),
            ended_by=by.user if by.is_authenticated else None,
            end_reason=reason,
        )
    )


def care_relationship_end(
    *, relationship: CareRelationship, by: Actor, reason: str = ""
) -> CareRelationship:
    """End a care relationship; the professional keeps access only through another one.

    A person must be allowed (portal.permissions.may_end_care_relationship) and give a
    reason, stored with who ended it; the portal itself (an actor without a user) may omit
    it. One guarded step: the row is ended only if still active, with its audit event in
    the same transaction, so two removals at once end it once and the second is told
    (CareRelationshipAlreadyEnded). The removed professional is notified unless they left.
    """
    reason = reason.strip()
    if by.user is not None:
        if not permissions.may_end_care_relationship(user=by.user, relationship=relationship):
            _refuse_care_team_change(
                by=by,
                relationship_or_patient=relationship,
                patient=relationship.patient,
                reason="may not end",
            )
        if not reason:
            raise ValidationError(_("Say why this professional leaves the care team."))
    with transaction.atomic():
        if not end_running_relationship(relationship=relationship, by=by, reason=reason):
            raise CareRelationshipAlreadyEnded(
                _("%(name)s had already left the care team.")
                % {"name": relationship.professional.display_name}
            )
        relationship = CareRelationship.objects.select_related("patient", "professional__user").get(
            pk=relationship.pk
        )
        _sync_patient_permission(
            patient=relationship.patient, professional=relationship.professional
        )
        audit_care_team_change(
            by=by,
            relationship=relationship,
            detail={
                "revoked_from": relationship.professional.user.email,
                "role": relationship.role,
                "reason": reason,
            },
        )
        removed = relationship.professional.user
        if by.user is not None and removed.pk != by.user.pk:
            # No patient named (portal.Notification): who ended the access, and that it ended.
            notify(
                recipient=removed,
                message=gettext_noop("%(by)s removed you from a patient's care team."),
                params={"by": _actor_display_name(by.user)},
            )
    return relationship


def _actor_display_name(user) -> str:
    try:
        return user.professional.display_name
    except ObjectDoesNotExist:
        return user.get_full_name() or user.email


# --- Opposition to sharing between establishments -------------------------------------------


SHARING_OPPOSITION_SOURCES = frozenset(SharingOppositionSource.values)


class SharingOppositionUnchanged(ValidationError):
    """The opposition was already in the state asked for (a second click, a repeated message)."""


def _patient_reader_ids(patient: Patient) -> set[int]:
    """The users whose access decisions about ``patient`` may be cached: those holding an
    object permission on the record (care relationships grant it), and those the apps above
    let reach the patient's studies (committee members, experts), each app answering through
    its AppConfig's ``patient_reader_ids(patient=)`` (portal must not import them)."""
    readers = set(
        PatientUserObjectPermission.objects.filter(content_object=patient).values_list(
            "user_id", flat=True
        )
    )
    for config in apps.get_app_configs():
        reader_ids = getattr(config, "patient_reader_ids", None)
        if reader_ids is not None:
            readers.update(reader_ids(patient=patient))
    return readers


def _opposition_establishment(*, patient: Patient, by: Actor, establishment) -> Establishment:
    """The establishment taking the patient's word, refused (audited) unless it is one of the
    patient's establishments (an IPP of the patient there): for a user, the one they work for
    (portal.permissions.opposition_establishment: what they name is not trusted); for a
    feed, the establishment that sent the message."""
    if by.user is not None:
        if permissions.may_change_sharing_opposition(user=by.user, patient=patient):
            return permissions.opposition_establishment(user=by.user, patient=patient)
    elif (
        establishment is not None
        and PatientIdentifier.objects.filter(patient=patient, establishment=establishment).exists()
    ):
        return establishment
    _refuse_care_team_change(
        by=by,
        relationship_or_patient=patient,
        patient=patient,
        reason="may not change the opposition to sharing",
    )


def _sharing_opposition_set(
    *, patient: Patient, opposed: bool, by: Actor, source: str, establishment
) -> Patient:
    if source not in SHARING_OPPOSITION_SOURCES:
        raise ValueError(f"unknown source of the opposition: {source!r}")
    establishment = _opposition_establishment(patient=patient, by=by, establishment=establishment)
    recorded = {
        "sharing_opposed": opposed,
        "sharing_opposed_at": None,
        "sharing_opposition_source": source if opposed else "",
        "sharing_opposition_establishment": establishment if opposed else None,
        "sharing_opposition_by": by.user if opposed else None,
    }
    with transaction.atomic():
        now = timezone.now()
        if opposed:
            recorded["sharing_opposed_at"] = now
        # One guarded step on the previous state: two clicks, or a click and a message,
        # change it once.
        changed = Patient.objects.filter(pk=patient.pk, sharing_opposed=not opposed).update(
            **recorded, updated_at=now
        )
        if not changed:
            raise SharingOppositionUnchanged(
                _("The patient's opposition to sharing was already recorded.")
                if opposed
                else _("The patient did not oppose sharing.")
            )
        audit.record(
            actor=by,
            event=audit.AuditEventId.PATIENT_RECORD,
            action=audit.AuditAction.UPDATE,
            obj=patient,
            purpose=AuditPurpose.CARE,
            detail={
                "sharing_opposed": opposed,
                "source": source,
                "establishment": establishment.finess,
            },
        )
        # Grants cached for the viewer and DICOMweb were decided on the previous state.
        for user_id in _patient_reader_ids(patient):
            access_changed(user_id=user_id)
    for field, value in recorded.items():
        setattr(patient, field, value)
    patient.updated_at = now
    return patient


def sharing_opposition_record(
    *, patient: Patient, by: Actor, source: str, establishment: Establishment | None = None
) -> Patient:
    """Record the patient's opposition to the sharing of their data between establishments
    (Code de la santé publique, L1110-4): from then on, each establishment sees only the
    studies it made (imaging.selectors.shared_with_establishments) and the documents its
    people gave (portal.sharing.uploads_shared_with).

    Who: only the patient's establishments (an IPP of the patient there): a clinician of the
    care team or the administration working there (portal.permissions.
    may_change_sharing_opposition), or the HL7 feed of such an establishment (``by`` without
    a user, ``establishment`` the sender). ``source`` is "portal" or "hl7". The source, the
    establishment and the user are kept on the patient and in the audit event.
    Raises PermissionDenied (audited) for anyone else, SharingOppositionUnchanged when it was
    already recorded."""
    return _sharing_opposition_set(
        patient=patient, opposed=True, by=by, source=source, establishment=establishment
    )


def sharing_opposition_lift(
    *, patient: Patient, by: Actor, source: str, establishment: Establishment | None = None
) -> Patient:
    """Lift the patient's opposition to sharing (same rules as sharing_opposition_record)."""
    return _sharing_opposition_set(
        patient=patient, opposed=False, by=by, source=source, establishment=establishment
    )


# --- Merging two records of one person ----------------------------------------------------------


IDENTITY_STATUS_RANK = [
    IdentityStatus.PROVISIONAL,
    IdentityStatus.RETRIEVED,
    IdentityStatus.VALIDATED,
    IdentityStatus.QUALIFIED,
]


class PatientMergeRefused(ValidationError):
    """The two records cannot be merged automatically.

    ``reason``: "qualified_ins" (two different qualified INS: two persons, refused outright)
    or "identity" (the traits, or two INS, disagree: a question for identity vigilance,
    ``differing`` says which)."""

    def __init__(self, message, *, reason: str, differing: list[str]):
        super().__init__(message)
        self.reason = reason
        self.differing = differing


def merge_disagreements(*, source: Patient, target: Patient) -> tuple[str, list[str]]:
    """Why ``source`` and ``target`` may not be merged: ("", []) when they may."""
    if (
        source.ins_matricule
        and target.ins_matricule
        and (source.ins_matricule, source.ins_oid) != (target.ins_matricule, target.ins_oid)
    ):
        both_qualified = (
            source.identity_status == IdentityStatus.QUALIFIED
            and target.identity_status == IdentityStatus.QUALIFIED
        )
        return ("qualified_ins" if both_qualified else "identity"), ["ins"]
    differing = differing_traits(PatientTraits.of(source), PatientTraits.of(target))
    return ("identity", differing) if differing else ("", [])


# Why a GP's relationship ended when another GP was declared (portal.gp, a record merge).
GP_REPLACED_REASON = "another GP declared"


def declared_since(relationship: CareRelationship) -> dt.date:
    """The date a GP relationship starts from: the declared one, else the day it was made."""
    return relationship.started_on or timezone.localdate(relationship.started_at)


def current_gp_relationship(patient: Patient) -> CareRelationship | None:
    """The patient's running GP relationship (at most one: care_relationship_one_gp)."""
    return (
        CareRelationship.objects.filter(patient=patient, role=CareRole.GP, ended_at__isnull=True)
        .select_related("professional__user", "establishment")
        .first()
    )


def _give_way_to_the_newer_gp(*, source: Patient, target: Patient, by: Actor) -> int | None:
    """Both records have a declared GP: the newer declaration is the patient's choice. When it
    is ``source``'s, ``target``'s GP is ended as replaced (portal.gp's reason) and stays in
    the care team as a member, so that ``source``'s GP moves over as the GP; returns the user
    whose access changed, if any."""
    theirs, ours = current_gp_relationship(source), current_gp_relationship(target)
    if theirs is None or ours is None or declared_since(theirs) <= declared_since(ours):
        return None
    professional = ours.professional
    end_running_relationship(relationship=ours, by=by, reason=GP_REPLACED_REASON)
    audit_care_team_change(
        by=by,
        relationship=ours,
        detail={
            "revoked_from": professional.user.email,
            "role": CareRole.GP,
            "reason": GP_REPLACED_REASON,
            "gp_declared": theirs.professional.rpps,
            "merged_from": source.pk,
        },
    )
    _stay_as_member(patient=target, relationship=ours, by=by)
    _sync_patient_permission(patient=target, professional=professional)
    return professional.user_id


def _stay_as_member(*, patient: Patient, relationship: CareRelationship, by: Actor) -> None:
    """``relationship``'s professional joins ``patient``'s care team as a member, when he
    still may (an account closed since does not)."""
    if permissions.may_join_care_team(professional=relationship.professional):
        care_relationship_add(
            patient=patient,
            professional=relationship.professional,
            role=CareRole.CARE_TEAM,
            by=by,
            establishment=relationship.establishment,
        )


def _move_care_team(*, source: Patient, target: Patient, by: Actor) -> set[int]:
    """Re-create ``source``'s active care relationships on ``target`` through the
    care-relationship services (so the object permissions follow), then end them on
    ``source``; returns the users whose access moved. Of two declared GPs, the newer
    declaration's stays the GP, the other a member of the care team."""
    moved = set()
    replaced = _give_way_to_the_newer_gp(source=source, target=target, by=by)
    if replaced is not None:
        moved.add(replaced)
    relationships = CareRelationship.objects.filter(
        patient=source, ended_at__isnull=True
    ).select_related("professional__user", "establishment")
    for relationship in relationships:
        professional = relationship.professional
        try:
            survivor = care_relationship_add(
                patient=target,
                professional=professional,
                role=relationship.role,
                by=by,
                establishment=relationship.establishment,
            )
            if relationship.source and not survivor.source:
                # A declared GP (portal.gp) keeps the date and the source of his declaration.
                CareRelationship.objects.filter(pk=survivor.pk).update(
                    started_on=relationship.started_on, source=relationship.source
                )
        except ValidationError:
            # The survivor already has another GP, or the professional may no longer join
            # (account closed): a GP stays in the team as a member; the others lose access.
            _stay_as_member(patient=target, relationship=relationship, by=by)
        care_relationship_end(relationship=relationship, by=by, reason="patient records merged")
        moved.add(professional.user_id)
    return moved


def patient_merge(
    *, source: Patient, target: Patient, by: Actor, detail: dict | None = None
) -> Patient:
    """Merge ``source`` into ``target`` (the survivor): two records of one person.

    Only when the five traits agree and the records do not carry two different INS
    (PatientMergeRefused otherwise, nothing written). In one transaction with its audit
    events: the survivor takes the local identifiers, the identity conflicts, the care team
    (and the permissions it grants), the INS if it had none, the opposition to sharing if
    either record carried it, and every row of the higher apps (each AppConfig's
    ``merge_patient(*, source, target)``: studies, RCP cases, tele-expertise requests).

    ``source`` is kept, emptied, never deleted: the audit trail references it (PROTECT) and
    its access report must stay readable. Without identifiers or permissions it opens for
    nobody (404), and no identity feed can designate it again.
    """
    if source.pk == target.pk:
        raise ValueError("a patient cannot be merged into itself")
    with transaction.atomic():
        locked = {
            p.pk: p
            for p in Patient.objects.select_for_update().filter(pk__in=[source.pk, target.pk])
        }
        source, target = locked[source.pk], locked[target.pk]
        reason, differing = merge_disagreements(source=source, target=target)
        if reason == "qualified_ins":
            raise PatientMergeRefused(
                _("The two records carry two different qualified INS: two persons."),
                reason=reason,
                differing=differing,
            )
        if reason:
            raise PatientMergeRefused(
                _("The two records disagree (%(differing)s): identity vigilance must decide.")
                % {"differing": ", ".join(differing)},
                reason=reason,
                differing=differing,
            )
        identifiers = [str(i) for i in source.identifiers.select_related("establishment")]
        source.identifiers.update(patient=target)
        IdentityConflict.objects.filter(patient=source).update(patient=target)
        readers = _move_care_team(source=source, target=target, by=by)
        # Any other grant on the emptied record goes: it must open for nobody.
        readers |= _patient_reader_ids(source)
        PatientUserObjectPermission.objects.filter(content_object=source).delete()
        PatientGroupObjectPermission.objects.filter(content_object=source).delete()
        for config in apps.get_app_configs():
            merge = getattr(config, "merge_patient", None)
            if merge is not None:
                merge(source=source, target=target)
        changed = []
        if source.ins_matricule and not target.ins_matricule:
            target.ins_matricule, target.ins_oid = source.ins_matricule, source.ins_oid
            changed.append("ins")
        # The identity only rises, and only with the INS it was checked against.
        if target.ins_matricule == source.ins_matricule and IDENTITY_STATUS_RANK.index(
            source.identity_status
        ) > IDENTITY_STATUS_RANK.index(target.identity_status):
            target.identity_status = source.identity_status
            changed.append("identity_status")
        if source.sharing_opposed and not target.sharing_opposed:
            # The person opposed sharing through one of the records: it stands.
            target.sharing_opposed = True
            target.sharing_opposed_at = source.sharing_opposed_at
            target.sharing_opposition_source = source.sharing_opposition_source
            target.sharing_opposition_establishment_id = source.sharing_opposition_establishment_id
            target.sharing_opposition_by_id = source.sharing_opposition_by_id
            changed.append("sharing_opposed")
        now = timezone.now()
        # The unique INS moves: the emptied record lets it go first.
        Patient.objects.filter(pk=source.pk).update(
            ins_matricule="",
            ins_oid="",
            identity_status=IdentityStatus.PROVISIONAL,
            updated_at=now,
            merged_into=target,
            merged_at=now,
        )
        # Records merged into the source earlier now lead to the survivor.
        Patient.objects.filter(merged_into=source).update(merged_into=target)
        target.updated_at = now
        target.save()
        common = {**(detail or {}), "merged_patient": source.pk, "merged_identifiers": identifiers}
        audit.record(
            actor=by,
            event=audit.AuditEventId.PATIENT_RECORD,
            action=audit.AuditAction.UPDATE,
            obj=target,
            purpose=AuditPurpose.ADMINISTRATION,
            detail={**common, "changed": changed},
        )
        audit.record(
            actor=by,
            event=audit.AuditEventId.PATIENT_RECORD,
            action=audit.AuditAction.DELETE,
            object_type=source._meta.label_lower,
            object_id=str(source.pk),
            patient=target,
            purpose=AuditPurpose.ADMINISTRATION,
            detail={**common, "merged_into": target.pk},
        )
        for user_id in readers | _patient_reader_ids(target):
            access_changed(user_id=user_id)
    return target


# --- Notifications (left by portal.notifications) ------------------------------------------


def notifications_mark_read_for_url(*, user, url: str) -> int:
    """Mark read ``user``'s unread notifications that link to the page at ``url`` (a path):
    whoever opens the page a notification announced has seen it, and his bell says so. One
    UPDATE. Notifications store the path (the portal's pages) or the absolute address
    (e-mailed ones, portal.mail.portal_url), sometimes with an anchor in the page."""
    condition = Q()
    for address in (url, portal_url(url)):
        condition |= Q(url=address) | Q(url__startswith=f"{address}#")
    return (
        Notification.objects.filter(recipient=user, read_at__isnull=True)
        .filter(condition)
        .update(read_at=timezone.now())
    )


def notification_mark_read(*, user, notification_ids: list[int] | None = None) -> int:
    notifications = Notification.objects.filter(recipient=user, read_at__isnull=True)
    if notification_ids is not None:
        notifications = notifications.filter(pk__in=notification_ids)
    return notifications.update(read_at=timezone.now())


# --- Notification e-mails: each, a daily digest, or none ---------------------------------------


def notification_preference_set(*, user, email: str, language: str, by: Actor):
    """``user`` chooses how the portal's e-mails reach him (portal.notifications) and in which
    language; audited. Raises PermissionDenied for anyone else (audited)."""
    if not permissions.may_change_notification_preference(user=by.user, owner=user):
        record_refusal(
            actor=by,
            object_type="portal.user",
            object_id=user.pk,
            reason="notification preference of another user",
        )
        raise PermissionDenied(_("You may only choose your own notification e-mails."))
    if email not in EmailFrequency.values or language not in dict(settings.LANGUAGES):
        raise ValidationError(_("Choose how you want to receive notification e-mails."))
    with transaction.atomic():
        preference, _created = NotificationPreference.objects.select_for_update().get_or_create(
            user=user
        )
        before = {"email": preference.email, "language": preference.language}
        preference.email, preference.language = email, language
        preference.save(update_fields=["email", "language", "updated_at"])
        audit.record(
            actor=by,
            event=audit.AuditEventId.APPLICATION_ACTIVITY,
            action=audit.AuditAction.UPDATE,
            obj=preference,
            detail={"before": before, "after": {"email": email, "language": language}},
        )
    return preference

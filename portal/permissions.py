"""Who may act on the shared domain: the ``may_*`` predicates.

Views call them to decide what to offer; services call them again to refuse, whoever their
caller is. An actor without a user is the portal itself (seeding, identity feeds, jobs):
those callers are code, not people, and are not asked.
"""

from django.core.exceptions import ObjectDoesNotExist

from portal.models import (
    CareRelationship,
    CareRole,
    Establishment,
    Patient,
    PatientIdentifier,
    Profession,
    Professional,
)
from portal.roles import REGIONAL_ADMIN, role_codes_of

# The model permission "Can change care relationship", held by the admissions office of an
# establishment (a group in the Django admin). Alone it opens nothing: see
# is_establishment_administration.
CARE_TEAM_ADMINISTRATION_PERMISSION = "portal.change_carerelationship"

# Who takes care of patients: the only professions that join a care team or run one.
CLINICAL_PROFESSIONS = frozenset({Profession.PHYSICIAN, Profession.MIDWIFE, Profession.NURSE})


def _professional(user) -> Professional | None:
    if not getattr(user, "is_authenticated", False):
        return None
    try:
        return user.professional
    except ObjectDoesNotExist:
        return None


def is_establishment_administration(*, user, patient: Patient) -> bool:
    """``user`` runs the care teams of an establishment that holds ``patient``'s record.

    The narrowest notion the portal has: the care-relationship permission *and* an
    affiliation to an establishment where the patient has a local identifier (IPP). The
    permission alone, a superuser or staff status do not make one the administration of
    every patient of the region.
    """
    professional = _professional(user)
    if professional is None or not user.has_perm(CARE_TEAM_ADMINISTRATION_PERMISSION):
        return False
    return PatientIdentifier.objects.filter(
        patient=patient, establishment__affiliations__professional=professional
    ).exists()


def may_join_care_team(*, professional: Professional) -> bool:
    """A professional of the national directory (RPPS), active, and a clinician."""
    return bool(
        professional.rpps
        and professional.user.is_active
        and professional.profession in CLINICAL_PROFESSIONS
    )


def _active_roles(*, user, patient: Patient) -> set[str]:
    return set(
        CareRelationship.objects.filter(
            patient=patient, professional__user=user, ended_at__isnull=True
        ).values_list("role", flat=True)
    )


def may_add_to_care_team(*, user, patient: Patient) -> bool:
    """A clinician of the patient's care team (any role), or the establishment's
    administration, brings a colleague in."""
    professional = _professional(user)
    if professional is None:
        return False
    if professional.profession in CLINICAL_PROFESSIONS and _active_roles(
        user=user, patient=patient
    ):
        return True
    return is_establishment_administration(user=user, patient=patient)


def opposition_establishment(*, user, patient: Patient) -> Establishment | None:
    """The establishment for which ``user`` may take the patient's word on sharing between
    establishments, or None: one of the patient's establishments (it holds an IPP of the
    patient, the same notion as is_establishment_administration) that ``user`` works for,
    their primary one first. The opposition is the patient's relation with the
    establishments that hold their record: a GP, a committee member or an expert elsewhere,
    whatever their role, does not change it."""
    professional = _professional(user)
    if professional is None:
        return None
    return (
        Establishment.objects.filter(
            patient_identifiers__patient=patient, affiliations__professional=professional
        )
        .order_by("-affiliations__is_primary", "name", "pk")
        .first()
    )


def may_change_sharing_opposition(*, user, patient: Patient) -> bool:
    """Record or lift the patient's opposition to sharing (L1110-4): someone of one of the
    patient's establishments (opposition_establishment) who either is a clinician of the
    patient's care team or runs the establishment's care teams (the admissions office takes
    the patient's word too)."""
    professional = _professional(user)
    if professional is None or opposition_establishment(user=user, patient=patient) is None:
        return False
    if professional.profession in CLINICAL_PROFESSIONS and _active_roles(
        user=user, patient=patient
    ):
        return True
    return user.has_perm(CARE_TEAM_ADMINISTRATION_PERMISSION)


def _may_end(*, relationship: CareRelationship, user, my_roles: set[str], admin: bool) -> bool:
    if admin:
        return True
    if relationship.role != CareRole.CARE_TEAM:
        # The referring doctor and the GP are changed by the administration: the patient
        # must not lose them to a colleague's click, nor by their own.
        return False
    return relationship.professional.user_id == user.pk or CareRole.REFERRING in my_roles


def may_end_care_relationship(*, user, relationship: CareRelationship) -> bool:
    """Who may take a professional out of a patient's care team.

    A care-team member: the patient's referring doctor, the establishment's administration,
    or the member themself (leaving). The referring doctor and the GP: the administration
    only. Nobody else, a GP or a fellow member included.
    """
    if _professional(user) is None:
        return False
    patient = relationship.patient
    return _may_end(
        relationship=relationship,
        user=user,
        my_roles=_active_roles(user=user, patient=patient),
        admin=is_establishment_administration(user=user, patient=patient),
    )


def removable_relationships(
    *, user, patient: Patient, care_team: list[CareRelationship]
) -> set[int]:
    """The ids of the relationships of ``care_team`` (``patient``'s active ones, loaded)
    that ``user`` may end: the record page's "Remove" buttons, without a query per row."""
    if not care_team or _professional(user) is None:
        return set()
    my_roles = {r.role for r in care_team if r.professional.user_id == user.pk}
    admin = is_establishment_administration(user=user, patient=patient)
    return {
        r.pk
        for r in care_team
        if _may_end(relationship=r, user=user, my_roles=my_roles, admin=admin)
    }


# --- Self-service administration (portal.administration, portal.views_admin) ----------------
#
# A regional administrator holds the role (portal.roles.REGIONAL_ADMIN): the permission alone,
# or a superuser's status, does not make one. An establishment's administrator is the notion of
# is_establishment_administration without a patient: the care-relationship permission (the
# role ESTABLISHMENT_ADMIN carries it) and an affiliation to the establishment.


# Carried by the regional administrator's role (portal.roles); the role, not the permission,
# makes one (is_regional_administrator).
REGIONAL_ADMINISTRATION_PERMISSION = "portal.change_establishment"


def is_regional_administrator(user) -> bool:
    return bool(getattr(user, "is_active", False)) and REGIONAL_ADMIN in role_codes_of(user)


def administered_establishments(user):
    """The establishments ``user`` administers: every one for a regional administrator, else
    those they are affiliated to when they hold the care-relationship permission."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return Establishment.objects.none()
    if is_regional_administrator(user):
        return Establishment.objects.all()
    professional = _professional(user)
    if professional is None or not user.has_perm(CARE_TEAM_ADMINISTRATION_PERMISSION):
        return Establishment.objects.none()
    return Establishment.objects.filter(affiliations__professional=professional)


def may_open_administration(user) -> bool:
    """The "Administration" menu entry: a regional or an establishment's administrator."""
    # Asked on every page: the permissions (cached on the user for the request, the menu
    # asks others) rule out most users without a query of their own.
    if not getattr(user, "is_authenticated", False) or not (
        user.has_perm(REGIONAL_ADMINISTRATION_PERMISSION)
        or user.has_perm(CARE_TEAM_ADMINISTRATION_PERMISSION)
    ):
        return False
    return administered_establishments(user).exists()


def may_manage_establishments(user) -> bool:
    """Create establishments, edit their identity, contacts and DICOM declaration."""
    return is_regional_administrator(user)


def may_administer_establishment(*, user, establishment: Establishment) -> bool:
    """Manage ``establishment``'s professionals (affiliations) and their scoped roles."""
    return administered_establishments(user).filter(pk=establishment.pk).exists()


def may_change_role(*, user, role, holder) -> bool:
    """Grant ``role`` (portal.roles.Role) to ``holder`` (a user) or revoke it.

    A regional administrator: every role, for anyone. An establishment's administrator: the
    establishment-scoped roles only, for a professional affiliated to an establishment they
    administer. Nobody else.
    """
    if is_regional_administrator(user):
        return True
    if not role.establishment_scoped:
        return False
    return (
        administered_establishments(user).filter(affiliations__professional__user=holder).exists()
    )


# --- Access without a care relationship (portal.access_requests, portal.emergency) -----------


def may_ask_for_access(*, user) -> bool:
    """Who may look a patient up in the regional index and ask for their record, or open it
    in an emergency: an active clinician of the national directory (may_join_care_team).
    A coordinator, the data protection officer or an administrator treats no patient."""
    professional = _professional(user)
    return professional is not None and may_join_care_team(professional=professional)


def is_referring_doctor(*, user, patient: Patient) -> bool:
    return CareRole.REFERRING in _active_roles(user=user, patient=patient)


def may_answer_access_request(*, user, patient: Patient) -> bool:
    """The patient's referring doctor, or the administration of an establishment holding the
    patient's record, grants, refuses or renews an access request."""
    if _professional(user) is None:
        return False
    return is_referring_doctor(user=user, patient=patient) or is_establishment_administration(
        user=user, patient=patient
    )


# --- The declared general practitioner (portal.gp) ----------------------------------------------


def may_declare_gp(*, user, patient: Patient) -> bool:
    """Declare the patient's general practitioner ("médecin traitant"), which ends the previous
    one's access: as for the opposition to sharing, someone who takes care of the patient (a
    clinician of the care team, the current GP included, who records the patient's new choice)
    or the administration of an establishment holding the patient's record. A GP is the
    patient's choice, told to those who treat them: a committee member, an expert or an
    account without a clinical profession does not record it. The HL7 feed of an establishment
    (an actor without a user) is code and is not asked."""
    professional = _professional(user)
    if professional is None:
        return False
    if professional.profession in CLINICAL_PROFESSIONS and _active_roles(
        user=user, patient=patient
    ):
        return True
    return is_establishment_administration(user=user, patient=patient)


def may_change_notification_preference(*, user, owner) -> bool:
    """How someone is told is his own choice: nobody sets it for him."""
    return bool(getattr(user, "is_authenticated", False)) and user.pk == owner.pk

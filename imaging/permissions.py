"""Who may act on imaging's objects: asked by views (to show a button) and services (to refuse).

DICOMDIR packages (imaging.packages): someone who may open the record for care and sees every
study. Shares with a professional without an account (imaging.shares): a member of the
patient's care team shares; the author, the patient's referring doctor or the data protection
officer revokes.
"""

from django.db.models import Q
from django.utils.translation import gettext as _

from imaging.selectors import studies_visible_to
from portal.access import may_open_patient
from portal.models import CareRelationship, Establishment, Patient
from portal.permissions import (
    CARE_TEAM_ADMINISTRATION_PERMISSION,
    REGIONAL_ADMINISTRATION_PERMISSION,
    administered_establishments,
    is_referring_doctor,
)
from portal.selectors import AUDITOR_PERMISSION


def may_package_studies(*, user, patient, studies) -> bool:
    """Whether ``user`` may take ``studies`` of ``patient`` away as a DICOMDIR package.

    The images leave the portal: only someone who may open the patient's record for care
    (not a read-only grant, not a committee seeing one case's study) and who sees every one
    of these studies, the patient's opposition to sharing applied."""
    if not getattr(user, "is_authenticated", False) or patient is None:
        return False
    wanted = {study.pk for study in studies}
    if not wanted or not may_open_patient(user, patient.pk):
        return False
    visible = set(
        studies_visible_to(user, include_read_only=False)
        .filter(patient=patient, pk__in=wanted)
        .values_list("pk", flat=True)
    )
    return visible == wanted


def _in_care_team(user, patient: Patient) -> bool:
    return CareRelationship.objects.filter(
        patient=patient, professional__user=user, ended_at__isnull=True
    ).exists()


def share_refusal(user, patient: Patient) -> str | None:
    """Why ``user`` may not share ``patient``'s images and documents, or None if he may.

    The recipient is outside the care team by definition: the patient's opposition to sharing
    (CSP L1110-4, portal.sharing) forbids it whoever asks."""
    if not getattr(user, "is_authenticated", False):
        return _("Sign in to share.")
    if not _in_care_team(user, patient) or not may_open_patient(user, patient.pk):
        return _("Only a member of the patient's care team may share their record.")
    if patient.sharing_opposed:
        return _(
            "The patient opposes the sharing of their record outside the care team: "
            "nothing can be shared with a doctor outside it."
        )
    return None


def may_share(user, patient: Patient) -> bool:
    return share_refusal(user, patient) is None


def may_revoke_share(user, share) -> bool:
    """The author, the patient's referring doctor, or the data protection officer."""
    if not getattr(user, "is_authenticated", False):
        return False
    return (
        share.author_id == user.pk
        or is_referring_doctor(user=user, patient=share.patient)
        or user.has_perm(AUDITOR_PERMISSION)
    )


# --- Usage statements (imaging.metering) ------------------------------------------------------

STATEMENTS_PERMISSION = "imaging.view_statement"  # every establishment's: the programme
AFFILIATED_STATEMENTS_PERMISSION = "imaging.view_affiliated_statements"  # the billing office


def statement_establishments(user):
    """The establishments whose usage statements ``user`` may read: every one for the
    regional programme; those they are affiliated to for a billing office; those they
    administer (portal.permissions.administered_establishments)."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return Establishment.objects.none()
    if user.has_perm(STATEMENTS_PERMISSION):
        return Establishment.objects.all()
    allowed = Q(pk__in=administered_establishments(user).values("pk"))
    if user.has_perm(AFFILIATED_STATEMENTS_PERMISSION):
        allowed |= Q(pk__in=Establishment.objects.filter(affiliations__professional__user=user))
    return Establishment.objects.filter(allowed)


def may_view_statements(user) -> bool:
    """The "Usage statements" page: someone who may read the statements of one establishment."""
    # Asked by the home page: the permissions (cached on the user for the request) rule out
    # most users without a query of their own.
    if not getattr(user, "is_authenticated", False) or not any(
        user.has_perm(permission)
        for permission in (
            STATEMENTS_PERMISSION,
            AFFILIATED_STATEMENTS_PERMISSION,
            REGIONAL_ADMINISTRATION_PERMISSION,
            CARE_TEAM_ADMINISTRATION_PERMISSION,
        )
    ):
        return False
    return statement_establishments(user).exists()


def may_view_statement(*, user, statement) -> bool:
    return statement_establishments(user).filter(pk=statement.establishment_id).exists()


# --- The programme's indicators (imaging.activity, issue 17) -----------------------------------

# Every establishment's figures: the regional programme.
READ_REGION_ACTIVITY_PERMISSION = "imaging.view_activitymonth"
# Those of the holder's establishments only (the establishment-scoped role of a director).
READ_ESTABLISHMENT_ACTIVITY_PERMISSION = "imaging.view_establishment_activity"


def _reads_activity_as(user) -> str | None:
    """The scope of ``user``'s reading: "region", "establishment" or None. Granted, not
    implied: a superuser's blanket rights run the portal, they do not make him a reader of
    every establishment's activity (as rcp.permissions.may_see_every_committee)."""
    if not getattr(user, "is_authenticated", False) or user.is_superuser:
        return None
    if user.has_perm(READ_REGION_ACTIVITY_PERMISSION):
        return "region"
    if user.has_perm(READ_ESTABLISHMENT_ACTIVITY_PERMISSION):
        return "establishment"
    return None


def activity_establishments(user):
    """The establishments whose lines of the imaging indicators ``user`` reads: every one for
    the regional programme, a director's own (his affiliations), none for anybody else. The
    region's totals are shown to all of them."""
    from portal.models import Establishment

    scope = _reads_activity_as(user)
    if scope == "region":
        return Establishment.objects.all()
    if scope == "establishment":
        return Establishment.objects.filter(affiliations__professional__user=user).distinct()
    return Establishment.objects.none()


def may_read_activity(user) -> bool:
    """Whether the programme's imaging indicators are ``user``'s to read: the regional
    programme, or a director of at least one establishment."""
    scope = _reads_activity_as(user)
    if scope == "establishment":
        return activity_establishments(user).exists()
    return scope == "region"

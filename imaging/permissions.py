"""Who may act on the imaging objects: predicates asked by views (to show a button) and by
services (to refuse)."""

from django.db.models import Q

from imaging.selectors import studies_visible_to
from portal.access import may_open_patient
from portal.models import Establishment
from portal.permissions import (
    CARE_TEAM_ADMINISTRATION_PERMISSION,
    REGIONAL_ADMINISTRATION_PERMISSION,
    administered_establishments,
)


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

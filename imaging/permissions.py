"""Who may act on the imaging objects: predicates asked by views (to show a button) and by
services (to refuse)."""

from imaging.selectors import studies_visible_to
from portal.access import may_open_patient


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

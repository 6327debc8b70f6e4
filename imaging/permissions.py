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

"""The patient's opposition to sharing between establishments (CSP L1110-4) for the files people
give: the documents of an RCP case (rcp.CaseDocument), the attachments of a tele-expertise
request (expertise.Attachment), any portal.documents_models.UploadedFile about a patient.

The same notion as the studies' rule (imaging.selectors.shared_with_establishments): a file
belongs to the establishment(s) of the professional who gave it; for a patient who opposes
sharing, it is shown only to people of those establishments.

Decision: the opposition also applies inside an RCP or a tele-expertise. The patient is
informed of the presentation of their case in RCP, and consents to a tele-expertise
(CSP R6316-2), but that is consent to the act, given to their own doctor; the opposition is
their standing word on what leaves the establishments that hold their record, and the portal
cannot tell whether the consent to the act was given knowing it would carry another
establishment's files. The studies of the same case already follow the opposition whatever the
way in (imaging.selectors.studies_visible_to): a case whose reports were readable while its
images were not would be incoherent. The doctor who needs the committee or the expert of
another establishment to read them asks the patient, and the patient's establishment lifts
the opposition in one step (portal.services.sharing_opposition_lift); emergencies go through
the emergency access.
"""

from django.db.models import Exists, OuterRef, Q

from portal.models import Affiliation
from portal.selectors import emergency_patient_ids


def uploads_shared_with(user, *, patient_field: str) -> Q:
    """A filter on an UploadedFile queryset: the files ``user`` may be shown, under the
    opposition of the patient reached through ``patient_field`` ("case__patient"): every file
    of a patient who accepts sharing, and for a patient who opposes it, only the files given by
    someone working for one of ``user``'s establishments, unless ``user`` holds an emergency
    access to that patient now. Subqueries: no query of its own."""
    if not getattr(user, "is_authenticated", False):
        return Q(pk__in=[])
    mine = Affiliation.objects.filter(professional__user=user).values("establishment_id")
    given_here = Affiliation.objects.filter(
        professional__user=OuterRef("uploaded_by"), establishment__in=mine
    )
    # The one override, as for the studies: the patients ``user`` holds an emergency access to.
    return (
        Q(**{f"{patient_field}__sharing_opposed": False})
        | Q(Exists(given_here))
        | Q(**{f"{patient_field}__in": emergency_patient_ids(user)})
    )

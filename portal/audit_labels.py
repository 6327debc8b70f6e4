"""What an audit event is about, in words: "Dossier RCP n° 4 — DURAND G." rather than
"rcp.case 4", and "Équipe de soins : ajout" rather than a bare security alert.

The audit trail stores an object as its type and id (``portal.audit.record``); ``portal``
does not know the other apps' objects, so each app registers a labeller for its own types
from its ``AppConfig.ready`` (habit 14: the lower layer learns about the higher ones through
a registry). A labeller takes the ids of one type and answers ``{id: label}`` in one query:
a page of events takes one query per object type it shows, whatever its length.

Labels are read now, not when the event was written: an object deleted since keeps its type
and id. The stored event (and its hash chain) never changes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from portal.models import AuditEvent, AuditEventId, AuditOutcome, CareRelationship, Patient

Labeller = Callable[[list[str]], dict[str, str]]

_labellers: dict[str, Labeller] = {}


def register(object_type: str, labeller: Labeller) -> None:
    """Name the objects of ``object_type`` ("rcp.case") with ``labeller`` (ids → labels)."""
    _labellers[object_type] = labeller


# Types whose events name a page or a list, not one object (no id): one name for the type.
_type_labels: dict[str, str] = {}


def register_type(object_type: str, label) -> None:
    """Name ``object_type`` ("portal.home") with ``label`` (a lazy translation, read in the
    reader's language) when its events carry no object id."""
    _type_labels[object_type] = label


def integer_ids(ids: Iterable[str]) -> list[int]:
    """The ids that can be primary keys (a refused access may name a made-up one)."""
    return [int(value) for value in ids if value.isdigit()]


def patient_short_name(patient: Patient) -> str:
    """ "DURAND G.": the name in use (upper case) and the first name's initial."""
    name = (patient.used_name or patient.birth_name).upper()
    first = (patient.used_first_name or patient.first_names.split(" ")[0])[:1].upper()
    return f"{name} {first}." if first else name


def label_events(events: list[AuditEvent]) -> list[AuditEvent]:
    """Give each event ``object_label`` and ``kind_label`` (None: its ATNA event is label
    enough), looking the objects up in one query per type."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for event in events:
        if event.object_type in _labellers and event.object_id:
            wanted[event.object_type].add(event.object_id)
    labels = {
        object_type: _labellers[object_type](sorted(ids)) for object_type, ids in wanted.items()
    }
    for event in events:
        label = labels.get(event.object_type, {}).get(event.object_id)
        if not label and not event.object_id and event.object_type in _type_labels:
            label = str(_type_labels[event.object_type])
        event.object_label = label or f"{event.object_type} {event.object_id}".strip()
        event.kind_label = kind_label(event)
    return events


# --- The portal's own objects --------------------------------------------------------------------


CARE_TEAM_TYPES = ("portal.carerelationship",)


def kind_label(event: AuditEvent) -> str | None:
    """What a security alert is, when it is not an alert at all.

    Adding a professional to a care team or ending their place in it changes who may open the
    record: DICOM PS3.15 A.5 files that as a Security Alert (110113) with the refinement
    "Object Security Attributes Changed" (110135), and the trail keeps these codes for an
    ATNA repository. A data protection officer reads them as what they are.
    """
    if event.event_id != AuditEventId.SECURITY_ALERT:
        return None
    detail = event.detail or {}
    if event.object_type in CARE_TEAM_TYPES and event.outcome == AuditOutcome.SUCCESS:
        if "granted_to" in detail:
            return _("Care team: added")
        if "revoked_from" in detail:
            return _("Care team: ended")
    if detail.get("reason") in ("may not add", "may not end"):
        return _("Care team: change refused")
    return None


def _patients(ids: list[str]) -> dict[str, str]:
    return {
        str(patient.pk): patient_short_name(patient)
        for patient in Patient.objects.filter(pk__in=integer_ids(ids)).only(
            "birth_name", "used_name", "first_names", "used_first_name"
        )
    }


def _care_relationships(ids: list[str]) -> dict[str, str]:
    relationships = CareRelationship.objects.filter(pk__in=integer_ids(ids)).select_related(
        "patient", "professional__user"
    )
    return {
        str(one.pk): _("Care team of %(patient)s — %(professional)s (%(role)s)")
        % {
            "patient": patient_short_name(one.patient),
            "professional": one.professional.display_name,
            "role": one.get_role_display(),
        }
        for one in relationships
    }


register("portal.patient", _patients)
register("portal.carerelationship", _care_relationships)
# The home page's audited reads (portal.home): the panels it showed, and the GP's news
# (marked read). Their events name no object.
register_type("portal.home", gettext_lazy("Home page"))
register_type("portal.home_news", gettext_lazy("Home page: news of my patients"))
# The GP's working page (portal.views_gp_home): what he searched among his patients.
register_type("portal.gp_home", gettext_lazy("My patients' news"))
# One's own choice of notification e-mails (portal.services.notification_preference_set).
register("portal.notificationpreference", lambda ids: dict.fromkeys(ids, _("Notification e-mails")))

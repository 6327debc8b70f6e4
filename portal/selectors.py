"""Reads of the shared domain. Object permissions are queryset filters, never Python loops."""

import datetime as dt
import math
import time
from dataclasses import dataclass

from django.apps import apps
from django.core.cache import cache
from django.db.models import Case, Exists, F, OuterRef, Prefetch, Q, QuerySet, Value, When
from django.utils import timezone
from guardian.shortcuts import get_objects_for_user

from portal.models import (
    AccessRequest,
    AccessRequestState,
    Affiliation,
    AuditEvent,
    AuditPurpose,
    CareRelationship,
    CareRole,
    EmergencyAccess,
    EmergencyReview,
    IdentityConflict,
    Notification,
    Patient,
    PatientIdentifier,
    Professional,
    search_key,
)
from portal.permissions import CARE_TEAM_ADMINISTRATION_PERMISSION

AUDITOR_PERMISSION = "portal.view_auditevent"
IDENTITY_REVIEW_PERMISSION = "portal.change_identityconflict"


def patients_visible_to(
    user, *, purpose: str = AuditPurpose.CARE, include_emergency: bool = True
) -> QuerySet[Patient]:
    """Patients ``user`` may open for ``purpose``.

    For care, only an object permission granted by a care relationship counts: neither a
    global permission nor superuser status opens a patient record; and, for a set time, a
    granted access request or an emergency access. ``include_emergency=False`` leaves the
    latter out, for what shares or changes rather than reads (imaging's review rooms and
    external viewer links): emergency access is for reading the record.
    """
    if not getattr(user, "is_authenticated", False):
        return Patient.objects.none()
    if purpose == AuditPurpose.AUDIT:
        return (
            Patient.objects.all() if user.has_perm(AUDITOR_PERMISSION) else Patient.objects.none()
        )
    in_care = get_objects_for_user(
        user,
        "portal.view_patient",
        klass=Patient,
        use_groups=True,
        with_superuser=False,
        accept_global_perms=False,
    )
    # A granted access request or an emergency access opens the record until its end, the
    # clock compared in the query: nothing stays open after the end, whether or not the
    # closing job (portal.tasks.close_expired_accesses) ran.
    return Patient.objects.filter(
        Q(pk__in=in_care.values("pk"))
        | Q(pk__in=granted_patient_ids(user, include_emergency=include_emergency))
    )


def granted_patient_ids(
    user, *, now: dt.datetime | None = None, include_emergency: bool = True
) -> QuerySet:
    """The ids of the patients ``user`` reads now through a granted access request or an
    emergency access, as one subquery."""
    now = now or timezone.now()
    requested = AccessRequest.objects.filter(
        requester=user, state=AccessRequestState.GRANTED, ends_at__gt=now
    ).values("patient_id")
    if not include_emergency:
        return requested
    return Patient.objects.filter(
        Q(pk__in=requested) | Q(pk__in=emergency_patient_ids(user, now=now))
    ).values("pk")


def emergency_patient_ids(user, *, now: dt.datetime | None = None) -> QuerySet:
    """The ids of the patients ``user`` holds an emergency access to now (a subquery)."""
    if not getattr(user, "is_authenticated", False):
        return EmergencyAccess.objects.none().values("patient_id")
    return EmergencyAccess.objects.filter(holder=user, ends_at__gt=now or timezone.now()).values(
        "patient_id"
    )


def active_emergency_accesses(*, user) -> QuerySet[EmergencyAccess]:
    """The emergency accesses ``user`` holds now, soonest end first (the banner)."""
    if not getattr(user, "is_authenticated", False):
        return EmergencyAccess.objects.none()
    return (
        EmergencyAccess.objects.filter(holder=user, ends_at__gt=timezone.now())
        .select_related("patient")
        .order_by("ends_at")
    )


def emergency_banner(*, user) -> list[dict]:
    """What the banner of every page says while ``user`` holds emergency accesses: each
    patient and the end. One indexed query per page, on purpose not cached: a cached "none"
    would make the first page after an opening silent, a cached banner would outlive an access
    ended early, and a page's query count must not depend on what the cache holds."""
    if not getattr(user, "is_authenticated", False):
        return []
    return [
        {
            "id": access.pk,
            "patient_id": access.patient_id,
            "patient": access.patient.display_name,
            "ends_at": access.ends_at,
        }
        for access in active_emergency_accesses(user=user)
    ]


def next_grant_end(user_id: int) -> dt.datetime | None:
    """When the soonest of the user's time-limited grants ends (None without one)."""
    now = timezone.now()
    ends = [
        AccessRequest.objects.filter(
            requester_id=user_id, state=AccessRequestState.GRANTED, ends_at__gt=now
        )
        .order_by("ends_at")
        .values_list("ends_at", flat=True)
        .first(),
        EmergencyAccess.objects.filter(holder_id=user_id, ends_at__gt=now)
        .order_by("ends_at")
        .values_list("ends_at", flat=True)
        .first(),
    ]
    ends = [end for end in ends if end is not None]
    return min(ends) if ends else None


def establishments_of_user(user) -> list:
    """The establishments ``user`` works for, their primary one first (the home page says
    where the portal knows them from: a doctor signed in through Pro Santé Connect checks
    that his practice sites arrived). One query."""
    if not getattr(user, "is_authenticated", False):
        return []
    return [
        affiliation.establishment
        for affiliation in Affiliation.objects.filter(professional__user=user)
        .select_related("establishment")
        .order_by("-is_primary", "establishment__name")
    ]


def identity_conflicts_for_review(*, user, include_resolved: bool = False):
    """Conflicts the identity-vigilance team must look at (global permission, not per object)."""
    if not user.has_perm(IDENTITY_REVIEW_PERMISSION):
        return IdentityConflict.objects.none()
    conflicts = IdentityConflict.objects.select_related(
        "patient", "establishment", "reported_by", "resolved_by"
    )
    if not include_resolved:
        conflicts = conflicts.filter(resolved_at__isnull=True)
    return conflicts.order_by("resolved_at", "-created_at")


def access_generation_key(user_id: int) -> str:
    """The cache key of the user's access generation (read raw by imaging.fast_frames too)."""
    return f"access-generation:{user_id}"


def _generation_end_key(user_id: int) -> str:
    return f"access-generation-end:{user_id}"


def access_generation(user_id: int) -> int:
    """A number that changes whenever the user's access to patients changes, so that
    access decisions cached under it are forgotten at once.

    A time-limited grant (access request, emergency access) ends without anyone acting: the
    number then lives only until the soonest end (:func:`expire_generation_at_next_end`), and a
    new one starts from the clock, never from a number used before, so whatever was cached
    under the old one (DICOMweb, fast frames, the review WebSocket) is forgotten at the end.
    The end is kept twice: as the key's expiry, for the readers of the raw key (fast frames),
    and as a time compared here with this process's clock, which does not depend on the cache
    server's (and which the tests can move).
    """
    key, end_key = access_generation_key(user_id), _generation_end_key(user_id)
    values = cache.get_many([key, end_key])
    generation, end = values.get(key), values.get(end_key)
    if generation is not None and end is not None and time.time() >= end:
        cache.delete_many([key, end_key])
        generation = None
    if generation is None:
        cache.add(key, time.time_ns() // 1000, timeout=None)
        expire_generation_at_next_end(user_id)
        generation = cache.get(key, 0)
    return generation


def expire_generation_at_next_end(user_id: int) -> None:
    """Let the user's access generation live only until their soonest grant ends (called
    once a grant opens, is renewed or ends, and when a generation starts)."""
    end = next_grant_end(user_id)
    key, end_key = access_generation_key(user_id), _generation_end_key(user_id)
    if end is None:
        cache.touch(key, None)
        cache.delete(end_key)
        return
    # At least a second: a zero timeout would not store the number at all.
    seconds = max(1, math.ceil((end - timezone.now()).total_seconds()))
    cache.touch(key, seconds)
    cache.set(end_key, end.timestamp(), timeout=seconds + 60)


def _parse_birth_date(text: str) -> dt.date | None:
    for fmt in ("%d/%m/%Y", "%Y-%m-%d", "%d.%m.%Y", "%d-%m-%Y"):
        try:
            return dt.datetime.strptime(text, fmt).date()  # noqa: DTZ007 (a date, no time)
        except ValueError:
            continue
    return None


def patient_search(*, user, query: str = "") -> QuerySet[Patient]:
    """The patients ``user`` may see whose name, birth date or INS matches ``query``.

    Each word must match: "martin 12/03/1956" finds Martin born that day.
    """
    patients = patients_visible_to(user)
    for word in query.split():
        birth_date = _parse_birth_date(word)
        if birth_date:
            patients = patients.filter(birth_date=birth_date)
        elif word.isdigit() and len(word) >= 5:
            patients = patients.filter(ins_matricule__startswith=word)
        else:
            patients = patients.filter(name_search__contains=search_key(word))
    return patients.order_by("birth_name", "first_names", "birth_date")


def _professionals_with_establishments():
    return Professional.objects.select_related("user").prefetch_related(
        Prefetch("affiliations", queryset=Affiliation.objects.select_related("establishment"))
    )


def patient_care_team(*, patient: Patient) -> QuerySet[CareRelationship]:
    """Active relationships: referring doctor first, then the GP, then the care team."""
    role_rank = Case(
        When(role=CareRole.REFERRING, then=Value(0)),
        When(role=CareRole.GP, then=Value(1)),
        default=Value(2),
    )
    return (
        CareRelationship.objects.filter(patient=patient, ended_at__isnull=True)
        .select_related("establishment")
        .prefetch_related(Prefetch("professional", queryset=_professionals_with_establishments()))
        .order_by(role_rank, "started_at")
    )


def professionals_for_care_team(*, patient: Patient) -> QuerySet[Professional]:
    """Clinicians who could join the patient's care team (not already in it)."""
    current = CareRelationship.objects.filter(patient=patient, ended_at__isnull=True).values(
        "professional_id"
    )
    return (
        _professionals_with_establishments()
        .filter(user__is_active=True, rpps__isnull=False)
        .exclude(pk__in=current)
    )


def audit_events(
    *,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    actor: str = "",
    event_id: str = "",
    outcome: int | None = None,
    patient: Patient | None = None,
) -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.select_related("patient")
    if date_from:
        events = events.filter(occurred_at__date__gte=date_from)
    if date_to:
        events = events.filter(occurred_at__date__lte=date_to)
    if actor:
        events = events.filter(
            Q(actor_name__icontains=actor) | Q(actor_rpps=actor) | Q(actor__email__iexact=actor)
        )
    if event_id:
        events = events.filter(event_id=event_id)
    if outcome is not None:
        events = events.filter(outcome=outcome)
    if patient is not None:
        events = events.filter(patient=patient)
    return events.order_by("-occurred_at", "-id")


def patient_access_report(*, patient: Patient) -> QuerySet[AuditEvent]:
    """Who touched this patient's record, when and why: every event naming the patient."""
    return AuditEvent.objects.filter(patient=patient).order_by("occurred_at", "id")


def unread_notification_count(*, user) -> int:
    return Notification.objects.filter(recipient=user, read_at__isnull=True).count()


def current_gp(patient: Patient | int) -> Professional | None:
    """The patient's current general practitioner (an active GP relationship; the database
    allows one), with his account, or None. ``patient`` is a Patient or its id: the RCP and
    tele-expertise tell him of a decision or a report, and their PDFs name him."""
    patient_id = getattr(patient, "pk", patient)
    return (
        Professional.objects.select_related("user")
        .filter(
            care_relationships__patient_id=patient_id,
            care_relationships__role=CareRole.GP,
            care_relationships__ended_at__isnull=True,
        )
        .first()
    )


def patients_followed_as_gp(user) -> QuerySet[Patient]:
    """The patients whose current general practitioner ``user`` is (an active GP
    relationship): what the GP's home and his patients' RCP cases are about."""
    if not getattr(user, "is_authenticated", False):
        return Patient.objects.none()
    return Patient.objects.filter(
        care_relationships__professional__user=user,
        care_relationships__role=CareRole.GP,
        care_relationships__ended_at__isnull=True,
    )


def audit_patient_search(*, user, query: str) -> QuerySet[Patient]:
    """For the audit trail: the patients whose name (birth or used, first names too, from the
    start of a word, accents and case forgiven), birth date, INS matricule or IPP (of any
    establishment) matches every word of ``query``; none for someone who may not audit."""
    patients = patients_visible_to(user, purpose=AuditPurpose.AUDIT)
    words = query.split()
    if not words:
        return patients.none()
    for word in words:
        birth_date = _parse_birth_date(word)
        if birth_date:
            patients = patients.filter(birth_date=birth_date)
            continue
        key = search_key(word)
        ipp = PatientIdentifier.objects.filter(patient=OuterRef("pk"), value__iexact=word)
        patients = patients.filter(
            Q(name_search__startswith=key)
            | Q(name_search__contains=f" {key}")
            | Q(ins_matricule=word)
            | Q(Exists(ipp))
        )
    return patients.order_by("birth_name", "first_names", "birth_date")


# --- The patient page -----------------------------------------------------------------------


@dataclass(frozen=True)
class PatientPanel:
    """A panel a higher app adds to the patient page (its RCP cases, its requests)."""

    order: int
    template: str
    context: dict


def patient_panels(*, user, patient: Patient) -> list[PatientPanel]:
    """The panels of ``patient``'s page for ``user``, from the apps that have one.

    portal is the lowest layer and cannot import rcp or expertise: like the read-only grants
    (portal.access.read_only_patient_grants), each app's AppConfig answers
    ``patient_panel(user=, patient=)`` with a :class:`PatientPanel` (built from its own
    visibility selector, so it shows only what ``user`` may open) or None, in a constant
    number of queries.
    """
    panels = []
    for config in apps.get_app_configs():
        build = getattr(config, "patient_panel", None)
        panel = build(user=user, patient=patient) if build else None
        if panel is not None:
            panels.append(panel)
    return sorted(panels, key=lambda panel: panel.order)


def age_on(birth_date: dt.date, day: dt.date) -> int:
    """Age in whole years on ``day`` (a 29 February birthday comes on 1 March)."""
    return day.year - birth_date.year - ((day.month, day.day) < (birth_date.month, birth_date.day))


# --- Access requests and emergency accesses ----------------------------------------------


def access_requests_of(*, user) -> QuerySet[AccessRequest]:
    """The requests ``user`` made, newest first (their states)."""
    return AccessRequest.objects.filter(requester=user).select_related("patient", "answered_by")


def access_requests_to_answer(*, user) -> QuerySet[AccessRequest]:
    """The requests ``user`` may answer or renew: those about a patient of whom they are the
    referring doctor, or whose record their establishment holds when they run its care
    teams (permissions.may_answer_access_request, as one query)."""
    if not getattr(user, "is_authenticated", False):
        return AccessRequest.objects.none()
    referring = CareRelationship.objects.filter(
        patient=OuterRef("patient"),
        professional__user=user,
        role=CareRole.REFERRING,
        ended_at__isnull=True,
    )
    condition = Exists(referring)
    if user.has_perm(CARE_TEAM_ADMINISTRATION_PERMISSION):
        condition |= Exists(
            PatientIdentifier.objects.filter(
                patient=OuterRef("patient"), establishment__affiliations__professional__user=user
            )
        )
    return (
        AccessRequest.objects.filter(condition)
        .exclude(requester=user)
        .select_related("patient", "requester__professional", "answered_by")
        .order_by(
            # Pending first, then the newest.
            F("answered_at").desc(nulls_first=True),
            "-created_at",
        )
    )


def emergency_accesses_for_review(*, user) -> QuerySet[EmergencyAccess]:
    """Every emergency access, for the data protection officer only (none for others)."""
    if not user.has_perm(AUDITOR_PERMISSION):
        return EmergencyAccess.objects.none()
    return EmergencyAccess.objects.select_related("patient", "holder", "reviewed_by")


def emergency_review_queue(*, user, reviewed: bool = False) -> QuerySet[EmergencyAccess]:
    """The emergency accesses the DPO reviews: those to review first (oldest first), or
    those reviewed (newest first)."""
    accesses = emergency_accesses_for_review(user=user)
    if reviewed:
        return accesses.exclude(review=EmergencyReview.PENDING).order_by("-reviewed_at", "-pk")
    return accesses.filter(review=EmergencyReview.PENDING).order_by("started_at", "pk")


def gp_history(*, patient: Patient) -> QuerySet[CareRelationship]:
    """The patient's GP relationships, the current one (if any) first, then the newest: the
    "médecin traitant" block of the patient page. One query, with who declared and ended
    each one and the establishment of a feed's declaration."""
    return (
        CareRelationship.objects.filter(patient=patient, role=CareRole.GP)
        .select_related(
            "professional__user",
            "establishment",
            "created_by__professional",
            "ended_by__professional",
        )
        .order_by(F("ended_at").desc(nulls_first=True), "-started_at", "-pk")
    )


def notification_preference_of(user):
    """``user``'s choice of notification e-mails; the default (an e-mail each, in the portal's
    language) when he never chose, unsaved."""
    from portal.notification_models import NotificationPreference

    return NotificationPreference.objects.filter(user=user).first() or NotificationPreference(
        user=user
    )


def gp_patient_search(*, user, query: str = "") -> QuerySet[Patient]:
    """:func:`patient_search` among the patients ``user`` is the current GP of (his home)."""
    return patient_search(user=user, query=query).filter(
        pk__in=patients_followed_as_gp(user).values("pk")
    )

"""The permission matrix: every route of the project, who may use it, what it audits.

``test_permission_matrix`` enumerates the URL resolver and the WebSocket router and fails
for any route missing here. Adding a URL means adding its entry: for a route that takes an
object id, how to build one, who is entitled to it and who is not.
"""

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from portal import services
from portal.audit import Actor
from portal.models import AuditEventId, CareRelationship, CareRole, IdentityConflict


@dataclass
class Public:
    """Reachable without signing in; shows no patient data."""

    method: str = "get"
    data: Callable | None = None
    expect: int = 200


@dataclass
class SignedIn:
    """Any signed-in user; shows only what belongs to them."""

    method: str = "get"
    data: Callable | None = None
    expect: int = 200
    audit_event: str | None = None
    patient_data: bool = False


@dataclass
class GlobalPermission:
    """Needs a global permission (not an object one): others get 403."""

    holder: Callable
    audit_event: str | None = None
    expect: int = 200
    method: str = "get"


@dataclass
class ObjectRoute:
    """Takes an object id: anonymous → login, outsider → 404, entitled → ``expect``."""

    kwargs: Callable  # world -> URL kwargs
    entitled: Callable  # world -> user
    outsider: Callable  # world -> user
    method: str = "get"
    data: Callable | None = None  # world -> POST data
    expect: int = 200
    audit_event: str | None = None
    patient: Callable | None = None  # world -> the patient the access is about
    patient_data: bool = True
    extra_outsiders: list[Callable] = field(default_factory=list)


def _identity_conflict(world) -> IdentityConflict:
    try:
        services.patient_register(
            traits=services.PatientTraits(
                birth_name="Dupont",
                first_names="Jeanne Marie",
                sex="F",
                birth_date=dt.date(1956, 3, 21),
                birth_place_code="37261",
            ),
            establishment=world.tours,
            ipp="T100001",
            source="dicom",
            by=Actor.system("tests"),
        )
    except services.IdentityConflictError as error:
        return error.conflict
    raise AssertionError("the test identity should have conflicted")


def _care_team_member(world) -> CareRelationship:
    return services.care_relationship_add(
        patient=world.patient,
        professional=world.surgeon,
        role=CareRole.CARE_TEAM,
        by=Actor.system("tests"),
    )


MATRIX = {
    "home": SignedIn(),
    "health": Public(),
    "set_language": Public(
        method="post", data=lambda w: {"language": "en", "next": "/"}, expect=302
    ),
    "patient-list": SignedIn(audit_event=AuditEventId.QUERY, patient_data=True),
    "patient-register": SignedIn(patient_data=True),
    "patient-detail": ObjectRoute(
        kwargs=lambda w: {"patient_id": w.patient.pk},
        entitled=lambda w: w.oncologist.user,
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[
            lambda w: w.admin_user,
            lambda w: w.auditor_user,
            lambda w: w.coordinator.user,
        ],
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "care-team-add": ObjectRoute(
        kwargs=lambda w: {"patient_id": w.patient.pk},
        entitled=lambda w: w.oncologist.user,
        outsider=lambda w: w.outsider.user,
        method="post",
        data=lambda w: {"professional": w.surgeon.pk},
        expect=302,
        audit_event=AuditEventId.SECURITY_ALERT,
        patient=lambda w: w.patient,
    ),
    "care-team-end": ObjectRoute(
        kwargs=lambda w: {"patient_id": w.patient.pk, "relationship_id": _care_team_member(w).pk},
        entitled=lambda w: w.oncologist.user,
        outsider=lambda w: w.outsider.user,
        method="post",
        expect=302,
        audit_event=AuditEventId.SECURITY_ALERT,
        patient=lambda w: w.patient,
    ),
    "identity-conflict-list": GlobalPermission(
        holder=lambda w: w.identity_reviewer, audit_event=AuditEventId.QUERY
    ),
    "identity-conflict-resolve": ObjectRoute(
        kwargs=lambda w: {"conflict_id": _identity_conflict(w).pk},
        entitled=lambda w: w.identity_reviewer,
        # The patient's own doctor does not review identities.
        outsider=lambda w: w.oncologist.user,
        extra_outsiders=[lambda w: w.auditor_user],
        method="post",
        data=lambda w: {"resolution": "Checked against the identity card: typing error."},
        expect=302,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "notification-list": SignedIn(),
    "notification-mark-read": SignedIn(method="post", expect=302),
    "audit-event-list": GlobalPermission(
        holder=lambda w: w.auditor_user, audit_event=AuditEventId.AUDIT_LOG_USED
    ),
    "patient-access-report": ObjectRoute(
        kwargs=lambda w: {"patient_id": w.patient.pk},
        entitled=lambda w: w.auditor_user,
        # Being in the care team does not make one an auditor.
        outsider=lambda w: w.oncologist.user,
        audit_event=AuditEventId.EXPORT,
        patient=lambda w: w.patient,
    ),
}

# Routes of libraries, covered by their own rules in the matrix test.
THIRD_PARTY_PREFIXES = {
    "accounts/": "django-allauth: sign-in, MFA, SSO; no patient data",
    "admin/": "Django admin: staff only, holds no patient or care relationship model",
}

# WebSocket routes: name -> what a connection gets.
WEBSOCKET_MATRIX = {
    "ws-notifications": "the signed-in user's own notifications; anonymous refused",
}

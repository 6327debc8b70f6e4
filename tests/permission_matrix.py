"""The permission matrix: every route of the project, who may use it, what it audits.

``test_permission_matrix`` enumerates the URL resolver and the WebSocket router and fails
for any route missing here. Adding a URL means adding its entry: for a route that takes an
object id, how to build one, who is entitled to it and who is not.
"""

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from django.core.files.uploadedfile import SimpleUploadedFile

from imaging import services as imaging_services
from imaging.models import IngestBatch, StudyReport
from portal import services
from portal.audit import Actor
from portal.models import AuditEventId, CareRelationship, CareRole, IdentityConflict
from tests import builders
from tests.dicom_factory import ct_files, pdf_report_file


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
class DicomWebRoute:
    """A route of the DICOMweb service: anonymous → 401, outsider → 404 (or an empty search),
    entitled → ``expect``; a viewer token of another study → 404."""

    kwargs: Callable  # world -> URL kwargs (study, series, instance of world.patient)
    method: str = "get"
    accept: str = ""
    expect: int = 200
    search: bool = False  # a search answers outsiders with nothing instead of 404
    data: Callable | None = None
    content_type: str = ""


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
    # world -> the patient an outsider's refusal names (for that patient's access report);
    # ``patient`` unless said otherwise: a session or a committee names no single patient.
    refusal_patient: Callable | None = None

    def __post_init__(self):
        if self.refusal_patient is None:
            self.refusal_patient = self.patient


@dataclass
class TokenRoute:
    """Reached without signing in, by a secret token in the address (calendar apps cannot
    sign in): the right token → ``expect``; an unknown or revoked one → 404. No patient data."""

    kwargs: Callable  # world -> URL kwargs, with a working token
    revoke: Callable  # world -> None: the token of ``kwargs`` stops working
    method: str = "get"
    expect: int = 200


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


def _dicom_upload(world) -> dict:
    files = ct_files(world.patient, key="matrix-upload", slices=2)
    return {
        "files": [
            SimpleUploadedFile(f"ct-{n}.dcm", data, "application/dicom")
            for n, data in enumerate(files)
        ]
    }


def _tours_pacs(world) -> dict:
    """The CHRU de Tours declares its PACS (no POST data): its staff may send priors there."""
    from imaging.models import DicomDeclaration

    DicomDeclaration.objects.get_or_create(
        establishment=world.tours,
        defaults={"pacs_ae_title": "TOURS_PACS", "pacs_host": "127.0.0.1", "pacs_port": 104},
    )
    return {}


def _ingest_batch(world) -> IngestBatch:
    return imaging_services.ingest_batch_create(
        patient=world.patient,
        files=_dicom_upload(world)["files"],
        by=Actor(user=world.oncologist.user),
    )


def _study_report(world) -> StudyReport:
    batch = imaging_services.ingest_batch_create(
        patient=world.patient,
        files=[SimpleUploadedFile("cr.dcm", pdf_report_file(world.patient, key="matrix-pdf"))],
        by=Actor(user=world.oncologist.user),
    )
    imaging_services.ingest_run(batch=batch)
    return StudyReport.objects.get(study__patient=world.patient)


def imaged_study(world, key: str = "matrix-study"):
    """A CT study of world.patient in the archive and the index (built once per world)."""
    cache = world.__dict__.setdefault("_studies", {})
    if key not in cache:
        cache[key] = builders.ct_study(world.patient, by=world.oncologist.user, key=key)
    return cache[key]


def _review_room(world):
    """A room on world.patient's CT: the oncologist coordinates, the GP is invited."""
    from imaging.review import review_room_create

    rooms = world.__dict__.setdefault("_rooms", [])
    if not rooms:
        rooms.append(
            review_room_create(
                study=imaged_study(world)["study"],
                title="RCP thoracique",
                members=[world.gp.user],
                by=Actor(user=world.oncologist.user),
            )
        )
    return rooms[0]


def _surgeon_in_care_team(world):
    if not CareRelationship.objects.filter(
        patient=world.patient, professional=world.surgeon, ended_at__isnull=True
    ).exists():
        builders.care_team(world.patient, (world.surgeon, CareRole.CARE_TEAM))
    return world.surgeon.user


def _rcp(world):
    from tests.rcp_world import rcp_world

    return rcp_world(world)


def _rcp_case(world, state: str = "on_agenda"):
    """A thoracic case of world.patient in ``state`` (built once per world and state)."""
    from portal.audit import Actor as _Actor
    from rcp import services as rcp_services
    from tests.rcp_world import case_on_agenda, submitted_case

    cases = world.__dict__.setdefault("_rcp_cases", {})
    if state not in cases:
        if state == "draft":
            from tests.rcp_world import COMPLETE_THORACIC

            _rcp(world)
            case = builders.case(
                patient=world.patient,
                committee=world.thoracic,
                by=world.oncologist.user,
                studies=[world.ct],
                **COMPLETE_THORACIC,
            )
        elif state == "submitted":
            case = submitted_case(world)
        elif state == "validated":
            from tests.rcp_world import open_with_quorum

            case = case_on_agenda(world)
            open_with_quorum(world)
            draft = rcp_services.decision_save(
                case=case, revision=None, by=_Actor(user=world.surgeon.user), proposal="Lobectomie."
            )
            rcp_services.decision_validate(
                case=case, revision=draft.revision, by=_Actor(user=world.oncologist.user)
            )
        else:
            case = case_on_agenda(world)
        case.refresh_from_db()
        cases[state] = case
    return cases[state]


def _discussed(world, without_quorum=False):
    from portal.audit import Actor as _Actor
    from rcp import services as rcp_services
    from tests.rcp_world import open_session, open_with_quorum

    case = _rcp_case(world)
    if not case.decisions.exists():
        # Validated in its meeting: the session open, with its quorum (or, for the path
        # without quorum, open with nobody seated).
        if without_quorum:
            open_session(world.session, by_user=world.coordinator.user)
        else:
            open_with_quorum(world)
        rcp_services.decision_save(
            case=case, revision=None, by=_Actor(user=world.surgeon.user), proposal="Lobectomie."
        )
        case.refresh_from_db()
    return case


def _session_today(world):
    """world.session on its day (planned): its coordinator may open or close it."""
    from tests.rcp_world import session_day_has_come

    _rcp(world)
    if not world.__dict__.get("_rcp_session_today"):
        session_day_has_come(world.session)
        world._rcp_session_today = True
    world.session.refresh_from_db()
    return world.session


def _asked_without_quorum(world):
    """world.patient's case whose validation without quorum the chair asked for."""
    from portal.audit import Actor as _Actor
    from rcp import services as rcp_services

    case = _discussed(world, without_quorum=True)
    draft = rcp_services.decision_draft(case)
    if not draft.without_quorum_reason:
        rcp_services.decision_request_without_quorum(
            case=case,
            revision=draft.revision,
            reason="Radiothérapeute absent, décision urgente.",
            by=_Actor(user=world.oncologist.user),
        )
    return case


def _case_document(world):
    from portal.audit import Actor as _Actor
    from rcp import services as rcp_services

    case = _rcp_case(world)
    document = case.documents.first()
    if document is None:
        document = rcp_services.case_document_add(
            case=case,
            kind="letter",
            title="Courrier",
            upload=SimpleUploadedFile("c.pdf", b"%PDF-1.7\n"),
            by=_Actor(user=world.oncologist.user),
        )
    return document


def _rcp_fiche(world):
    """The fiche RCP of world.patient's validated case, made (once per world)."""
    from portal import documents

    docs = world.__dict__.setdefault("_rcp_fiches", [])
    if not docs:
        case = _rcp_case(world, "validated")
        # Queued by decision_validate; on_commit never fires inside the test's transaction.
        docs.append(documents.render(document=case.pdf_documents.get()))
    return docs[0]


def _rcp_minutes(world):
    """The minutes of the session of world.patient's validated case, made (once per world)."""
    from portal import documents
    from rcp import pdf

    docs = world.__dict__.setdefault("_rcp_minutes", [])
    if not docs:
        document = pdf.request_minutes_pdf(
            session=_rcp_case(world, "validated").session, by=Actor(user=world.coordinator.user)
        )
        docs.append(documents.render(document=document))
    return docs[0]


def _two_on_agenda(world):
    first = _rcp_case(world)
    from tests.rcp_world import case_on_agenda

    if "_second" not in world.__dict__:
        world._second = case_on_agenda(world)
    return {"case": first.pk, "direction": "down"}


def _key_image_kwargs(world) -> dict:
    """A key image of the case on the agenda, marked by the surgeon on the CT (once per world)."""
    from rcp.key_images import key_image_add

    images = world.__dict__.setdefault("_key_images", [])
    if not images:
        case = _rcp_case(world)
        found = imaged_study(world)
        view = {
            "study": found["study_uid"],
            "series": found["series_uid"],
            "index": 0,
            "voi": {"ww": 400, "wc": 40},
            "zoom": 1,
            "pan": [0, 0],
        }
        images.append(
            key_image_add(
                case=case,
                by=Actor(user=world.surgeon.user),
                study=found["study_uid"],
                series=found["series_uid"],
                sop=found["sop_uid"],
                frame=1,
                view=view,
            )
        )
    return {"case_id": images[0].case_id, "key_image_id": images[0].pk}


def _study_kwargs(world, *names):
    found = imaged_study(world)
    return {name: found[name] for name in names}


def _stow_body(world):
    data = ct_files(world.patient, key="matrix-stow", slices=1)[0]
    boundary = "mircboundary"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def _care_team_member(world) -> CareRelationship:
    return builders.care_team(world.patient, (world.surgeon, CareRole.CARE_TEAM))[0]


def _calendar_token(world) -> str:
    from rcp.calendar import calendar_token_issue

    tokens = world.__dict__.setdefault("_calendar_tokens", [])
    if not tokens:
        _rcp(world)
        tokens.append(calendar_token_issue(by=Actor(user=world.surgeon.user))[1])
    return tokens[0]


def _calendar_token_revoke(world) -> None:
    from rcp.calendar import calendar_token_revoke

    calendar_token_revoke(by=Actor(user=world.surgeon.user))


# --- Tele-expertise builders (once per world and state) -------------------------------------------


def _tele(world):
    from tests.expertise_world import expertise_world

    return expertise_world(world)


def _expertise_request(world, state: str = "accepted"):
    """A request of the GP for world.patient to the teleradiology pool, in ``state``; accepted
    by the teleradiologist from "accepted" on."""
    from expertise import services as expertise_services
    from tests import expertise_world as ew

    built = world.__dict__.setdefault("_expertise_requests", {})
    if state not in built:
        _tele(world)
        if state == "draft":
            request = ew.draft_request(world)
        elif state == "sent":
            request = ew.sent_request(world)
        elif state == "reported":  # accepted, with a saved draft report
            request = ew.accepted_request(world)
            expertise_services.report_save(
                request=request,
                by=Actor(user=world.teleradiologist.user),
                revision=None,
                **ew.REPORT,
            )
        elif state == "declined":
            request = ew.sent_request(world)
            expertise_services.request_decline(
                request=request,
                by=Actor(user=world.pool_coordinator.user),
                reason="Relève de la dermatologie.",
                to="requester",
            )
        elif state == "answered":
            request = ew.answered_request(world)
        else:
            request = ew.accepted_request(world)
        request.refresh_from_db()
        built[state] = request
    return built[state]


def _expertise_report_pdf(world):
    """The PDF of the answered request's signed report, made (once per world)."""
    from expertise.models import ReportDocument
    from portal import documents

    if "_expertise_report_pdf" not in world.__dict__:
        request = _expertise_request(world, "answered")
        # Queued by report_sign_and_send; on_commit never fires inside the test's transaction.
        document = ReportDocument.objects.get(report__request=request)
        world._expertise_report_pdf = documents.render(document=document)
    return world._expertise_report_pdf


def _expertise_evaluator(world):
    """The regional programme's evaluator: every pool's indicators (built once per world)."""
    if "_expertise_evaluator" not in world.__dict__:
        world._expertise_evaluator = builders.user(
            email="evaluation@mirc.test",
            first_name="Hélène",
            last_name="Morel",
            permissions=["expertise.view_indicators"],
        )
    return world._expertise_evaluator


def _regional_programme(world):
    """The regional programme, like the demo's m.dumas (its role): the indicators of every pool,
    RCP committee and establishment, the usage statements; no committee seat, no patient
    (built once per world)."""
    if "_regional_programme" not in world.__dict__:
        world._regional_programme = _with_role(
            builders.user(email="programme@mirc.test", first_name="Mathilde", last_name="Dumas"),
            "programme",
        )
    return world._regional_programme


def _regional_admin(world):
    """The regional administration: sets up committees and pools (built once per world)."""
    if "_regional_admin" not in world.__dict__:
        world._regional_admin = builders.user(
            email="administration.regionale@mirc.test",
            first_name="Mathieu",
            last_name="Leroy",
            permissions=["rcp.add_committee", "expertise.add_pool"],
        )
    return world._regional_admin


def _thoracic_member(world, professional_name: str) -> dict:
    rcp = _rcp(world)
    member = rcp.thoracic.memberships.get(professional=getattr(rcp, professional_name))
    return {"committee_id": rcp.thoracic.pk, "member_id": member.pk}


def _committee_admin_route(kwargs, *, data=None, method="post", expect=302):
    """A page of the thoracic board's management: its coordinator's; a plain member (the
    surgeon), a member of another committee and the technical administrator get 404."""
    return ObjectRoute(
        kwargs=kwargs,
        entitled=lambda w: w.coordinator.user,
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[lambda w: w.surgeon.user, lambda w: w.admin_user],
        method=method,
        data=data,
        expect=expect,
        patient_data=False,  # members and specialties, no patient
    )


def _teleradiology_member(world, professional_name: str) -> dict:
    tele = _tele(world)
    member = tele.teleradiology.memberships.get(professional=getattr(tele, professional_name))
    return {"pool_id": tele.teleradiology.pk, "member_id": member.pk}


def _pool_admin_route(kwargs, *, data=None, method="post", expect=302):
    """A page of the teleradiology pool's management: its coordinator's; its own experts, an
    expert of another pool and the technical administrator get 404."""
    return ObjectRoute(
        kwargs=kwargs,
        entitled=lambda w: _tele(w).pool_coordinator.user,
        outsider=lambda w: _tele(w).outsider.user,
        extra_outsiders=[lambda w: _tele(w).teleradiologist.user, lambda w: w.admin_user],
        method=method,
        data=data,
        expect=expect,
        patient_data=False,  # members and delays, no patient
    )


def _billing_office(world):
    """The billing officer of CHRU de Tours, who exports its acts (built once per world)."""
    if "_billing_office" not in world.__dict__:
        world._billing_office = builders.professional(
            email="facturation@mirc.test",
            first_name="Sylvie",
            last_name="Caron",
            profession="autre",
            establishment=world.tours,
            title="Mme",
            with_rpps=False,
            permissions=["expertise.export_acts"],
        ).user
    return world._billing_office


def _jpeg():
    from tests.expertise_world import jpeg_upload

    return jpeg_upload()


def _expertise_attachment(world):
    from expertise import services as expertise_services
    from tests.expertise_world import jpeg_upload

    request = _expertise_request(world, "draft")
    attachment = request.attachments.first()
    if attachment is None:
        attachment = expertise_services.attachment_add(
            request=request,
            by=Actor(user=world.gp.user),
            kind="photo",
            title="Lésion",
            upload=jpeg_upload(),
        )
    return attachment


def _expertise_route(state, *, entitled, method="post", data=None, expect=302, **extra):
    """A route on a request in ``state``: the other pool's expert and the administrator get
    404, and so does the colleague of the pool once the request is claimed."""
    outsiders = [lambda w: w.admin_user]
    if state not in ("draft", "sent", "declined"):
        outsiders.append(lambda w: _tele(w).second_radiologist.user)
    return ObjectRoute(
        kwargs=lambda w: {"request_id": _expertise_request(w, state).pk},
        entitled=entitled,
        outsider=lambda w: _tele(w).outsider.user,
        extra_outsiders=outsiders,
        method=method,
        data=data,
        expect=expect,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
        **extra,
    )


# --- The scoped administration (portal.views_admin, imaging.admin_views) ----------------------


def _with_role(user, role_code):
    from portal.administration import role_grant_by_system

    role_grant_by_system(role_code=role_code, holder=user, by=builders.SYSTEM)
    return user


def regional_administrator(world):
    """The region's administrator (a role, portal.roles.REGIONAL_ADMIN), built once per world."""
    if "_regional_administrator" not in world.__dict__:
        world._regional_administrator = _with_role(
            builders.professional(
                email="administration.regionale@mirc.test",
                first_name="Agnès",
                last_name="Lemaître",
                profession="coordinateur",
                establishment=world.tours,
                title="Mme",
                with_rpps=False,
            ).user,
            "regional_admin",
        )
    return world._regional_administrator


def tours_administration(world):
    """The admissions office of CHRU de Tours: the establishment's administrator there."""
    if "_tours_administration" not in world.__dict__:
        world._tours_administration = _with_role(
            builders.professional(
                email="admissions.tours@mirc.test",
                first_name="Sophie",
                last_name="Garnier",
                profession="autre",
                establishment=world.tours,
                title="Mme",
                with_rpps=False,
            ).user,
            "establishment_admin",
        )
    return world._tours_administration


def bourges_administration(world):
    """The admissions office of CH de Bourges: an establishment's administrator, elsewhere."""
    if "_bourges_administration" not in world.__dict__:
        world._bourges_administration = _with_role(
            builders.professional(
                email="admissions.bourges@mirc.test",
                first_name="Marc",
                last_name="Renaud",
                profession="autre",
                establishment=world.bourges,
                title="M.",
                with_rpps=False,
            ).user,
            "establishment_admin",
        )
    return world._bourges_administration


def _surgeon_at_tours(world) -> dict:
    return {
        "establishment_id": world.tours.pk,
        "affiliation_id": world.surgeon.affiliations.get(establishment=world.tours).pk,
    }


def _dpo_role_holder(world) -> dict:
    _with_role(world.auditor_user, "data_protection")
    return {"role_code": "data_protection", "user_id": world.auditor_user.pk}


def _administration_route(kwargs, *, entitled, outsider, **extra):
    return ObjectRoute(
        kwargs=kwargs,
        entitled=entitled,
        outsider=outsider,
        patient_data=False,
        **extra,
    )


MATRIX = {
    "home": SignedIn(),
    # The GP marks his home's news read (his own notifications and news only).
    "home-news-read": SignedIn(method="post", expect=302),
    "health": Public(),
    # Pro Santé Connect's back-channel logout: a server-to-server POST; what it accepts is its
    # signed logout token (tests/test_psc.py), nothing else (400).
    "psc-backchannel-logout": Public(method="post", expect=400),
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
        # The referring doctor; the confirmation page (GET) is in tests/test_patients.py.
        entitled=lambda w: w.oncologist.user,
        outsider=lambda w: w.outsider.user,
        method="post",
        data=lambda w: {"reason": "Prise en charge chirurgicale terminée."},
        expect=302,
        audit_event=AuditEventId.SECURITY_ALERT,
        patient=lambda w: w.patient,
    ),
    "sharing-opposition": ObjectRoute(
        kwargs=lambda w: {"patient_id": w.patient.pk},
        # The referring doctor records it; the confirmation page (GET) is in
        # tests/test_sharing_opposition.py.
        entitled=lambda w: w.oncologist.user,
        outsider=lambda w: w.outsider.user,
        method="post",
        data=lambda w: {"opposed": "1"},
        expect=302,
        audit_event=AuditEventId.PATIENT_RECORD,
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
    # --- imaging ---
    "recent-studies": SignedIn(audit_event=AuditEventId.QUERY, patient_data=True),
    "imaging-dossier": ObjectRoute(
        kwargs=lambda w: {"patient_id": w.patient.pk},
        entitled=lambda w: w.oncologist.user,
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[lambda w: w.admin_user],
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "imaging-prefetch": ObjectRoute(
        kwargs=lambda w: {"patient_id": w.patient.pk},
        entitled=lambda w: w.oncologist.user,
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[lambda w: w.admin_user],
        method="post",
        data=_tours_pacs,
        expect=302,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "imaging-prefetch-status": ObjectRoute(
        kwargs=lambda w: {"patient_id": w.patient.pk},
        entitled=lambda w: w.oncologist.user,
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[lambda w: w.admin_user],
        patient=lambda w: w.patient,
        patient_data=False,  # states and counts of the sendings
    ),
    "study-upload": ObjectRoute(
        kwargs=lambda w: {"patient_id": w.patient.pk},
        entitled=lambda w: w.oncologist.user,
        outsider=lambda w: w.outsider.user,
        method="post",
        data=_dicom_upload,
        expect=302,
        audit_event=AuditEventId.IMPORT,
        patient=lambda w: w.patient,
    ),
    "ingest-batch": ObjectRoute(
        kwargs=lambda w: {"patient_id": w.patient.pk, "batch_id": _ingest_batch(w).pk},
        entitled=lambda w: w.oncologist.user,
        outsider=lambda w: w.outsider.user,
        # The GP sees the patient, not the oncologist's own imports.
        extra_outsiders=[lambda w: w.gp.user],
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "ingest-batch-progress": ObjectRoute(
        kwargs=lambda w: {"patient_id": w.patient.pk, "batch_id": _ingest_batch(w).pk},
        entitled=lambda w: w.oncologist.user,
        patient=lambda w: w.patient,
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[lambda w: w.gp.user],
        patient_data=False,  # counts and state only
    ),
    "ingest-batch-retry": ObjectRoute(
        kwargs=lambda w: {"patient_id": w.patient.pk, "batch_id": _ingest_batch(w).pk},
        entitled=lambda w: w.oncologist.user,
        patient=lambda w: w.patient,
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[lambda w: w.gp.user],
        method="post",
        expect=302,
        patient_data=False,
    ),
    "study-report-pdf": ObjectRoute(
        kwargs=lambda w: {"patient_id": w.patient.pk, "report_id": _study_report(w).pk},
        entitled=lambda w: w.gp.user,
        outsider=lambda w: w.outsider.user,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "viewer-link-create": ObjectRoute(
        kwargs=lambda w: {"study_id": imaged_study(w)["study"].pk},
        entitled=lambda w: w.gp.user,
        outsider=lambda w: w.outsider.user,
        method="post",
        audit_event=AuditEventId.SECURITY_ALERT,
        patient=lambda w: w.patient,
    ),
    "viewer-link-revoke": ObjectRoute(
        kwargs=lambda w: {
            "token_id": imaging_services.viewer_token_issue(
                by=Actor(user=w.gp.user), study=imaged_study(w)["study"]
            )[0].pk
        },
        entitled=lambda w: w.gp.user,
        # Another doctor of the same patient does not revoke the GP's links.
        outsider=lambda w: w.oncologist.user,
        method="post",
        expect=302,
        audit_event=AuditEventId.SECURITY_ALERT,
        patient=lambda w: w.patient,
    ),
    # --- DICOMweb service ---
    "dicomweb-studies": DicomWebRoute(kwargs=lambda w: {}, search=True),
    "dicomweb-study": DicomWebRoute(
        kwargs=lambda w: _study_kwargs(w, "study_uid"),
        accept='multipart/related; type="application/dicom"',
    ),
    "dicomweb-study-metadata": DicomWebRoute(kwargs=lambda w: _study_kwargs(w, "study_uid")),
    "dicomweb-study-thumbnail": DicomWebRoute(kwargs=lambda w: _study_kwargs(w, "study_uid")),
    "dicomweb-study-series": DicomWebRoute(kwargs=lambda w: _study_kwargs(w, "study_uid")),
    "dicomweb-study-instances": DicomWebRoute(kwargs=lambda w: _study_kwargs(w, "study_uid")),
    "dicomweb-series": DicomWebRoute(
        kwargs=lambda w: _study_kwargs(w, "study_uid", "series_uid"),
        accept='multipart/related; type="application/dicom"',
    ),
    "dicomweb-series-metadata": DicomWebRoute(
        kwargs=lambda w: _study_kwargs(w, "study_uid", "series_uid")
    ),
    "dicomweb-series-rendered": DicomWebRoute(
        kwargs=lambda w: _study_kwargs(w, "study_uid", "series_uid")
    ),
    "dicomweb-series-thumbnail": DicomWebRoute(
        kwargs=lambda w: _study_kwargs(w, "study_uid", "series_uid")
    ),
    "dicomweb-series-instances": DicomWebRoute(
        kwargs=lambda w: _study_kwargs(w, "study_uid", "series_uid")
    ),
    "dicomweb-instance": DicomWebRoute(
        kwargs=lambda w: _study_kwargs(w, "study_uid", "series_uid", "sop_uid"),
        accept='multipart/related; type="application/dicom"',
    ),
    "dicomweb-instance-metadata": DicomWebRoute(
        kwargs=lambda w: _study_kwargs(w, "study_uid", "series_uid", "sop_uid")
    ),
    "dicomweb-instance-rendered": DicomWebRoute(
        kwargs=lambda w: _study_kwargs(w, "study_uid", "series_uid", "sop_uid")
    ),
    "dicomweb-instance-thumbnail": DicomWebRoute(
        kwargs=lambda w: _study_kwargs(w, "study_uid", "series_uid", "sop_uid")
    ),
    "dicomweb-frames": DicomWebRoute(
        kwargs=lambda w: {
            **_study_kwargs(w, "study_uid", "series_uid", "sop_uid"),
            "frame_list": "1",
        },
        accept='multipart/related; type="application/octet-stream"',
    ),
    "dicomweb-frames-rendered": DicomWebRoute(
        kwargs=lambda w: {
            **_study_kwargs(w, "study_uid", "series_uid", "sop_uid"),
            "frame_list": "1",
        },
    ),
    "study-viewer": ObjectRoute(
        kwargs=lambda w: {"study_id": imaged_study(w)["study"].pk},
        entitled=lambda w: w.gp.user,
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[lambda w: w.admin_user],
        audit_event=AuditEventId.INSTANCES_ACCESSED,
        patient=lambda w: w.patient,
    ),
    "review-room-create": ObjectRoute(
        kwargs=lambda w: {"study_id": imaged_study(w)["study"].pk},
        entitled=lambda w: w.oncologist.user,
        outsider=lambda w: w.outsider.user,
        method="post",
        data=lambda w: {"title": "RCP thoracique", "members": [w.gp.pk]},
        expect=302,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "review-room-list": SignedIn(audit_event=AuditEventId.QUERY, patient_data=True),
    "review-room": ObjectRoute(
        kwargs=lambda w: {"room_id": _review_room(w).pk},
        entitled=lambda w: w.gp.user,
        outsider=lambda w: w.outsider.user,
        # Seeing the patient is not enough: one must be invited (the surgeon is not).
        extra_outsiders=[lambda w: w.admin_user, lambda w: _surgeon_in_care_team(w)],
        audit_event=AuditEventId.INSTANCES_ACCESSED,
        patient=lambda w: w.patient,
    ),
    "review-room-close": ObjectRoute(
        kwargs=lambda w: {"room_id": _review_room(w).pk},
        entitled=lambda w: w.oncologist.user,
        outsider=lambda w: w.outsider.user,
        method="post",
        expect=302,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    # --- rcp ---
    "rcp-home": SignedIn(audit_event=AuditEventId.QUERY, patient_data=True),
    # The GP's list of his patients' cases (only theirs: empty for anyone else).
    "rcp-gp-cases": SignedIn(audit_event=AuditEventId.QUERY, patient_data=True),
    "rcp-committee": ObjectRoute(
        kwargs=lambda w: {"committee_id": _rcp(w).thoracic.pk},
        entitled=lambda w: w.surgeon.user,
        # A member of another committee, the patient's GP: not members.
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[lambda w: w.gp.user, lambda w: w.admin_user],
        audit_event=AuditEventId.PATIENT_RECORD,
        patient_data=True,
    ),
    "rcp-committee-create": GlobalPermission(holder=_regional_admin),
    "rcp-committee-members": _committee_admin_route(
        lambda w: {"committee_id": _rcp(w).thoracic.pk}, method="get", expect=200
    ),
    "rcp-committee-member-role": _committee_admin_route(
        lambda w: _thoracic_member(w, "surgeon"),
        data=lambda w: {"role": "coordinator", "seen_role": "member"},
    ),
    "rcp-committee-member-remove": _committee_admin_route(
        lambda w: _thoracic_member(w, "radiotherapist"), data=lambda w: {"seen_role": "member"}
    ),
    "rcp-committee-specialties": _committee_admin_route(
        lambda w: {"committee_id": _rcp(w).thoracic.pk},
        data=lambda w: {
            "specialties": ["chirurgie_thoracique", "oncologie_medicale"],
            "seen": ",".join(_rcp(w).thoracic.required_specialties),
        },
    ),
    "rcp-session": ObjectRoute(
        kwargs=lambda w: {"session_id": _rcp(w).session.pk},
        entitled=lambda w: w.surgeon.user,
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[lambda w: w.gp.user],
        audit_event=AuditEventId.PATIENT_RECORD,
    ),
    "rcp-session-agenda-add": ObjectRoute(
        # The objects the data names are built with the kwargs, before any request.
        kwargs=lambda w: {"session_id": _rcp_case(w, "submitted").committee.sessions.first().pk},
        entitled=lambda w: w.coordinator.user,
        outsider=lambda w: w.outsider.user,
        method="post",
        data=lambda w: {"case": _rcp_case(w, "submitted").pk},
        expect=302,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
        refusal_patient=lambda w: None,  # a session is about several patients
    ),
    "rcp-session-open": ObjectRoute(
        kwargs=lambda w: {"session_id": _session_today(w).pk},
        entitled=lambda w: w.coordinator.user,
        outsider=lambda w: w.outsider.user,
        method="post",
        expect=302,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient_data=False,
    ),
    "rcp-session-close": ObjectRoute(
        kwargs=lambda w: {"session_id": _session_today(w).pk},
        entitled=lambda w: w.coordinator.user,
        outsider=lambda w: w.outsider.user,
        method="post",
        expect=302,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient_data=False,
    ),
    "rcp-session-agenda-send": ObjectRoute(
        kwargs=lambda w: {"session_id": _rcp_case(w).session_id},
        entitled=lambda w: w.coordinator.user,
        outsider=lambda w: w.outsider.user,
        method="post",
        expect=302,
        # The e-mail lists the cases by initials and question: one event for the session.
        audit_event=AuditEventId.PATIENT_RECORD,
    ),
    "rcp-session-agenda-move": ObjectRoute(
        kwargs=lambda w: {"session_id": _two_on_agenda(w) and _rcp(w).session.pk},
        entitled=lambda w: w.coordinator.user,
        outsider=lambda w: w.outsider.user,
        method="post",
        data=_two_on_agenda,
        expect=302,
        audit_event=AuditEventId.PATIENT_RECORD,
    ),
    "rcp-session-live": ObjectRoute(
        kwargs=lambda w: {"session_id": _rcp_case(w).session_id},
        entitled=lambda w: w.surgeon.user,
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[lambda w: w.gp.user],
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,  # the case under discussion
        refusal_patient=lambda w: None,  # a session is about several patients
    ),
    "rcp-session-quorum": ObjectRoute(
        kwargs=lambda w: {"session_id": _rcp(w).session.pk},
        entitled=lambda w: w.surgeon.user,
        outsider=lambda w: w.outsider.user,
        patient_data=False,  # who attends, and the quorum
    ),
    "rcp-session-attend": ObjectRoute(
        kwargs=lambda w: {"session_id": _rcp(w).session.pk},
        entitled=lambda w: w.surgeon.user,
        outsider=lambda w: w.outsider.user,
        method="post",
        data=lambda w: {"mode": "remote"},
        expect=302,
        patient_data=False,
    ),
    "rcp-case-create": ObjectRoute(
        kwargs=lambda w: {"patient_id": _rcp(w).patient.pk},
        entitled=lambda w: w.oncologist.user,
        outsider=lambda w: w.outsider.user,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "rcp-case": ObjectRoute(
        kwargs=lambda w: {"case_id": _rcp_case(w).pk},
        entitled=lambda w: w.surgeon.user,
        # A member of another committee gets 404 on this one's cases; the patient's GP reads
        # it (tests/test_gp_rcp_access.py), the GP of another patient does not.
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[lambda w: w.admin_user],
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "rcp-case-submit": ObjectRoute(
        kwargs=lambda w: {"case_id": _rcp_case(w, "draft").pk},
        entitled=lambda w: w.oncologist.user,
        outsider=lambda w: w.outsider.user,
        # The patient's GP reads the case, never acts on it.
        extra_outsiders=[lambda w: w.gp.user],
        method="post",
        expect=302,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "rcp-case-agenda": ObjectRoute(
        kwargs=lambda w: {"case_id": _rcp_case(w, "submitted").pk},
        entitled=lambda w: w.coordinator.user,
        outsider=lambda w: w.outsider.user,
        # The patient's GP reads the case, never acts on it.
        extra_outsiders=[lambda w: w.gp.user],
        method="post",
        data=lambda w: {"session": _rcp(w).session.pk},
        expect=302,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "rcp-case-postpone": ObjectRoute(
        kwargs=lambda w: {"case_id": _rcp_case(w).pk},
        entitled=lambda w: w.coordinator.user,
        outsider=lambda w: w.outsider.user,
        # The patient's GP reads the case, never acts on it.
        extra_outsiders=[lambda w: w.gp.user],
        method="post",
        data=lambda w: {"session": _rcp(w).later_session.pk},
        expect=302,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "rcp-case-register": ObjectRoute(
        kwargs=lambda w: {"case_id": _rcp_case(w).pk},
        entitled=lambda w: w.coordinator.user,
        outsider=lambda w: w.outsider.user,
        # The patient's GP reads the case, never acts on it.
        extra_outsiders=[lambda w: w.gp.user],
        method="post",
        expect=302,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "rcp-case-opinion": ObjectRoute(
        kwargs=lambda w: {"case_id": _rcp_case(w).pk},
        entitled=lambda w: _rcp(w).radiotherapist.user,
        outsider=lambda w: w.outsider.user,
        # The patient's GP reads the case, never acts on it.
        extra_outsiders=[lambda w: w.gp.user],
        method="post",
        data=lambda w: {"text": "Radiothérapie stéréotaxique possible si inopérable."},
        expect=302,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "rcp-case-document-upload": ObjectRoute(
        kwargs=lambda w: {"case_id": _rcp_case(w).pk},
        entitled=lambda w: w.oncologist.user,
        outsider=lambda w: w.outsider.user,
        # The patient's GP reads the case, never acts on it.
        extra_outsiders=[lambda w: w.gp.user],
        method="post",
        data=lambda w: {
            "kind": "pathology",
            "title": "Compte rendu anatomopathologique",
            "file": SimpleUploadedFile("cr.pdf", b"%PDF-1.7\n%%EOF\n"),
        },
        expect=302,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "rcp-case-document": ObjectRoute(
        kwargs=lambda w: {"case_id": _rcp_case(w).pk, "document_id": _case_document(w).pk},
        entitled=lambda w: w.surgeon.user,
        outsider=lambda w: w.outsider.user,
        # The patient's GP reads his patient's case (tests/test_gp_rcp_access.py).
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "rcp-case-decision": ObjectRoute(
        kwargs=lambda w: {"case_id": _rcp_case(w).pk},
        entitled=lambda w: w.surgeon.user,
        outsider=lambda w: w.outsider.user,
        # The patient's GP reads the case, never acts on it.
        extra_outsiders=[lambda w: w.gp.user],
        method="post",
        data=lambda w: {"proposal": "Lobectomie.", "treatment_types": ["387713003"]},
        expect=302,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "rcp-case-validate": ObjectRoute(
        kwargs=lambda w: {"case_id": _discussed(w).pk},
        entitled=lambda w: w.oncologist.user,
        outsider=lambda w: w.outsider.user,
        # The patient's GP reads the case, never acts on it.
        extra_outsiders=[lambda w: w.gp.user],
        method="post",
        data=lambda w: {"revision": _discussed(w).decisions.get().revision},
        expect=302,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "rcp-case-validate-without-quorum": ObjectRoute(
        kwargs=lambda w: {"case_id": _discussed(w, without_quorum=True).pk},
        entitled=lambda w: w.oncologist.user,
        outsider=lambda w: w.outsider.user,
        method="post",
        data=lambda w: {
            "revision": _discussed(w, without_quorum=True).decisions.get().revision,
            "reason": "Radiothérapeute absent, décision urgente.",
        },
        expect=302,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "rcp-case-confirm-without-quorum": ObjectRoute(
        kwargs=lambda w: {"case_id": _asked_without_quorum(w).pk},
        entitled=lambda w: w.coordinator.user,
        outsider=lambda w: w.outsider.user,
        method="post",
        data=lambda w: {"revision": _asked_without_quorum(w).decisions.get().revision},
        expect=302,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "rcp-case-amend": ObjectRoute(
        kwargs=lambda w: {"case_id": _rcp_case(w, "validated").pk},
        entitled=lambda w: w.oncologist.user,
        outsider=lambda w: w.outsider.user,
        # The patient's GP reads the case, never acts on it.
        extra_outsiders=[lambda w: w.gp.user],
        method="post",
        data=lambda w: {"reason": "Résultat de la biopsie reçu après la réunion."},
        expect=302,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    # --- RCP key images (rcp/views/key_images.py) ---
    "rcp-case-key-image-add": ObjectRoute(
        kwargs=lambda w: {"case_id": _rcp_case(w).pk},
        entitled=lambda w: w.surgeon.user,
        patient=lambda w: w.patient,
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[lambda w: w.gp.user],
        method="post",
        # The matrix posts a form; the endpoint takes JSON only, and says so with a 400
        # (adding, with its audit event, is tested in tests/test_rcp_key_images.py).
        expect=400,
    ),
    "rcp-case-key-images": ObjectRoute(
        kwargs=lambda w: {"case_id": _rcp_case(w).pk},
        entitled=lambda w: w.surgeon.user,
        outsider=lambda w: w.outsider.user,
        # The patient's GP reads his patient's case (tests/test_gp_rcp_access.py).
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "rcp-case-key-image": ObjectRoute(
        kwargs=_key_image_kwargs,
        entitled=lambda w: w.surgeon.user,
        outsider=lambda w: w.outsider.user,
        # The patient's GP reads his patient's case (tests/test_gp_rcp_access.py).
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "rcp-case-key-image-remove": ObjectRoute(
        kwargs=_key_image_kwargs,
        # Not the author: the committee's coordinator may remove it too.
        entitled=lambda w: w.coordinator.user,
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[lambda w: w.gp.user],
        method="post",
        expect=302,
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    # --- RCP calendar feeds ---
    "rcp-calendar": SignedIn(),
    # Search over the national code lists of the fiche RCP: reference data, no patient data.
    "rcp-codes-topography": SignedIn(),
    "rcp-codes-morphology": SignedIn(),
    "rcp-calendar-feed": TokenRoute(
        kwargs=lambda w: {"token": _calendar_token(w)}, revoke=_calendar_token_revoke
    ),
    "rcp-committee-calendar-feed": TokenRoute(
        kwargs=lambda w: {"token": _calendar_token(w), "committee_id": _rcp(w).thoracic.pk},
        revoke=_calendar_token_revoke,
    ),
    "rcp-committee-calendar": ObjectRoute(
        kwargs=lambda w: {"committee_id": _rcp(w).thoracic.pk},
        entitled=lambda w: w.surgeon.user,
        outsider=lambda w: w.outsider.user,
        # The patient's GP and the administrator do not sit on the committee.
        extra_outsiders=[lambda w: w.gp.user, lambda w: w.admin_user],
        patient_data=False,  # committee and session facts only
    ),
    "rcp-committee-indicators": ObjectRoute(
        kwargs=lambda w: {"committee_id": _rcp(w).thoracic.pk},
        entitled=lambda w: w.surgeon.user,
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[lambda w: w.gp.user, lambda w: w.admin_user],
        audit_event=AuditEventId.QUERY,
        patient_data=False,  # counts only, no patient; audited as a query
    ),
    "rcp-committee-indicators-csv": ObjectRoute(
        kwargs=lambda w: {"committee_id": _rcp(w).thoracic.pk},
        entitled=lambda w: w.surgeon.user,
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[lambda w: w.gp.user, lambda w: w.admin_user],
        audit_event=AuditEventId.EXPORT,
        patient_data=False,
    ),
    # Every committee for the regional programme; a committee's members see theirs (the
    # matrix's oncologist and coordinator sit on none until the RCP world is built).
    "rcp-indicators": GlobalPermission(holder=_regional_programme, audit_event=AuditEventId.QUERY),
    "rcp-indicators-csv": GlobalPermission(
        holder=_regional_programme, audit_event=AuditEventId.EXPORT
    ),
    # --- RCP PDF outputs ---
    "rcp-case-outputs": ObjectRoute(
        kwargs=lambda w: {"case_id": _rcp_case(w, "validated").pk},
        entitled=lambda w: w.surgeon.user,
        patient=lambda w: w.patient,
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[lambda w: w.admin_user],
        patient_data=False,  # the case's PDFs and their state, polled
    ),
    "rcp-case-pdf-request": ObjectRoute(
        kwargs=lambda w: {"case_id": _rcp_case(w, "validated").pk},
        entitled=lambda w: w.coordinator.user,
        patient=lambda w: w.patient,
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[lambda w: w.gp.user, lambda w: w.admin_user],
        method="post",
        expect=302,
    ),
    "rcp-case-pdf": ObjectRoute(
        kwargs=lambda w: {
            "case_id": _rcp_case(w, "validated").pk,
            "document_id": _rcp_fiche(w).pk,
        },
        # The patient's GP receives the fiche of the validated decision.
        entitled=lambda w: w.gp.user,
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[lambda w: w.admin_user],
        audit_event=AuditEventId.EXPORT,
        patient=lambda w: w.patient,
    ),
    "rcp-session-outputs": ObjectRoute(
        kwargs=lambda w: {"session_id": _rcp(w).session.pk},
        entitled=lambda w: w.surgeon.user,
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[lambda w: w.gp.user],
        patient_data=False,  # the session's minutes and their state, polled
    ),
    "rcp-minutes-pdf-request": ObjectRoute(
        kwargs=lambda w: {"session_id": _rcp(w).session.pk},
        entitled=lambda w: w.coordinator.user,
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[lambda w: w.gp.user],
        method="post",
        expect=302,
    ),
    "rcp-minutes-pdf": ObjectRoute(
        kwargs=lambda w: {
            "session_id": _rcp_minutes(w).session_id,
            "document_id": _rcp_minutes(w).pk,
        },
        entitled=lambda w: w.surgeon.user,
        outsider=lambda w: w.outsider.user,
        # The patient's GP sees the fiche of a validated case, never a whole session.
        extra_outsiders=[lambda w: w.gp.user, lambda w: w.admin_user],
        audit_event=AuditEventId.EXPORT,
    ),
    "expertise-home": SignedIn(audit_event=AuditEventId.QUERY, patient_data=True),
    "expertise-request-create": ObjectRoute(
        kwargs=lambda w: {"patient_id": w.patient.pk},
        entitled=lambda w: w.gp.user,
        outsider=lambda w: w.outsider.user,
        extra_outsiders=[lambda w: w.admin_user],
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "expertise-request": _expertise_route(
        "accepted", entitled=lambda w: _tele(w).teleradiologist.user, method="get", expect=200
    ),
    "expertise-request-edit": _expertise_route(
        "draft",
        entitled=lambda w: w.gp.user,
        method="get",
        expect=200,
        # A draft is its author's only: not even the pool's experts see it.
    ),
    "expertise-attachment-add": _expertise_route(
        "draft",
        entitled=lambda w: w.gp.user,
        data=lambda w: {
            "file-kind": "photo",
            "file-title": "Lésion",
            "file-file": _jpeg(),
        },
    ),
    "expertise-attachment": ObjectRoute(
        kwargs=lambda w: {
            "request_id": _expertise_attachment(w).request_id,
            "attachment_id": _expertise_attachment(w).pk,
        },
        entitled=lambda w: w.gp.user,
        outsider=lambda w: _tele(w).teleradiologist.user,  # a draft: not routed yet
        extra_outsiders=[lambda w: w.outsider.user, lambda w: w.admin_user],
        audit_event=AuditEventId.PATIENT_RECORD,
        patient=lambda w: w.patient,
    ),
    "expertise-request-send": _expertise_route("draft", entitled=lambda w: w.gp.user),
    "expertise-request-claim": _expertise_route(
        "sent", entitled=lambda w: _tele(w).second_radiologist.user
    ),
    "expertise-request-decline": _expertise_route(
        "accepted",
        entitled=lambda w: _tele(w).teleradiologist.user,
        data=lambda w: {"reason": "Hors de mon champ.", "to": "requester"},
    ),
    "expertise-request-ask": _expertise_route(
        "accepted",
        entitled=lambda w: _tele(w).teleradiologist.user,
        data=lambda w: {"question": "Antécédents ?"},
    ),
    "expertise-message-post": _expertise_route(
        "accepted", entitled=lambda w: w.gp.user, data=lambda w: {"body": "Merci."}
    ),
    "expertise-report-save": _expertise_route(
        "accepted",
        entitled=lambda w: _tele(w).teleradiologist.user,
        data=lambda w: {"findings": "Nodule", "conclusion": "Bénin", "revision": ""},
    ),
    "expertise-report-sign": _expertise_route(
        "reported",
        entitled=lambda w: _tele(w).teleradiologist.user,
        # The password re-entered is the signature.
        data=lambda w: {
            "revision": _expertise_request(w, "reported").report.revision,
            "password": "correct-horse-battery-staple",
        },
    ),
    "expertise-report-confirm": _expertise_route(
        "reported", entitled=lambda w: _tele(w).teleradiologist.user, method="get", expect=200
    ),
    "expertise-request-close": _expertise_route(
        "answered", entitled=lambda w: w.gp.user, data=lambda w: {"outcome": "exam_avoided"}
    ),
    "expertise-request-cancel": _expertise_route(
        "sent", entitled=lambda w: w.gp.user, data=lambda w: {"reason": "Plus nécessaire."}
    ),
    "expertise-request-redraft": _expertise_route("declined", entitled=lambda w: w.gp.user),
    "expertise-review-start": _expertise_route(
        "accepted",
        entitled=lambda w: _tele(w).teleradiologist.user,
        data=lambda w: {"study": w.ct.pk},
    ),
    "expertise-pool": ObjectRoute(
        kwargs=lambda w: {"pool_id": _tele(w).teleradiology.pk},
        entitled=lambda w: _tele(w).pool_coordinator.user,
        outsider=lambda w: _tele(w).outsider.user,
        # The pool's experts have their queue; the board is the coordinator's.
        extra_outsiders=[lambda w: _tele(w).teleradiologist.user, lambda w: w.admin_user],
        audit_event=AuditEventId.QUERY,
    ),
    "expertise-pool-create": GlobalPermission(holder=_regional_admin),
    "expertise-pool-manage": _pool_admin_route(
        lambda w: {"pool_id": _tele(w).teleradiology.pk}, method="get", expect=200
    ),
    "expertise-pool-member-role": _pool_admin_route(
        lambda w: _teleradiology_member(w, "second_radiologist"),
        data=lambda w: {"role": "coordinator", "seen_role": "expert"},
    ),
    "expertise-pool-member-remove": _pool_admin_route(
        lambda w: _teleradiology_member(w, "second_radiologist"),
        data=lambda w: {"seen_role": "expert"},
    ),
    "expertise-pool-settings": _pool_admin_route(
        lambda w: {"pool_id": _tele(w).teleradiology.pk},
        data=lambda w: {
            "is_active": "on",
            "urgent_hours": 12,
            "priority_days": 3,
            "routine_days": 7,
            "revision": _tele(w).teleradiology.revision,
        },
    ),
    "expertise-report-outputs": ObjectRoute(
        kwargs=lambda w: {"request_id": _expertise_request(w, "answered").pk},
        entitled=lambda w: _tele(w).teleradiologist.user,
        patient=lambda w: w.patient,
        outsider=lambda w: _tele(w).outsider.user,
        extra_outsiders=[lambda w: _tele(w).second_radiologist.user, lambda w: w.admin_user],
        patient_data=False,  # the state of the report's PDF, polled
    ),
    "expertise-report-pdf": ObjectRoute(
        kwargs=lambda w: {
            "request_id": _expertise_request(w, "answered").pk,
            "document_id": _expertise_report_pdf(w).pk,
        },
        # The patient's GP (here also the requester) receives the signed report.
        entitled=lambda w: w.gp.user,
        outsider=lambda w: _tele(w).outsider.user,
        # The pool's other radiologist lost sight of it when the teleradiologist claimed it.
        extra_outsiders=[lambda w: _tele(w).second_radiologist.user, lambda w: w.admin_user],
        audit_event=AuditEventId.EXPORT,
        patient=lambda w: w.patient,
    ),
    "expertise-report-pdf-retry": ObjectRoute(
        kwargs=lambda w: {"request_id": _expertise_request(w, "answered").pk},
        entitled=lambda w: w.gp.user,  # the requester (the expert may too)
        patient=lambda w: w.patient,
        outsider=lambda w: _tele(w).outsider.user,
        extra_outsiders=[lambda w: _tele(w).second_radiologist.user, lambda w: w.admin_user],
        method="post",
        expect=302,
    ),
    "expertise-indicators": GlobalPermission(
        holder=_expertise_evaluator, audit_event=AuditEventId.QUERY
    ),
    "expertise-acts": GlobalPermission(holder=_billing_office, audit_event=AuditEventId.EXPORT),
    # The programme's imaging indicators (issue 17): the regional programme reads every
    # establishment's (a director his own: tests/test_activity_page.py).
    "imaging-activity": GlobalPermission(
        holder=_regional_programme, audit_event=AuditEventId.QUERY
    ),
    "notification-list": SignedIn(),
    "notification-mark-read": SignedIn(method="post", expect=302),
    # The idle script's keep-alive: how long the session has left, "I am still here".
    "session-keepalive": SignedIn(method="post"),
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
    # --- the scoped administration ---
    "administration-home": GlobalPermission(holder=tours_administration),
    "administration-establishment-create": GlobalPermission(holder=regional_administrator),
    "administration-roles": GlobalPermission(holder=regional_administrator),
    "administration-establishment": _administration_route(
        lambda w: {"establishment_id": w.tours.pk},
        entitled=regional_administrator,
        # Its own establishment's administrator does not edit its identity.
        outsider=tours_administration,
        extra_outsiders=[lambda w: w.oncologist.user, lambda w: w.admin_user],
    ),
    "administration-dicom": _administration_route(
        lambda w: {"establishment_id": w.tours.pk},
        entitled=regional_administrator,
        outsider=tours_administration,
        extra_outsiders=[lambda w: w.admin_user],
    ),
    "administration-professionals": _administration_route(
        lambda w: {"establishment_id": w.tours.pk},
        entitled=tours_administration,
        outsider=bourges_administration,
        extra_outsiders=[lambda w: w.oncologist.user],
    ),
    "administration-affiliation-end": _administration_route(
        _surgeon_at_tours,
        entitled=tours_administration,
        outsider=bourges_administration,
        extra_outsiders=[lambda w: w.surgeon.user],
        method="post",
        expect=302,
        audit_event=AuditEventId.SECURITY_ALERT,
    ),
    "administration-professional-role": _administration_route(
        lambda w: {"establishment_id": w.tours.pk, "professional_id": w.surgeon.pk},
        entitled=tours_administration,
        outsider=bourges_administration,
        method="post",
        data=lambda w: {"role": "establishment_admin", "operation": "grant"},
        expect=302,
        audit_event=AuditEventId.SECURITY_ALERT,
    ),
    "administration-role-revoke": _administration_route(
        _dpo_role_holder,
        entitled=regional_administrator,
        outsider=tours_administration,
        extra_outsiders=[lambda w: w.auditor_user],
        method="post",
        expect=302,
        audit_event=AuditEventId.SECURITY_ALERT,
    ),
    # The same report as a letter to the patient (PDF): the DPO only, the care team no more
    # than the establishment's administration; tests/test_access_letter.py.
    "patient-access-letter": ObjectRoute(
        kwargs=lambda w: {"patient_id": w.patient.pk},
        entitled=lambda w: w.auditor_user,
        outsider=lambda w: w.oncologist.user,
        audit_event=AuditEventId.EXPORT,
        patient=lambda w: w.patient,
    ),
    # The GP's working page: his own patients' items only (tests/test_gp_home.py); anyone else
    # signed in finds an empty list.
    "gp-home": SignedIn(audit_event=AuditEventId.QUERY, patient_data=True),
    "gp-home-read": SignedIn(method="post", expect=302),
    # One's own choice of notification e-mails (tests/test_digest.py).
    "account-notifications": SignedIn(),
}


def _access_request(world):
    """A pending request of the surgeon (Tours, not in the care team) for world.patient, whose
    referring doctor is the oncologist (built once per world)."""
    from portal.access_requests import access_request_create

    cache = world.__dict__.setdefault("_access_requests", [])
    if not cache:
        cache.append(
            access_request_create(
                patient=world.patient,
                reason="Transfer to thoracic surgery: pre-operative assessment.",
                by=Actor(user=world.surgeon.user),
            )
        )
    return cache[0]


def _granted_access_request(world):
    from portal.access_requests import access_request_answer

    access_request = _access_request(world)
    if access_request.state == "en_attente":
        access_request_answer(
            access_request=access_request, grant=True, by=Actor(user=world.oncologist.user)
        )
    return access_request


def _emergency_access(world):
    """An emergency access of the Bourges radiologist to world.patient (built once)."""
    from portal.emergency import emergency_open

    cache = world.__dict__.setdefault("_emergencies", [])
    if not cache:
        cache.append(
            emergency_open(
                patient=world.patient,
                reason="Unconscious patient admitted to the emergency room at night.",
                confirmed=True,
                by=Actor(user=world.outsider.user),
            )
        )
    return cache[0]


MATRIX.update(
    {
        # A professional newly in charge of a patient (portal.views_access). The lookup and
        # the pages of one's own requests show only what the user asked; the request and
        # the emergency access act on the patient of the session's lookup, never on an id
        # of the address (without one: back to the lookup).
        "access-lookup": SignedIn(),
        "access-request-create": SignedIn(method="post", expect=302),
        "access-emergency": SignedIn(expect=302),
        "access-request-list": SignedIn(),
        "access-request-inbox": SignedIn(audit_event=AuditEventId.QUERY),
        "access-request-answer": ObjectRoute(
            kwargs=lambda w: {"access_request_id": _access_request(w).pk},
            entitled=lambda w: w.oncologist.user,
            # The GP of the patient is not the referring doctor; the requester does not
            # answer his own request.
            outsider=lambda w: w.gp.user,
            extra_outsiders=[lambda w: w.surgeon.user, lambda w: w.auditor_user],
            method="post",
            data=lambda w: {"decision": "grant"},
            expect=302,
            audit_event=AuditEventId.SECURITY_ALERT,
            patient=lambda w: w.patient,
        ),
        "access-request-renew": ObjectRoute(
            kwargs=lambda w: {"access_request_id": _granted_access_request(w).pk},
            entitled=lambda w: w.oncologist.user,
            outsider=lambda w: w.gp.user,
            extra_outsiders=[lambda w: w.surgeon.user],
            method="post",
            expect=302,
            audit_event=AuditEventId.SECURITY_ALERT,
            patient=lambda w: w.patient,
        ),
        "emergency-review-list": GlobalPermission(
            holder=lambda w: w.auditor_user, audit_event=AuditEventId.QUERY
        ),
        # The holder ends his own emergency access early; nobody else can, the DPO included.
        "emergency-end": ObjectRoute(
            kwargs=lambda w: {"emergency_id": _emergency_access(w).pk},
            entitled=lambda w: w.outsider.user,
            outsider=lambda w: w.oncologist.user,
            extra_outsiders=[lambda w: w.auditor_user],
            method="post",
            expect=302,
            audit_event=AuditEventId.EMERGENCY_OVERRIDE,
            patient=lambda w: w.patient,
        ),
        "emergency-review": ObjectRoute(
            kwargs=lambda w: {"emergency_id": _emergency_access(w).pk},
            entitled=lambda w: w.auditor_user,
            # The patient's doctors do not review the emergency accesses to the record.
            outsider=lambda w: w.oncologist.user,
            extra_outsiders=[lambda w: w.outsider.user],
            method="post",
            data=lambda w: {"verdict": "justifie", "comment": "Admission confirmed."},
            expect=302,
            audit_event=AuditEventId.AUDIT_LOG_USED,
            patient=lambda w: w.patient,
        ),
    }
)

# --- Shares with a doctor who has no account (imaging.shares) -----------------------------------


@dataclass
class ShareLinkRoute:
    """Reached without an account, by the share's link token in the address
    (tests/test_permission_matrix.py ``test_share_link_*``): an unknown token → 404; a revoked
    or expired share → 410 (a page that says so); ``granted`` routes send a browser without
    the code (or with a wrong one) back to the landing page (302), and answer ``expect`` once
    the code was entered, auditing ``opening_audit_event`` against the patient in the
    recipient's name."""

    kwargs: Callable  # world -> URL kwargs, with the share's link token
    granted: bool = True
    method: str = "get"
    expect: int = 200
    opening_audit_event: str | None = None
    # Whether the route counts as an opening of the share (Share.view_count): asking for the
    # DICOMDIR package is audited but views nothing yet.
    counts_view: bool = True


def share_link(world):
    """World.patient's CT and its report shared with Dr Garnier by Dr Martin: (share, token)."""
    from imaging import shares

    cache = world.__dict__.setdefault("_shares", [])
    if not cache:
        study = imaged_study(world)["study"]
        report = _study_report(world)
        documents = [
            item
            for item in shares.shareable_documents(
                user=world.oncologist.user, patient=world.patient
            )
            if item.document == report
        ]
        cache.append(
            shares.share_create(
                patient=world.patient,
                studies=[study],
                documents=documents,
                recipient_name="Dr Hélène Garnier",
                recipient_email="h.garnier@chu-lyon.test",
                allow_download=True,
                by=Actor(user=world.oncologist.user),
            )
        )
    return cache[0]


def _share_token(world) -> str:
    return share_link(world)[1]


def _share_package(world):
    """The DICOMDIR package of share_link(world), asked by its recipient and built (once)."""
    from imaging import packages, shares

    cache = world.__dict__.setdefault("_share_packages", [])
    if not cache:
        share = share_link(world)[0]
        package = shares.share_package_request(
            share=share, actor=Actor(name=shares.share_actor_name(share))
        )
        packages.package_build(package_id=package.pk)
        cache.append(package)
    return cache[0]


MATRIX.update(
    {
        "share-create": ObjectRoute(
            kwargs=lambda w: {"patient_id": w.patient.pk},
            entitled=lambda w: w.oncologist.user,
            outsider=lambda w: w.outsider.user,
            audit_event=AuditEventId.PATIENT_RECORD,
            patient=lambda w: w.patient,
        ),
        # GET: the confirmation; the DPO reaches it too (tests/test_shares.py).
        "share-revoke": ObjectRoute(
            kwargs=lambda w: {"share_id": share_link(w)[0].pk},
            entitled=lambda w: w.oncologist.user,
            outsider=lambda w: w.outsider.user,
            audit_event=AuditEventId.PATIENT_RECORD,
            patient=lambda w: w.patient,
        ),
        # The DPO's list of every share (he revokes without being in care).
        "share-dpo-list": GlobalPermission(
            holder=lambda w: w.auditor_user, audit_event=AuditEventId.QUERY
        ),
        "share-landing": ShareLinkRoute(kwargs=lambda w: {"token": _share_token(w)}, granted=False),
        "share-code": ShareLinkRoute(kwargs=lambda w: {"token": _share_token(w)}, granted=False),
        "share-contents": ShareLinkRoute(
            kwargs=lambda w: {"token": _share_token(w)},
            opening_audit_event=AuditEventId.PATIENT_RECORD,
        ),
        "share-study": ShareLinkRoute(
            kwargs=lambda w: {"token": _share_token(w), "study_id": imaged_study(w)["study"].pk},
            opening_audit_event=AuditEventId.INSTANCES_ACCESSED,
        ),
        "share-document": ShareLinkRoute(
            kwargs=lambda w: {
                "token": _share_token(w),
                "document_id": share_link(w)[0].documents.get().pk,
            },
            opening_audit_event=AuditEventId.PATIENT_RECORD,
        ),
        # The recipient's DICOMDIR package (tests/test_shares_package.py).
        "share-package-request": ShareLinkRoute(
            kwargs=lambda w: {"token": _share_token(w)},
            method="post",
            expect=302,
            opening_audit_event=AuditEventId.PATIENT_RECORD,
            counts_view=False,
        ),
        "share-package": ShareLinkRoute(
            kwargs=lambda w: {"token": _share_token(w), "package_id": _share_package(w).pk},
            opening_audit_event=AuditEventId.PATIENT_RECORD,
        ),
        "share-package-download": ShareLinkRoute(
            kwargs=lambda w: {"token": _share_token(w), "package_id": _share_package(w).pk},
            opening_audit_event=AuditEventId.EXPORT,
        ),
    }
)

# Routes of libraries, covered by their own rules in the matrix test.
THIRD_PARTY_PREFIXES = {
    "accounts/": "django-allauth: sign-in, MFA, SSO; no patient data",
    "admin/": "Django admin: staff only, holds no patient or care relationship model",
}

# WebSocket routes: name -> what a connection gets.
WEBSOCKET_MATRIX = {
    "ws-notifications": "the signed-in user's own notifications; anonymous refused",
    "ws-review": (
        "a live review room: invited and entitled to the patient (checked at connect, on every "
        "changing message and when access changes); see tests/test_review_consumer.py"
    ),
}


def _today() -> dt.date:
    from django.utils import timezone

    return timezone.localdate()


def _gp_candidate(world):
    """Dr Sophie Bernard, a GP of the Vierzon practice with her account, as the national
    directory lists her (built once per world): the one the matrix declares."""
    from portal.directory_models import DirectoryIdType, DirectoryPerson

    cache = world.__dict__.setdefault("_gp_candidates", [])
    if not cache:
        professional = builders.professional(
            email="medecin.bernard@mirc.test",
            first_name="Sophie",
            last_name="Bernard",
            specialty="medecine_generale",
            establishment=world.practice,
        )
        DirectoryPerson.objects.create(
            national_id=DirectoryIdType.RPPS + professional.rpps,
            id_type=DirectoryIdType.RPPS,
            rpps=professional.rpps,
            civility="Docteur",
            last_name="BERNARD",
            first_name="SOPHIE",
            profession_code="10",
            profession_label="Médecin",
            specialty_label="Médecine générale",
            specialty="medecine_generale",
        )
        cache.append(professional)
    return cache[0]


MATRIX.update(
    {
        # Declaring the patient's GP (portal.views_gp): the referring doctor declares Dr
        # Bernard from a given date; the lookup and the confirmation (GET, and POST without a
        # date) are in tests/test_gp_declared.py.
        "patient-gp": ObjectRoute(
            kwargs=lambda w: {"patient_id": w.patient.pk},
            entitled=lambda w: w.oncologist.user,
            outsider=lambda w: w.outsider.user,
            method="post",
            data=lambda w: {
                "national_id": "8" + _gp_candidate(w).rpps,
                "started_on": _today().isoformat(),
                "seen_current": CareRelationship.objects.get(
                    patient=w.patient, role=CareRole.GP, ended_at__isnull=True
                ).pk,
            },
            expect=302,
            audit_event=AuditEventId.SECURITY_ALERT,
            patient=lambda w: w.patient,
        ),
    }
)


# --- DICOMDIR packages (imaging.packages) ----------------------------------------------------


def _ready_package(world):
    """The oncologist's DICOMDIR package of world.patient's CT, built (once per world)."""
    from imaging import packages

    cache = world.__dict__.setdefault("_packages", [])
    if not cache:
        package = packages.package_request(
            by=Actor(user=world.oncologist.user),
            patient=world.patient,
            studies=[imaged_study(world)["study"]],
        )
        cache.append(packages.package_build(package_id=package.pk))
    return cache[0]


def _dossier_with_a_study(world) -> dict:
    """world.patient's dossier, its CT built first: the POST data only names it."""
    imaged_study(world)
    return {"patient_id": world.patient.pk}


def _package_kwargs(world) -> dict:
    return {"patient_id": world.patient.pk, "package_id": _ready_package(world).pk}


MATRIX.update(
    {
        "study-package-request": ObjectRoute(
            kwargs=lambda w: {"study_id": imaged_study(w)["study"].pk},
            entitled=lambda w: w.oncologist.user,
            outsider=lambda w: w.outsider.user,
            method="post",
            expect=302,
            audit_event=AuditEventId.PATIENT_RECORD,
            patient=lambda w: w.patient,
        ),
        "imaging-package-request": ObjectRoute(
            kwargs=_dossier_with_a_study,
            entitled=lambda w: w.oncologist.user,
            outsider=lambda w: w.outsider.user,
            extra_outsiders=[lambda w: w.admin_user],
            method="post",
            data=lambda w: {"study": [imaged_study(w)["study"].pk]},
            expect=302,
            audit_event=AuditEventId.PATIENT_RECORD,
            patient=lambda w: w.patient,
        ),
        # A package is its requester's: the GP of the same patient does not see it.
        "imaging-package": ObjectRoute(
            kwargs=_package_kwargs,
            entitled=lambda w: w.oncologist.user,
            outsider=lambda w: w.outsider.user,
            extra_outsiders=[lambda w: w.gp.user],
            audit_event=AuditEventId.PATIENT_RECORD,
            patient=lambda w: w.patient,
        ),
        "imaging-package-progress": ObjectRoute(
            kwargs=_package_kwargs,
            entitled=lambda w: w.oncologist.user,
            outsider=lambda w: w.outsider.user,
            extra_outsiders=[lambda w: w.gp.user],
            patient=lambda w: w.patient,
            patient_data=False,  # state and counts only
        ),
        "imaging-package-download": ObjectRoute(
            kwargs=_package_kwargs,
            entitled=lambda w: w.oncologist.user,
            outsider=lambda w: w.outsider.user,
            extra_outsiders=[lambda w: w.gp.user],
            audit_event=AuditEventId.EXPORT,
            patient=lambda w: w.patient,
        ),
    }
)


# --- Usage statements (imaging.metering) -------------------------------------------------------


def _tours_statement(world):
    """January 2026's statement of CHRU de Tours (built once per world)."""
    from decimal import Decimal

    from imaging.models import Statement, StatementLine

    if "_tours_statement" not in world.__dict__:
        statement = Statement.objects.create(
            establishment=world.tours,
            month=dt.date(2026, 1, 1),
            issued_at=dt.datetime(2026, 2, 20, 3, 30, tzinfo=dt.UTC),
            exams_archived=2,
            exams_consulted=0,
            storage_gb=Decimal("0"),
            total=Decimal("1.60"),
        )
        StatementLine.objects.create(
            statement=statement,
            service="archive",
            modality="CT",
            quantity=Decimal(2),
            unit_price=Decimal("0.80"),
            amount=Decimal("1.60"),
        )
        world._tours_statement = statement
    return world._tours_statement


def _statement_pdf_kwargs(world) -> dict:
    from imaging.models import StatementDocument
    from portal import documents

    statement = _tours_statement(world)
    document = statement.documents.filter(status=StatementDocument.Status.READY).first()
    if document is None:
        document = documents.render(document=StatementDocument.objects.create(statement=statement))
    return {"statement_id": statement.pk, "document_id": document.pk}


def _statement_route(**fields) -> ObjectRoute:
    fields.setdefault("kwargs", lambda w: {"statement_id": _tours_statement(w).pk})
    return ObjectRoute(
        entitled=tours_administration,
        outsider=bourges_administration,
        extra_outsiders=[lambda w: w.oncologist.user],
        patient_data=False,  # an establishment's counts and amounts, no patient
        **fields,
    )


MATRIX.update(
    {
        "imaging-statements": GlobalPermission(
            holder=_regional_programme, audit_event=AuditEventId.QUERY
        ),
        "imaging-statement": _statement_route(audit_event=AuditEventId.QUERY),
        "imaging-statement-csv": _statement_route(audit_event=AuditEventId.EXPORT),
        "imaging-statement-outputs": _statement_route(),
        "imaging-statement-pdf-request": _statement_route(method="post", expect=302),
        "imaging-statement-pdf": _statement_route(
            kwargs=_statement_pdf_kwargs, audit_event=AuditEventId.EXPORT
        ),
    }
)

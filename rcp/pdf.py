"""PDF outputs of the RCP: the fiche RCP of a case and the minutes of a session.

Two entry points for the other RCP services, both safe inside their transaction (the
rendering is queued with ``transaction.on_commit``, never run in it):

* :func:`request_case_pdf` — the fiche of one validated decision version. ``decision_validate``
  calls it so that every validated version gets its fiche; asking again for a version that
  already has one (being made or ready) returns that one.
* :func:`request_minutes_pdf` — the minutes of a session, made again on request as decisions
  change; one at a time per session.

The making, storing, verified reading and serving of the files is the portal's
(:mod:`portal.documents`): this module registers the two kinds, each a template and the
function building its context (:func:`fiche_context`, :func:`minutes_context`). WeasyPrint
fetches the portal's static files and the stored media the document names (its key images),
nothing else.

The documents are in French whatever the reader's language: they are the record of the
meeting (CI-SIS FRCP), made once and kept, and their labels are those of the national value
sets (``rcp.frcp``).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Prefetch
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from portal import documents
from portal.audit import Actor
from portal.pdf import media_url
from portal.selectors import current_gp
from rcp import frcp, selectors
from rcp import permissions as may
from rcp.models import Attendance, Case, Decision, RcpDocument, Session
from rcp.quorum import quorum, required_specialties
from rcp.services import RcpError

Kind = RcpDocument.Kind
Status = RcpDocument.Status

# --- Requests (called by views and by rcp.services) ---------------------------------------------


def request_case_pdf(*, case: Case, decision: Decision, by: Actor) -> RcpDocument:
    """Queue the fiche RCP of ``decision`` (a validated version of ``case``'s decision).

    Returns the document, pending; or the one already made or being made for this version
    (a failed one is made again). Call it inside the caller's transaction: the task starts
    after commit. Raises :class:`rcp.services.RcpError` for a draft decision.
    """
    if decision.case_id != case.pk:
        raise RcpError(_("This decision belongs to another case."))
    if not decision.is_locked:
        raise RcpError(_("Only a validated decision has an RCP form."))
    return documents.reuse_or_create(
        RcpDocument,
        live=RcpDocument.objects.filter(kind=Kind.FICHE, decision=decision).exclude(
            status=Status.FAILED
        ),
        kind=Kind.FICHE,
        case=case,
        decision=decision,
        requested_by=by.user,
    )


def request_minutes_pdf(*, session: Session, by: Actor) -> RcpDocument:
    """Queue the minutes of ``session`` (all its cases in agenda order, attendance, quorum).

    Returns the pending document, or the one already being made. Minutes made earlier stay
    as they were: each request makes a new file from the record as it is now.
    """
    if session.status == Session.Status.CANCELLED:
        raise RcpError(_("This session was cancelled: it has no minutes."))
    return documents.reuse_or_create(
        RcpDocument,
        live=RcpDocument.objects.filter(
            kind=Kind.MINUTES, session=session, status__in=RcpDocument.IN_FLIGHT
        ),
        kind=Kind.MINUTES,
        session=session,
        requested_by=by.user,
    )


# --- What the pages show --------------------------------------------------------------------


@dataclass(frozen=True)
class Outputs:
    """The PDF block of a case or session page (``templates/rcp/_outputs.html``)."""

    kind: str
    documents: list[RcpDocument]
    can_request: bool
    request_url: str
    refresh_url: str
    # Validated decision versions without a fiche yet (cases), or whether decisions were
    # validated since the last minutes (sessions).
    missing_versions: list[int]
    outdated: bool = False

    @property
    def in_flight(self) -> bool:
        return any(document.is_in_flight for document in self.documents)


def _shown(documents: list[RcpDocument], subject) -> list[RcpDocument]:
    """Newest first; a failed try is shown only while nothing newer stands for its subject
    (the version of a fiche, the session of minutes): the page then offers to try again."""
    shown, settled = [], set()
    for document in documents:
        key = subject(document)
        if document.status == Status.FAILED and key in settled:
            continue
        settled.add(key)
        shown.append(document)
    return shown


def case_outputs(*, case: Case, user) -> Outputs:
    documents = _shown(
        list(case.pdf_documents.select_related("decision").order_by("-created_at", "-pk")),
        subject=lambda document: document.decision_id,
    )
    made = {d.decision_id for d in documents if d.status != Status.FAILED}
    validated = case.decisions.filter(validated_at__isnull=False).values_list("pk", "version")
    for document in documents:
        document.download_url = reverse(
            "rcp-case-pdf", kwargs={"case_id": case.pk, "document_id": document.pk}
        )
    return Outputs(
        kind=Kind.FICHE,
        documents=documents,
        can_request=may.may_request_case_pdf(case=case, user=user),
        request_url=reverse("rcp-case-pdf-request", kwargs={"case_id": case.pk}),
        refresh_url=reverse("rcp-case-outputs", kwargs={"case_id": case.pk}),
        missing_versions=sorted(version for pk, version in validated if pk not in made),
    )


def session_outputs(*, session: Session, user) -> Outputs:
    documents = _shown(
        list(session.pdf_documents.order_by("-created_at", "-pk")),
        subject=lambda document: document.session_id,
    )
    for document in documents:
        document.download_url = reverse(
            "rcp-minutes-pdf", kwargs={"session_id": session.pk, "document_id": document.pk}
        )
    latest = next((d for d in documents if d.status == Status.READY), None)
    outdated = (
        latest is not None
        and Decision.objects.filter(
            case__session=session, validated_at__gt=latest.created_at
        ).exists()
    )
    return Outputs(
        kind=Kind.MINUTES,
        documents=documents,
        can_request=may.may_request_minutes_pdf(session=session, user=user),
        request_url=reverse("rcp-minutes-pdf-request", kwargs={"session_id": session.pk}),
        refresh_url=reverse("rcp-session-outputs", kwargs={"session_id": session.pk}),
        missing_versions=[],
        outdated=outdated,
    )


def download_name(document: RcpDocument) -> str:
    """A file name without patient data (download folders and proxies keep it)."""
    if document.kind == Kind.FICHE:
        return f"fiche-rcp-{document.case_id}-v{document.decision.version}.pdf"
    day = timezone.localtime(document.session.starts_at)
    return f"compte-rendu-rcp-{document.session_id}-{day:%Y-%m-%d}.pdf"


# --- Contexts of the templates ----------------------------------------------------------------


def coded(value_set, code: str) -> str:
    """The French label of a code, or the code itself when the set does not know it."""
    if not code:
        return ""
    concept = value_set.get(code) if value_set is not None else None
    return concept.label if concept is not None else code


def _with_code(value_set, code: str) -> str:
    label = coded(value_set, code)
    return f"{code} — {label}" if label and label != code else code


ATTENDANCE_MODES = {
    Attendance.Mode.IN_PERSON: "Présentiel",
    Attendance.Mode.REMOTE: "À distance",
}


def _mode(code: str) -> str:
    return ATTENDANCE_MODES.get(code, code)


def _user_name(user) -> str:
    if user is None:
        return ""
    try:
        return user.professional.display_name
    except ObjectDoesNotExist:  # staff without a professional profile
        return user.get_full_name() or user.email


TNM_PREFIX_MEANING = dict(frcp.TNM_PREFIXES)


def _tnm(case: Case) -> str:
    """The categories with their prefix once, as staging is written: "cT2a N1 M0 (c — …)"."""
    categories = " ".join(part for part in (case.tnm_t, case.tnm_n, case.tnm_m) if part)
    if not categories:
        return ""
    if not case.tnm_prefix:
        return categories
    meaning = TNM_PREFIX_MEANING.get(case.tnm_prefix, "")
    text = f"{case.tnm_prefix}{categories}"
    return f"{text} ({meaning})" if meaning else text


def _who(code: str) -> str:
    if not code:
        return ""
    grade = frcp.OMS_GRADE.get(code)
    if grade is None:
        return code
    meaning = coded(frcp.OMS_INTERPRETATION, frcp.OMS_INTERPRETATION_BY_GRADE.get(code, ""))
    return f"OMS {grade} — {meaning}" if meaning else f"OMS {grade}"


def _gestational_age(case: Case) -> str:
    if case.gestational_weeks is None:
        return ""
    days = case.gestational_days or 0
    return f"{case.gestational_weeks} SA + {days} j" if days else f"{case.gestational_weeks} SA"


def _yes_no(value) -> str:
    return {True: "Oui", False: "Non"}.get(value, "Non renseigné")


def _patient_context(case: Case) -> dict:
    patient = case.patient
    gp = current_gp(patient)
    age = None
    if case.session is not None:
        day = timezone.localtime(case.session.starts_at).date()
        born = patient.birth_date
        age = day.year - born.year - ((day.month, day.day) < (born.month, born.day))
    return {
        "patient": patient,
        "ins": documents.ins_context(patient),
        "age": age,
        "gp": gp.display_name if gp else "",
    }


def _attendees(decision: Decision) -> list[dict]:
    return [
        {
            "name": entry.get("name", ""),
            "specialty": documents.specialty_label(entry.get("specialty", "")),
            "mode": _mode(entry.get("mode", "")),
        }
        for entry in decision.attendees or []
    ]


def _attesting(decision: Decision) -> list[str]:
    names = []
    for entry in decision.attesting_physicians or []:
        if isinstance(entry, dict):
            text = entry.get("name", "")
            if entry.get("specialty"):
                text = f"{text} ({documents.specialty_label(entry['specialty'])})"
            names.append(text)
        else:
            names.append(str(entry))
    return [name for name in names if name]


MINUTES_ROWS = {
    "Âge gestationnel",
    "Phase",
    "Diagnostic (CIM-10)",
    "Histologie (CIM-O-3)",
    "TNM",
    "État général (OMS)",
}


def _case_rows(case: Case) -> list[tuple[str, str]]:
    """The case's data as (label, value) rows, empty ones left out."""
    if case.committee.is_cpdpn:
        rows = [
            ("Âge gestationnel", _gestational_age(case)),
            ("Terme prévu", case.expected_term.strftime("%d/%m/%Y") if case.expected_term else ""),
        ]
    else:
        nature = coded(frcp.NATURE_DISCUSSION, case.nature)
        rows = [
            ("Nature de la RCP", nature),
            ("Appareil", coded(frcp.APPAREIL, case.organ_system)),
            ("Organe", coded(frcp.ORGANE, case.organ)),
            ("Phase", coded(frcp.PHASE, case.phase)),
            ("Diagnostic (CIM-10)", _with_code(frcp.topography(), case.topography)),
            (
                "Date du diagnostic",
                case.diagnosis_date.strftime("%d/%m/%Y") if case.diagnosis_date else "",
            ),
            ("Histologie (CIM-O-3)", _with_code(frcp.morphology(), case.morphology)),
            ("TNM", _tnm(case)),
            ("État général (OMS)", _who(case.performance_status)),
            ("Statut du cas", coded(frcp.STATUT_CAS, case.presentation)),
        ]
    return [(label, value) for label, value in rows if value]


def _texts(case: Case) -> list[tuple[str, str]]:
    if case.committee.is_cpdpn:
        texts = [
            ("Antécédents obstétricaux", case.pregnancy_history),
            ("Constatations fœtales", case.fetal_findings),
            ("Examens réalisés", case.investigations),
            ("Souhaits du couple", case.couple_wishes),
        ]
    else:
        texts = [
            ("Antécédents", case.history),
            ("Comorbidités", case.comorbidities),
            ("Résultats et événements", case.results),
        ]
    return [(label, text) for label, text in texts if text.strip()]


def _decision_context(decision: Decision, *, with_previous: bool = True) -> dict:
    previous = None
    if with_previous and decision.version > 1:
        previous = (
            Decision.objects.filter(case_id=decision.case_id, version__lt=decision.version)
            .exclude(validated_at__isnull=True)
            .order_by("-version")
            .first()
        )
    return {
        "decision": decision,
        "treatments": [coded(frcp.TYPE_TRAITEMENT, code) for code in decision.treatment_types],
        "conformity": _yes_no(decision.conforms_to_guideline),
        "quorum": coded(frcp.STATUT_QUORUM, decision.quorum_status) or "Non renseigné",
        "quorum_met": decision.quorum_status == frcp.QUORUM_REACHED,
        "attendees": _attendees(decision),
        "attesting": _attesting(decision),
        "termination": _yes_no(decision.termination_attested),
        "validator": _user_name(decision.validated_by),
        # Validated although the quorum was not met: the reason and the second validator,
        # on the fiche and the minutes (what a 3C audits).
        "without_quorum": decision.validated_without_quorum,
        "without_quorum_reason": decision.without_quorum_reason,
        "second_validator": _user_name(decision.second_validator),
        "previous": previous,
    }


def _header(committee) -> dict:
    establishment = committee.establishment
    return {
        "establishment": establishment,
        "committee": committee,
        "kind_label": "CPDPN" if committee.is_cpdpn else "RCP",
        "required": [documents.specialty_label(code) for code in required_specialties(committee)],
    }


@documents.kind(RcpDocument, value=Kind.FICHE, template="rcp/pdf/fiche.html", folder="rcp/pdf")
def fiche_context(document: RcpDocument) -> documents.Content:
    """The fiche RCP of a validated decision, with the key images it shows."""
    case = (
        Case.objects.select_related(
            "patient",
            "committee__establishment",
            "session",
            "submitted_by__professional",
        )
        .prefetch_related("written_opinions__professional__user", "key_images")
        .get(pk=document.case_id)
    )
    decision = Decision.objects.select_related(
        "validated_by__professional", "second_validator__professional"
    ).get(pk=document.decision_id)
    key_images = [
        {"url": media_url(image.rendering.name), "caption": image.caption}
        for image in case.key_images.all()
        if image.rendering
    ]
    context = {
        **_header(case.committee),
        **_patient_context(case),
        **_decision_context(decision),
        "case": case,
        "session": case.session,
        "requester": _user_name(case.submitted_by),
        "rows": _case_rows(case),
        "texts": _texts(case),
        "opinions": [
            {
                "name": opinion.professional.display_name,
                "specialty": documents.specialty_label(opinion.specialty),
                "text": opinion.text,
                "recorded_at": opinion.recorded_at,
            }
            for opinion in case.written_opinions.all()
        ],
        "key_images": key_images,
    }
    return documents.Content(
        context,
        media=[image.rendering.name for image in case.key_images.all() if image.rendering],
    )


@documents.kind(RcpDocument, value=Kind.MINUTES, template="rcp/pdf/minutes.html", folder="rcp/pdf")
def minutes_context(document: RcpDocument) -> documents.Content:
    """A session's minutes, with each case's key images."""
    session = Session.objects.select_related("committee__establishment").get(pk=document.session_id)
    attendances = list(
        session.attendances.select_related("professional__user").order_by("arrived_at", "pk")
    )
    session_quorum = quorum(
        committee=session.committee,
        present=[(a.professional.profession, a.specialty) for a in attendances],
    )
    validated = Decision.objects.filter(validated_at__isnull=False).select_related(
        "validated_by__professional", "second_validator__professional"
    )
    cases = (
        selectors.agenda(session)
        .select_related("committee")
        .prefetch_related(
            Prefetch("decisions", queryset=validated.order_by("-version"), to_attr="validated"),
            "key_images",
        )
    )
    items = []
    media = []
    for case in cases:
        decision = case.validated[0] if case.validated else None
        images = [image for image in case.key_images.all() if image.rendering]
        media += [image.rendering.name for image in images]
        items.append(
            {
                "case": case,
                "key_images": [
                    {"url": media_url(image.rendering.name), "caption": image.caption}
                    for image in images
                ],
                "rows": [row for row in _case_rows(case) if row[0] in MINUTES_ROWS],
                "decision": (
                    _decision_context(decision, with_previous=False) if decision else None
                ),
            }
        )
    context = {
        **_header(session.committee),
        "session": session,
        "attendances": [
            {
                "name": a.professional.display_name,
                "specialty": documents.specialty_label(a.specialty),
                "mode": _mode(a.mode),
                "arrived_at": a.arrived_at,
                "left_at": a.left_at,
            }
            for a in attendances
        ],
        "quorum": session_quorum,
        "quorum_label": coded(frcp.STATUT_QUORUM, session_quorum.status_code),
        "missing": [documents.specialty_label(code) for code in session_quorum.missing],
        "items": items,
        "validated_count": sum(1 for item in items if item["decision"]),
    }
    return documents.Content(context, media=media)

"""Tele-expertise services: a request's life from draft to closure, its conversation, the
expert's report and the billing records.

Every change is audited on the patient's record (DCM 110110, purpose tele-expertise) and
written to the request's timeline. A state change is one conditional UPDATE on the state the
caller saw: two experts claiming at once, one wins; an edit made on an older revision is
refused, never merged. Notifications and tasks leave after commit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _

from expertise import notifications
from expertise import permissions as may
from expertise.errors import ExpertiseError, NotAllowed, SignatureRefused, StaleEdit
from expertise.models import (
    Act,
    Attachment,
    Message,
    Pool,
    PoolMember,
    Report,
    Request,
    RequestEvent,
)
from portal import audit, transitions
from portal.audit import Actor
from portal.models import AuditPurpose, Professional, Specialty
from portal.services import access_changed
from portal.uploads import DOCUMENT_MAX_BYTES, DOCUMENT_TYPES, PHOTO_TYPES, sniff_content_type

State = Request.State
Action = RequestEvent.Action


# Raised here, defined in expertise.errors; the predicates live in expertise.permissions.
__all__ = ["ExpertiseError", "NotAllowed", "SignatureRefused", "StaleEdit"]
is_pool_expert = may.is_pool_expert
is_pool_coordinator = may.is_pool_coordinator
may_claim = may.may_claim
may_decline = may.may_decline
may_write = may.may_write
may_start_review = may.may_start_review


# What the form asks for, by specialty: an opinion on images needs the images.
REQUIRED_ATTACHMENTS = {
    Specialty.RADIOLOGY: "study",
    Specialty.INTERVENTIONAL_RADIOLOGY: "study",
    Specialty.NUCLEAR_MEDICINE: "study",
    Specialty.DERMATOLOGY: "photo",
    Specialty.CARDIOLOGY: "document",
}


def requirement_label(specialty: str) -> str:
    """What the chosen specialty needs, said to the requester (empty if nothing)."""
    return {
        "study": _("at least one imaging study from the patient's dossier"),
        "photo": _("at least one photo of the lesion"),
        "document": _("at least one document (an ECG tracing, a letter or a report)"),
    }.get(REQUIRED_ATTACHMENTS.get(specialty, ""), "")


# A change of the request, on the patient's record (DCM 110110).
audit_request = audit.patient_change_recorder(purpose=AuditPurpose.EXPERTISE)


def _event(request: Request, by: Actor, action: str, *, before: str, note: str = "") -> None:
    RequestEvent.objects.create(
        request=request,
        actor=by.user if by.is_authenticated else None,
        action=action,
        from_state=before,
        to_state=request.state,
        note=note,
    )


# --- Who may do what (the rules: expertise.permissions) -----------------------------------------


def _require(condition: bool, message: str) -> None:
    """Refuse what the rules do not allow (not who acts: see ``may.require``)."""
    if not condition:
        raise ExpertiseError(message)


def _require_requester(request: Request, by: Actor) -> None:
    may.require(
        may.is_requester(request=request, user=by.user), _("Only the requester can do this.")
    )


def _require_expert(request: Request, by: Actor) -> None:
    may.require(
        may.is_expert(request=request, user=by.user),
        _("Only the expert answering this request can do this."),
    )


# --- Transitions -------------------------------------------------------------------------------

TRANSITIONS = {
    State.DRAFT: {State.SENT, State.CANCELLED},
    # SENT -> SENT: declined by one expert, back to the pool.
    State.SENT: {State.ACCEPTED, State.DECLINED, State.SENT, State.CANCELLED},
    State.ACCEPTED: {
        State.INFO_REQUESTED,
        State.ANSWERED,
        State.DECLINED,
        State.SENT,
        State.CANCELLED,
    },
    State.INFO_REQUESTED: {State.ACCEPTED, State.DECLINED, State.SENT, State.CANCELLED},
    State.DECLINED: {State.DRAFT, State.CANCELLED},
    State.ANSWERED: {State.CLOSED},
    State.CLOSED: set(),
    State.CANCELLED: set(),
}


def can_move(request: Request, to: str) -> bool:
    return to in TRANSITIONS[request.state]


def _move(
    request: Request,
    to: str,
    *,
    by: Actor,
    action: str,
    changes: dict | None = None,
    note: str = "",
    expect: dict | None = None,
) -> Request:
    """Move the request to ``to`` if it is still in the state the caller saw (and matches
    ``expect``); only the named columns change."""
    expert_before = request.expert_id

    def moved(before: str) -> None:
        _forget_cached_access(request, expert_before)
        _event(request, by, action, before=before, note=note)

    return transitions.move(
        request,
        to,
        transitions=TRANSITIONS,
        by=by,
        purpose=AuditPurpose.EXPERTISE,
        changes=changes,
        expect=expect,
        moved=moved,
        audit_detail=lambda before: {"expertise": f"{before} -> {to}", "action": action},
        refused=lambda: ExpertiseError(
            _("A request in state “%(state)s” cannot become “%(to)s”.")
            % {"state": request.get_state_display(), "to": State(to).label}
        ),
        stale=lambda: StaleEdit(
            _("The request changed meanwhile (another expert or the requester acted): reload it.")
        ),
    )


def _forget_cached_access(request: Request, expert_before) -> None:
    """Who sees the request's studies changes with its state (queued for the pool, claimed by
    one expert, back to a draft): the access decisions cached for the pool's members and the
    previous expert are forgotten, and their open live reviews check again."""
    user_ids = set(
        PoolMember.objects.filter(pool_id=request.pool_id).values_list(
            "professional__user_id", flat=True
        )
    )
    user_ids.discard(None)
    if expert_before:
        user_ids.add(expert_before)
    for user_id in sorted(user_ids):
        access_changed(user_id=user_id)


# --- Drafts ------------------------------------------------------------------------------------

REQUEST_FIELDS = (
    "urgency",
    "question",
    "clinical_context",
    "patient_informed",
    "consent_date",
    "consent_method",
)


def _check_routing(pool: Pool, expert) -> None:
    _require(pool.is_active, _("This pool does not take requests at the moment."))
    if expert is not None:
        _require(
            may.is_pool_expert(pool=pool, user=expert),
            _("This expert does not answer for the chosen pool."),
        )


def _check_studies(patient, studies) -> None:
    for study in studies or ():
        _require(study.patient_id == patient.pk, _("A study of another patient was chosen."))


def request_create(*, patient, pool: Pool, by: Actor, expert=None, studies=(), **fields) -> Request:
    """A draft request to ``pool`` (and to ``expert`` of that pool, when named)."""
    _check_routing(pool, expert)
    _check_studies(patient, studies)
    professional = getattr(by.user, "professional", None)
    with transaction.atomic():
        request = Request.objects.create(
            patient=patient,
            requester=by.user,
            requester_establishment=professional.primary_establishment() if professional else None,
            pool=pool,
            specialty=pool.specialty,
            expert=expert,
            **{k: v for k, v in fields.items() if k in REQUEST_FIELDS},
        )
        request.studies.set(studies)
        _event(request, by, Action.CREATED, before="")
        audit_request(request, by, {"expertise": "created"}, action=audit.AuditAction.CREATE)
    return request


def request_update(
    *, request: Request, revision: int, by: Actor, pool=None, expert=None, studies=None, **fields
) -> Request:
    """Save a draft's fields if nobody saved since ``revision`` (else StaleEdit)."""
    _require_requester(request, by)
    _require(request.state == State.DRAFT, _("Only a draft can be edited."))
    changes = {k: v for k, v in fields.items() if k in REQUEST_FIELDS}
    if pool is not None:
        _check_routing(pool, expert)
        changes.update(pool=pool, specialty=pool.specialty, expert=expert)
    _check_studies(request.patient, studies)
    with transaction.atomic():
        updated = Request.objects.filter(
            pk=request.pk, revision=revision, state=State.DRAFT
        ).update(revision=F("revision") + 1, **changes)
        if not updated:
            raise StaleEdit(
                _(
                    "Somebody changed this request while you were editing it. Your changes were "
                    "not saved: reload the request, then apply them again."
                )
            )
        if studies is not None:
            request.studies.set(studies)
        request.refresh_from_db()
        _event(request, by, Action.EDITED, before=State.DRAFT)
        audit_request(request, by, {"expertise": "edited", "fields": sorted(changes)})
    return request


def request_missing(request: Request) -> list[str]:
    """What a draft still lacks before it can be sent (empty: ready)."""
    missing = []
    if not request.question.strip():
        missing.append(_("The question asked to the expert."))
    if not (request.patient_informed and request.consent_date and request.consent_method):
        missing.append(_("The patient's information and consent: date and how it was obtained."))
    need = REQUIRED_ATTACHMENTS.get(request.specialty)
    if need == "study" and not request.studies.exists():
        missing.append(_("An imaging study: this specialty answers on images."))
    elif need == "photo" and not request.attachments.filter(kind=Attachment.Kind.PHOTO).exists():
        missing.append(_("A photo: this specialty answers on photos."))
    elif need == "document" and not request.attachments.exists():
        missing.append(_("A document (an ECG tracing, a letter or a report)."))
    return missing


def request_send(*, request: Request, by: Actor, now: dt.datetime | None = None) -> Request:
    """Send the draft: the deadline starts now; the pool (or the named expert) is told."""
    _require_requester(request, by)
    missing = request_missing(request)
    if missing:
        raise ExpertiseError(_("The request cannot be sent yet: ") + " ".join(missing))
    # The pool as it is now (its coordinators may have closed it or changed its delays).
    pool = Pool.objects.get(pk=request.pool_id)
    _check_routing(pool, request.expert)
    delay = pool.delay_for(request.urgency)
    now = now or timezone.now()
    with transaction.atomic():
        _move(
            request,
            State.SENT,
            by=by,
            action=Action.SENT,
            changes={
                "sent_at": now,
                # Kept on the request: a later change of the pool's delays moves no deadline.
                "delay": delay,
                "due_at": now + delay,
                "reminded_at": None,
                "escalated_at": None,
            },
        )
        notifications.request_sent(request)
    return request


def request_cancel(*, request: Request, by: Actor, reason: str) -> Request:
    _require_requester(request, by)
    _require(bool(reason.strip()), _("Say why the request is cancelled."))
    with transaction.atomic():
        # An expert still has it (or the pool does): tell them. A draft or a request already
        # declined back to its author concerns nobody else.
        was_routed = request.state in (State.SENT, State.ACCEPTED, State.INFO_REQUESTED)
        _move(
            request,
            State.CANCELLED,
            by=by,
            action=Action.CANCELLED,
            changes={"cancelled_at": timezone.now(), "cancel_reason": reason.strip()},
            note=reason.strip(),
        )
        _close_review_room(request, by=by)
        if was_routed:
            notifications.request_cancelled(request)
    return request


def request_redraft(*, request: Request, by: Actor) -> Request:
    """A declined request comes back to its author as a draft, to change and send again."""
    _require_requester(request, by)
    return _move(
        request,
        State.DRAFT,
        by=by,
        action=Action.REDRAFTED,
        changes={
            "sent_at": None,
            "due_at": None,
            "delay": None,
            "expert": None,
            "accepted_at": None,
            "decline_reason": "",  # kept in the timeline; the page shows the current one
        },
    )


# --- The expert's side ---------------------------------------------------------------------------


def request_claim(*, request: Request, by: Actor) -> Request:
    """An expert of the pool takes the request (the named expert only, when one is named)."""
    may.require(
        may.is_pool_expert(pool=request.pool, user=by.user),
        _("Only an expert of the pool can accept this request."),
    )
    _require(
        request.expert_id in (None, by.user.pk),
        _("This request is addressed to another expert."),
    )
    with transaction.atomic():
        _move(
            request,
            State.ACCEPTED,
            by=by,
            action=Action.CLAIMED,
            changes={"expert": by.user, "accepted_at": timezone.now()},
            # Two experts claiming at once: the second finds it taken.
            expect={"expert_id": request.expert_id},
        )
        notifications.request_claimed(request)
    return request


class DeclineTo:
    POOL = "pool"
    REQUESTER = "requester"


def request_decline(*, request: Request, by: Actor, reason: str, to: str) -> Request:
    """The expert (or the pool's coordinator) declines, with a reason: back to the pool for
    another expert, or back to the requester."""
    may.require(
        may.may_decline(request=request, user=by.user), _("You cannot decline this request.")
    )
    _require(bool(reason.strip()), _("Say why the request is declined."))
    _require(to in (DeclineTo.POOL, DeclineTo.REQUESTER), _("Choose where the request goes."))
    reason = reason.strip()
    with transaction.atomic():
        if to == DeclineTo.POOL:
            _move(
                request,
                State.SENT,
                by=by,
                action=Action.DECLINED,
                changes={"expert": None, "accepted_at": None, "decline_reason": reason},
                note=reason,
            )
        else:
            _move(
                request,
                State.DECLINED,
                by=by,
                action=Action.DECLINED,
                changes={"decline_reason": reason},
                note=reason,
            )
        _close_review_room(request, by=by)
        notifications.request_declined(request, to=to, by=by.user)
    return request


def request_ask_information(*, request: Request, by: Actor, question: str) -> Message:
    """The expert needs more: the question goes to the requester; the clock stops meanwhile."""
    _require_expert(request, by)
    _require(bool(question.strip()), _("Write the question for the requester."))
    with transaction.atomic():
        _move(
            request,
            State.INFO_REQUESTED,
            by=by,
            action=Action.INFO_REQUESTED,
            changes={"info_requested_at": timezone.now()},
        )
        message = Message.objects.create(
            request=request, author=by.user, kind=Message.Kind.QUESTION, body=question.strip()
        )
        notifications.information_requested(request, message)
    return message


# --- Conversation ----------------------------------------------------------------------------


ATTACHMENT_TYPES = {Attachment.Kind.PHOTO: PHOTO_TYPES, Attachment.Kind.DOCUMENT: DOCUMENT_TYPES}


def _check_upload(upload, kind: str) -> str:
    _require(kind in ATTACHMENT_TYPES, _("Choose whether the file is a photo or a document."))
    _require(upload.size <= DOCUMENT_MAX_BYTES, _("This file is larger than 20 MB."))
    content_type = sniff_content_type(upload, allowed=ATTACHMENT_TYPES[kind])
    if content_type is None:
        raise ExpertiseError(
            _("A photo must be a JPEG or PNG image.")
            if kind == Attachment.Kind.PHOTO
            else _("Only PDF, JPEG and PNG documents can be attached.")
        )
    return content_type


def _attachment_create(request, *, by, kind, title, upload, message=None) -> Attachment:
    content_type = _check_upload(upload, kind)
    return Attachment.objects.create(
        request=request,
        message=message,
        kind=kind,
        title=(title or upload.name or "")[:200] or _("Attachment"),
        file=upload,
        content_type=content_type,
        size=upload.size,
        uploaded_by=by.user,
    )


def attachment_add(*, request: Request, by: Actor, kind: str, title: str, upload) -> Attachment:
    """A photo or document given with a draft by its requester."""
    _require_requester(request, by)
    _require(request.state == State.DRAFT, _("Files are added to a sent request in a message."))
    with transaction.atomic():
        attachment = _attachment_create(request, by=by, kind=kind, title=title, upload=upload)
        audit_request(request, by, {"expertise": "attachment added", "attachment": attachment.pk})
    return attachment


def message_post(
    *, request: Request, by: Actor, body: str, upload=None, kind: str = Attachment.Kind.DOCUMENT
) -> Message:
    """A message in the thread, with an optional file. The requester's message answers a
    pending question: the request goes back to the expert, the deadline moved by the wait."""
    may.require(
        may.may_write(request=request, user=by.user), _("You cannot write in this request.")
    )
    _require(bool(body.strip()) or upload is not None, _("Write a message or attach a file."))
    if upload is not None:
        _check_upload(upload, kind)
    answers_question = request.state == State.INFO_REQUESTED and by.user.pk == request.requester_id
    with transaction.atomic():
        message = Message.objects.create(
            request=request,
            author=by.user,
            kind=Message.Kind.REPLY if answers_question else Message.Kind.MESSAGE,
            body=body.strip(),
        )
        if upload is not None:
            _attachment_create(request, by=by, kind=kind, title="", upload=upload, message=message)
        if answers_question:
            waited = timezone.now() - request.info_requested_at
            _move(
                request,
                State.ACCEPTED,
                by=by,
                action=Action.INFO_GIVEN,
                changes={"info_requested_at": None, "due_at": F("due_at") + waited},
            )
        else:
            audit_request(request, by, {"expertise": "message", "message": message.pk})
        notifications.message_posted(request, message)
    return message


# --- The report --------------------------------------------------------------------------------

REPORT_FIELDS = (
    "findings",
    "conclusion",
    "recommendation",
    "needs_consultation",
    "needs_exam",
    "exam_detail",
)


def report_save(*, request: Request, by: Actor, revision: int | None, **fields) -> Report:
    """Save the expert's draft report (``revision`` None for the first save)."""
    _require_expert(request, by)
    _require(
        request.state in (State.ACCEPTED, State.INFO_REQUESTED),
        _("The report can only be written while the request is accepted."),
    )
    values = {k: v for k, v in fields.items() if k in REPORT_FIELDS}
    with transaction.atomic():
        report = Report.objects.filter(request=request).first()
        if report is None:
            if revision is not None:
                raise StaleEdit(_("The report was removed meanwhile: reload the request."))
            report = Report.objects.create(request=request, **values)
        else:
            updated = Report.objects.filter(
                pk=report.pk, revision=revision, signed_at__isnull=True
            ).update(revision=F("revision") + 1, updated_at=timezone.now(), **values)
            if not updated:
                raise StaleEdit(
                    _(
                        "The report was saved elsewhere (or signed) since you opened it. Your "
                        "changes were not saved: reload the request."
                    )
                )
            report.refresh_from_db()
        audit_request(request, by, {"expertise": "report saved", "revision": report.revision})
    return report


def report_missing(report: Report | None) -> list[str]:
    if report is None:
        return [_("The report is not written yet.")]
    missing = []
    if not report.findings.strip():
        missing.append(_("The findings."))
    if not report.conclusion.strip():
        missing.append(_("The conclusion."))
    if report.needs_exam and not report.exam_detail.strip():
        missing.append(_("Which exam is needed."))
    return missing


def report_digest(report: Report) -> str:
    """SHA-256 of the signed content: what the PDF and the record attest."""
    content = {field: getattr(report, field) for field in REPORT_FIELDS}
    content["request"] = report.request_id
    return hashlib.sha256(
        json.dumps(content, sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()


def report_sign_and_send(*, request: Request, by: Actor, revision: int) -> Report:
    """The expert signs the report as saved at ``revision``: it is locked, the request is
    answered, the acts are recorded and the PDF is queued (made after commit, by Celery, and
    sent to the requester and the GP once ready). Pages call :func:`report_sign_confirmed`,
    which checks the signature first."""
    _require_expert(request, by)
    _require(
        request.state == State.ACCEPTED,
        _("Wait for the requester's answer before sending the report.")
        if request.state == State.INFO_REQUESTED
        else _("This request cannot be answered now."),
    )
    report = Report.objects.filter(request=request).first()
    missing = report_missing(report)
    if missing:
        raise ExpertiseError(_("The report is not complete: ") + " ".join(missing))
    professional = getattr(by.user, "professional", None)
    now = timezone.now()
    with transaction.atomic():
        signed = Report.objects.filter(
            pk=report.pk, revision=revision, signed_at__isnull=True
        ).update(
            signed_by=by.user,
            signed_at=now,
            signer_name=str(professional) if professional else str(by.user),
            signer_rpps=(professional.rpps or "") if professional else "",
            content_sha256=report_digest(report),
        )
        if not signed:
            raise StaleEdit(_("The report changed since you read it: reload it before signing."))
        report.refresh_from_db()
        _move(request, State.ANSWERED, by=by, action=Action.ANSWERED, changes={"answered_at": now})
        acts_record(request=request, on=now)
        _close_review_room(request, by=by)
        from expertise.pdf import request_report_pdf

        request_report_pdf(report=report)
    return report


# --- The signature ------------------------------------------------------------------------------

# Wrong signatures in a row before signing is refused for a while (a stolen open session must
# not be a password-guessing oracle).
SIGNATURE_MAX_FAILURES = 5
SIGNATURE_LOCK_SECONDS = 15 * 60


def signature_needs_code(user) -> bool:
    """True when the account has a TOTP second factor (allauth.mfa): the signature then asks
    for its current code as well as the password."""
    from allauth.mfa.models import Authenticator

    return Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()


def _signature_failures_key(user) -> str:
    return f"expertise-signature-failures:{user.pk}"


def _signature_valid(user, *, password: str, code: str) -> bool:
    from allauth.mfa.models import Authenticator
    from allauth.mfa.totp.internal.auth import TOTP

    totp = Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).first()
    if user.has_usable_password():
        if not (password and user.check_password(password)):
            return False  # the code is not spent on a wrong password
    elif totp is None:
        return False  # nothing to sign with (an SSO account without a second factor)
    if totp is not None:
        return bool(code.strip()) and TOTP(totp).validate_code(code.strip())
    return True


def report_sign_confirmed(
    *, request: Request, by: Actor, revision: int, password: str, code: str = ""
) -> Report:
    """The expert signs with their password (and their second factor's code when the account
    has one), re-entered on the confirmation step: a wrong one refuses, changes nothing and
    is audited against the patient; then :func:`report_sign_and_send`."""
    from django.core.cache import cache

    _require_expert(request, by)
    key = _signature_failures_key(by.user)
    if (cache.get(key) or 0) >= SIGNATURE_MAX_FAILURES:
        raise SignatureRefused(
            _("Too many wrong signatures: wait a quarter of an hour before signing again.")
        )
    if not _signature_valid(by.user, password=password, code=code):
        cache.add(key, 0, timeout=SIGNATURE_LOCK_SECONDS)
        try:
            cache.incr(key)
        except ValueError:
            cache.set(key, 1, timeout=SIGNATURE_LOCK_SECONDS)
        audit.record(
            actor=by,
            event=audit.AuditEventId.USER_AUTHENTICATION,
            action=audit.AuditAction.EXECUTE,
            outcome=audit.AuditOutcome.MINOR_FAILURE,
            obj=request,
            patient=request.patient,
            purpose=AuditPurpose.EXPERTISE,
            detail={"expertise": "report signature refused"},
        )
        raise SignatureRefused(
            _("The password or the code is wrong: the report was not signed.")
            if signature_needs_code(by.user)
            else _("The password is wrong: the report was not signed.")
        )
    cache.delete(key)
    return report_sign_and_send(request=request, by=by, revision=revision)


def request_close(*, request: Request, by: Actor, outcome: str) -> Request:
    """The requester closes the answered request, saying whether it avoided a referral or an
    exam (the programme's evaluation counts it)."""
    _require_requester(request, by)
    _require(outcome in Request.Outcome.values, _("Say whether a referral or an exam was avoided."))
    return _move(
        request,
        State.CLOSED,
        by=by,
        action=Action.CLOSED,
        changes={"closed_at": timezone.now(), "outcome": outcome},
        note=Request.Outcome(outcome).label,
    )


# --- Billing records -----------------------------------------------------------------------------


def _year_range(day: dt.date) -> tuple[dt.date, dt.date]:
    return dt.date(day.year, 1, 1), dt.date(day.year, 12, 31)


def acts_this_year(*, patient, expert_professional: Professional, day: dt.date) -> int:
    """TE2 acts already recorded this calendar year for this patient with this expert."""
    start, end = _year_range(day)
    return Act.objects.filter(
        patient=patient,
        professional=expert_professional,
        code=Act.Code.TE2,
        act_date__range=(start, end),
    ).count()


def annual_limit_reached(request: Request, *, expert=None, day: dt.date | None = None) -> bool:
    """True when the patient already has four acts this year with ``expert`` (by default the
    request's): the portal warns the expert before the act, and flags the fifth one."""
    expert = expert or request.expert
    professional = getattr(expert, "professional", None) if expert else None
    if professional is None:
        return False
    day = day or timezone.localdate()
    already = acts_this_year(patient=request.patient, expert_professional=professional, day=day)
    return already >= Act.ANNUAL_LIMIT


def _local_date(moment: dt.datetime) -> dt.date:
    return timezone.localtime(moment).date()


def acts_record(*, request: Request, on: dt.datetime) -> list[Act]:
    """The TE2 of the expert and the RQD of the requester for an answered request."""
    expert = request.expert.professional
    requester = getattr(request.requester, "professional", None)
    day = _local_date(on)
    over = annual_limit_reached(request, day=day)
    acts = [
        Act.objects.create(
            request=request,
            code=Act.Code.TE2,
            patient=request.patient,
            professional=expert,
            professional_name=str(expert),
            professional_rpps=expert.rpps or "",
            establishment=request.pool.establishment,
            counterpart_name=str(requester) if requester else str(request.requester),
            counterpart_rpps=(requester.rpps or "") if requester else "",
            act_date=day,
            amount_cents=Act.AMOUNT_CENTS[Act.Code.TE2],
            over_annual_limit=over,
        )
    ]
    if requester is not None:
        acts.append(
            Act.objects.create(
                request=request,
                code=Act.Code.RQD,
                patient=request.patient,
                professional=requester,
                professional_name=str(requester),
                professional_rpps=requester.rpps or "",
                establishment=request.requester_establishment,
                counterpart_name=str(expert),
                counterpart_rpps=expert.rpps or "",
                act_date=day,
                amount_cents=Act.AMOUNT_CENTS[Act.Code.RQD],
                over_annual_limit=over,
            )
        )
    return acts


# --- Live review ---------------------------------------------------------------------------------


def review_start(*, request: Request, study, by: Actor):
    """The live review room of the request on ``study`` (one of its studies): the expert and
    the requester join it; made on first use, moved to ``study`` afterwards. The request
    owns its room (``Request.review_room``); imaging opens, moves and closes it."""
    from imaging.review import review_room_reassign

    may.require(
        may.may_start_review(request=request, user=by.user), _("You cannot start a review now.")
    )
    _require(
        request.studies.filter(pk=study.pk).exists(),
        _("This study is not attached to the request."),
    )
    other = request.requester if by.user.pk == request.expert_id else request.expert
    with transaction.atomic():
        room = _review_room_of(request)
        if room is None:
            room = _review_room_claim(request, study=study, by=by)
            if room is None:
                # Opened by the other party at the same moment: theirs it is, told once.
                return _review_room_of(request)
        elif room.closed_at is not None or room.study_id != study.pk:
            # Reopened (after a decline, the expert may have changed) or moved to another study.
            room = review_room_reassign(
                room=room,
                study=study,
                coordinator=request.expert,
                members=[request.requester, request.expert],
            )
        else:
            return room
        request.review_room = room
        notifications.review_started(request, room, to=other)
    return room


def _review_room_of(request: Request):
    """The request's room as the database holds it now (another opener may have just linked
    one)."""
    from django.db.models import Subquery

    from imaging.models import ReviewRoom

    owned = Request.objects.filter(pk=request.pk).values("review_room_id")
    return ReviewRoom.objects.filter(pk=Subquery(owned)).first()


def _review_room_claim(request: Request, *, study, by: Actor):
    """Open a room for the request, coordinated by its expert, and link it by a guarded
    UPDATE; None (and nothing opened) when another opener linked one first."""
    from imaging.review import review_room_open

    with transaction.atomic():
        room = review_room_open(
            study=study,
            title=str(request),
            coordinator=request.expert,
            members=[request.requester, request.expert],
            by=by,
        )
        if Request.objects.filter(pk=request.pk, review_room__isnull=True).update(review_room=room):
            return room
        transaction.set_rollback(True)
    return None


def _close_review_room(request: Request, *, by: Actor) -> None:
    """The request ends: its review room closes as any room does (imaging.review), so that
    whoever is still in it is put out and nobody presents from a stale copy of the room."""
    from imaging.review import review_room_close

    room = _review_room_of(request)
    if room is not None and room.closed_at is None:
        review_room_close(room=room, by=by)

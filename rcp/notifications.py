"""Notifications of the RCP: session reminders, the agenda, a validated decision.

Each goes to the portal and by e-mail, through portal.notifications.notify. An
e-mail leaves the portal's security perimeter: it never names a patient, only a committee,
dates, a place, the video link and a link into the portal, where the reader signs in. The
agenda e-mail alone lists the cases, as the members prepare the meeting from it: each by the
patient's initials and the question asked, never a name, a birth date or an identifier. The
in-portal notifications follow the rule of portal.Notification (no patient identity either):
the link leads to the case; they keep their English source and are read in the reader's
language.

The e-mails' contexts are built when they leave (portal.notifications.at_send): a session
cancelled or started meanwhile gets no reminder nor agenda, and the agenda lists the cases on
it then.
"""

import datetime as dt
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import Count, F
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from portal import audit
from portal.audit import Actor
from portal.mail import portal_url
from portal.models import AuditPurpose, User
from portal.notifications import at_send, email_context, notify
from portal.selectors import current_gp
from rcp import permissions as may
from rcp.models import Case, Committee, Decision, Session
from rcp.selectors import agenda

PARIS = ZoneInfo("Europe/Paris")
REMINDER_HORIZON = dt.timedelta(hours=48)


def session_url(session: Session) -> str:
    return portal_url(reverse("rcp-session", kwargs={"session_id": session.pk}))


def case_url(case: Case) -> str:
    return portal_url(reverse("rcp-case", kwargs={"case_id": case.pk}))


def _short_date(moment: dt.datetime) -> str:
    return formats.date_format(moment.astimezone(PARIS), "d/m/Y H:i")


def committee_members(committee: Committee) -> list[User]:
    """The active users who sit on ``committee`` (any role)."""
    return list(
        User.objects.filter(
            is_active=True, professional__committee_memberships__committee=committee
        )
        .distinct()
        .order_by("pk")
    )


# --- Session reminders ---------------------------------------------------------------------


def sessions_due_for_reminder(now: dt.datetime):
    """Planned sessions starting within the next 48 hours, not reminded yet."""
    return (
        Session.objects.filter(
            status=Session.Status.PLANNED,
            starts_at__gt=now,
            starts_at__lte=now + REMINDER_HORIZON,
            reminder_sent_at__isnull=True,
        )
        .select_related("committee")
        .annotate(case_count=Count("cases"))
        .order_by("starts_at")
    )


def session_reminders_send(*, now: dt.datetime | None = None) -> list[int]:
    """Remind the members of every session due; return the sessions reminded.

    A session is claimed by setting ``reminder_sent_at`` where it is still empty: two runs
    at once (or a run repeated) remind it once.
    """
    now = now or timezone.now()
    reminded = []
    for session in sessions_due_for_reminder(now):
        with transaction.atomic():
            claimed = Session.objects.filter(pk=session.pk, reminder_sent_at__isnull=True).update(
                reminder_sent_at=now
            )
            if not claimed:
                continue
            # Stored as a source read in each reader's language: no plural forms there, so
            # the count stands apart from the words.
            notify(
                committee_members(session.committee),
                gettext_noop(
                    "Reminder: %(committee)s meets on %(date)s; cases on the agenda: %(count)s."
                ),
                reverse("rcp-session", args=[session.pk]),
                params={
                    "committee": session.committee.name,
                    "date": _short_date(session.starts_at),
                    "count": session.case_count,
                },
                email_template="rcp/email/session_reminder",
                context=at_send(reminder_email_context, session.pk),
            )
        reminded.append(session.pk)
    return reminded


# --- Agenda ------------------------------------------------------------------------------


class AgendaNotSent(Exception):
    """The agenda was not sent; the message says why, for the coordinator."""


class AgendaUpdateToConfirm(AgendaNotSent):
    """The agenda was sent already (perhaps a moment ago, by another coordinator): sending it
    again is an update, which the coordinator confirms first. Nothing was sent."""

    def __init__(self, message: str, session: Session):
        super().__init__(message)
        self.session = session


def agenda_send(*, session: Session, by: Actor, seen_sendings: int, confirmed: bool) -> int:
    """Send the agenda of ``session`` to its committee's members (but the sender); how many
    members were told.

    ``seen_sendings`` is how many times the agenda had been sent on the page the coordinator
    acted from. A first sending needs no confirmation; any later one is an update, sent only
    ``confirmed``, and said so in the e-mail. The sending is claimed by one UPDATE on that
    count: two coordinators acting at once send one agenda (or one update), and the other
    is asked again, with who sent it and when. The session records when and by whom, with
    its audit event and the notifications, in one transaction; e-mails leave on commit."""
    if not may.may_send_agenda(session=session, user=by.user):
        raise AgendaNotSent(_("Only the chair or a coordinator sends the agenda."))
    if session.status != Session.Status.PLANNED:
        raise AgendaNotSent(_("The agenda of a session that started or is over is not sent."))
    cases = list(agenda(session).values_list("pk", flat=True))
    if not cases:
        raise AgendaNotSent(_("The agenda is empty: put cases on it before sending it."))
    if seen_sendings > 0 and not confirmed:
        raise AgendaUpdateToConfirm(
            _("The agenda was sent already: confirm to send an update."), session
        )
    with transaction.atomic():
        claimed = Session.objects.filter(
            pk=session.pk, agenda_sendings=seen_sendings, status=Session.Status.PLANNED
        ).update(
            agenda_sent_at=timezone.now(),
            agenda_sent_by=by.user,
            agenda_sendings=F("agenda_sendings") + 1,
        )
        if not claimed:
            fresh = Session.objects.select_related("agenda_sent_by__professional").get(
                pk=session.pk
            )
            if fresh.status != Session.Status.PLANNED:
                raise AgendaNotSent(
                    _("The agenda of a session that started or is over is not sent.")
                )
            raise AgendaUpdateToConfirm(
                _("The agenda was sent meanwhile by somebody else: confirm to send an update."),
                fresh,
            )
        session.refresh_from_db(fields=["agenda_sent_at", "agenda_sent_by", "agenda_sendings"])
        update = session.agenda_sendings > 1
        audit.record(
            actor=by,
            event=audit.AuditEventId.PATIENT_RECORD,
            action=audit.AuditAction.EXECUTE,
            object_type="rcp.session",
            object_id=str(session.pk),
            purpose=AuditPurpose.CARE,
            # The e-mail lists the cases by initials and question: which ones left, and to how
            # many members (a session is about several patients: none named here).
            detail={"agenda_sent": session.agenda_sendings, "cases": cases},
        )
        told = _notify_agenda(session=session, by=by, count=len(cases), update=update)
    return told


def _notify_agenda(*, session: Session, by, count: int, update: bool) -> int:
    sender_id = getattr(by.user, "pk", None)
    members = [user for user in committee_members(session.committee) if user.pk != sender_id]
    if update:
        message = gettext_noop("Agenda update of %(committee)s on %(date)s; cases: %(count)s.")
    else:
        message = gettext_noop("Agenda of %(committee)s on %(date)s; cases: %(count)s.")
    told = notify(
        members,
        message,
        reverse("rcp-session", args=[session.pk]),
        params={
            "committee": session.committee.name,
            "date": _short_date(session.starts_at),
            "count": count,
        },
        email_template="rcp/email/agenda",
        context=at_send(agenda_email_context, session.pk, update),
    )
    return len(told)


def notify_agenda(*, session: Session, by) -> int:
    """Send the agenda as a first sending: see agenda_send (kept for its callers)."""
    return agenda_send(
        session=session, by=by, seen_sendings=session.agenda_sendings, confirmed=True
    )


# --- Validated decision ------------------------------------------------------------------


def decision_recipients(case: Case) -> list[User]:
    """The doctor who submitted the case and the patient's current GP (once if the same)."""
    gp = current_gp(case.patient_id)
    candidates = [case.submitted_by, gp.user if gp else None]
    recipients = {user.pk: user for user in candidates if user is not None and user.is_active}
    return [recipients[pk] for pk in sorted(recipients)]


def notify_decision_validated(*, case: Case, decision: Decision) -> list[User]:
    """Tell the submitting doctor and the patient's GP that a decision is available: in the
    portal, and by an e-mail that says only that, with the link. Call it inside the
    validating transaction: e-mails leave on commit."""
    return notify(
        decision_recipients(case),
        gettext_noop("A decision of %(committee)s is available."),
        reverse("rcp-case", args=[case.pk]),
        params={"committee": case.committee.name},
        email_template="rcp/email/decision",
        context=at_send(decision_email_context, decision.pk),
    )


# --- E-mails -------------------------------------------------------------------------------


def _session_context(session: Session) -> dict:
    return {
        "committee_name": session.committee.name,
        "starts_at": session.starts_at.astimezone(PARIS),
        "ends_at": session.ends_at.astimezone(PARIS),
        "submission_deadline": session.submission_deadline.astimezone(PARIS),
        "place": session.place,
        "video_url": session.video_url,
        "case_count": agenda(session).count(),
        "session_url": session_url(session),
    }


def patient_initials(patient) -> str:
    """ "G. D.": the initial of the first name in use, then of the name in use. What an
    e-mail may say of a patient: enough for the members to match their files, not a name."""
    first = (patient.used_first_name or patient.first_names).strip()
    name = (patient.used_name or patient.birth_name).strip()
    return " ".join(f"{part[0].upper()}." for part in (first, name) if part)


def _agenda_cases(session: Session) -> list[dict]:
    return [
        {"initials": patient_initials(case.patient), "question": " ".join(case.question.split())}
        for case in agenda(session)
    ]


def _planned_session(session_id: int) -> Session | None:
    """The session, while its reminder or agenda still makes sense (planned, not started)."""
    session = Session.objects.select_related("committee").filter(pk=session_id).first()
    if (
        session is None
        or session.status != Session.Status.PLANNED
        or session.starts_at <= timezone.now()
    ):
        return None
    return session


@email_context
def reminder_email_context(session_id: int) -> dict | None:
    session = _planned_session(session_id)
    return _session_context(session) if session else None


@email_context
def agenda_email_context(session_id: int, update: bool) -> dict | None:
    session = _planned_session(session_id)
    if session is None:
        return None
    return {**_session_context(session), "cases": _agenda_cases(session), "update": update}


@email_context
def decision_email_context(decision_id: int) -> dict | None:
    decision = Decision.objects.select_related("case").filter(pk=decision_id).first()
    if decision is None or decision.validated_at is None:
        return None
    # Deliberately no committee name, no patient, no proposal: the link only.
    return {"case_url": case_url(decision.case)}

"""Notifications of the RCP: session reminders, the agenda, a validated decision.

Each goes to the portal (portal.services.notify, pushed after commit) and by e-mail. An
e-mail leaves the portal's security perimeter: it never names a patient nor carries clinical
content, only a committee, dates, a place, a count of cases and a link into the portal, where
the reader signs in. The in-portal notifications follow the rule of portal.Notification
(no patient identity either): the link leads to the case.

E-mails are sent by a Celery task after commit, one message per recipient; on an SMTP error
the task retries for the recipients not yet served, so nobody gets the same message twice.
"""

import datetime as dt
import logging
from functools import partial
from zoneinfo import ZoneInfo

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import formats, timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from portal.mail import EmailsNotSent, portal_url, send_each
from portal.models import CareRole, User
from portal.services import notify
from rcp.models import Case, Committee, Decision, Session
from rcp.selectors import agenda

logger = logging.getLogger(__name__)

PARIS = ZoneInfo("Europe/Paris")
REMINDER_HORIZON = dt.timedelta(hours=48)
NOTIFICATION_MAX = 300  # portal.Notification.message

REMINDER = "reminder"
AGENDA = "agenda"
DECISION = "decision"


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


def _notify_all(recipients, message: str, url: str) -> None:
    for user in recipients:
        notify(recipient=user, message=message[:NOTIFICATION_MAX], url=url)


def _email_after_commit(kind: str, object_id: int, recipients) -> None:
    ids = [user.pk for user in recipients if user.email]
    if ids:
        # Robust: the change is committed and the in-portal notifications are there; a broker
        # outage loses the e-mails (logged), not the caller's response.
        transaction.on_commit(partial(send_rcp_emails.delay, kind, object_id, ids), robust=True)


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
            members = committee_members(session.committee)
            with translation.override(settings.LANGUAGE_CODE):
                message = ngettext(
                    "Reminder: %(committee)s meets on %(date)s, %(count)s case on the agenda.",
                    "Reminder: %(committee)s meets on %(date)s, %(count)s cases on the agenda.",
                    session.case_count,
                ) % {
                    "committee": session.committee.name,
                    "date": _short_date(session.starts_at),
                    "count": session.case_count,
                }
            _notify_all(members, message, reverse("rcp-session", args=[session.pk]))
            _email_after_commit(REMINDER, session.pk, members)
        reminded.append(session.pk)
    return reminded


# --- Agenda ------------------------------------------------------------------------------


def notify_agenda(*, session: Session, by) -> int:
    """Send the agenda to the committee's members (but its sender): a notification, and an
    e-mail with the number of cases and the link to the session page. Returns how many
    members were told. Call it inside the caller's transaction: e-mails leave on commit."""
    count = agenda(session).count()
    sender_id = getattr(by.user, "pk", None)
    members = [user for user in committee_members(session.committee) if user.pk != sender_id]
    with translation.override(settings.LANGUAGE_CODE):
        message = ngettext(
            "Agenda of %(committee)s on %(date)s: %(count)s case.",
            "Agenda of %(committee)s on %(date)s: %(count)s cases.",
            count,
        ) % {
            "committee": session.committee.name,
            "date": _short_date(session.starts_at),
            "count": count,
        }
    _notify_all(members, message, reverse("rcp-session", args=[session.pk]))
    _email_after_commit(AGENDA, session.pk, members)
    return len(members)


# --- Validated decision ------------------------------------------------------------------


def decision_recipients(case: Case) -> list[User]:
    """The doctor who submitted the case and the patient's current GP (once if the same)."""
    gp_users = User.objects.filter(
        is_active=True,
        professional__care_relationships__patient_id=case.patient_id,
        professional__care_relationships__role=CareRole.GP,
        professional__care_relationships__ended_at__isnull=True,
    )
    recipients = {user.pk: user for user in gp_users}
    submitter = case.submitted_by
    if submitter.is_active:
        recipients.setdefault(submitter.pk, submitter)
    return [recipients[pk] for pk in sorted(recipients)]


def notify_decision_validated(*, case: Case, decision: Decision) -> list[User]:
    """Tell the submitting doctor and the patient's GP that a decision is available: in the
    portal, and by an e-mail that says only that, with the link. Call it inside the
    validating transaction: e-mails leave on commit."""
    recipients = decision_recipients(case)
    with translation.override(settings.LANGUAGE_CODE):
        message = _("A decision of %(committee)s is available.") % {
            "committee": case.committee.name
        }
    _notify_all(recipients, message, reverse("rcp-case", args=[case.pk]))
    _email_after_commit(DECISION, decision.pk, recipients)
    return recipients


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


def _email_content(kind: str, object_id: int) -> tuple[str, dict] | None:
    """The template and its context, or None when the message no longer makes sense."""
    if kind in (REMINDER, AGENDA):
        session = Session.objects.select_related("committee").filter(pk=object_id).first()
        if (
            session is None
            or session.status != Session.Status.PLANNED
            or session.starts_at <= timezone.now()
        ):
            return None
        return ("session_reminder" if kind == REMINDER else "agenda"), _session_context(session)
    if kind == DECISION:
        decision = Decision.objects.select_related("case").filter(pk=object_id).first()
        if decision is None or decision.validated_at is None:
            return None
        # Deliberately no committee name, no patient, no proposal: the link only.
        return "decision", {"case_url": case_url(decision.case)}
    raise ValueError(f"unknown RCP e-mail {kind!r}")


def _render(template: str, context: dict) -> tuple[str, str]:
    subject = render_to_string(f"rcp/email/{template}_subject.txt", context)
    body = render_to_string(f"rcp/email/{template}.txt", context)
    return " ".join(subject.split()), body


def emails_send(*, kind: str, object_id: int, recipient_ids: list[int]) -> int:
    """Send the ``kind`` e-mail about ``object_id`` to each recipient; how many were sent.

    Raises EmailsNotSent with the recipients left when the mail server fails."""
    with translation.override(settings.LANGUAGE_CODE), timezone.override(PARIS):
        content = _email_content(kind, object_id)
        if content is None:
            logger.info("RCP %s e-mail about %s dropped: no longer relevant", kind, object_id)
            return 0
        subject, body = _render(*content)
    return send_each(subject=subject, body=body, recipient_ids=recipient_ids, what=f"RCP {kind}")


# --- Tasks (registered by rcp/tasks.py) ----------------------------------------------------


@shared_task(name="rcp.send_session_reminders", ignore_result=True)
def send_session_reminders() -> int:
    """Periodic (Celery beat): remind the members of the sessions of the next 48 hours."""
    return len(session_reminders_send())


@shared_task(bind=True, max_retries=8, name="rcp.send_emails")
def send_rcp_emails(self, kind: str, object_id: int, recipient_ids: list[int]) -> int:
    try:
        return emails_send(kind=kind, object_id=object_id, recipient_ids=recipient_ids)
    except EmailsNotSent as error:
        if self.request.is_eager:
            # In-process (the demo, the tests) there is no delayed retry; the in-portal
            # notification was left already.
            logger.warning("RCP %s e-mails about %s not sent: %s", kind, object_id, error)
            return 0
        raise self.retry(
            args=(kind, object_id, error.remaining),
            exc=error,
            countdown=min(3600, 60 * 2**self.request.retries),
        ) from error

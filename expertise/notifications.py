"""Notifications of tele-expertise, in the portal (pushed after commit) and, for the signed
report, by e-mail (portal.notifications.notify).

Like every portal notification they never name the patient: the message says what happened
to which request number, and the link leads to the request, where the reader's rights apply.
Messages are left as their English source and parameters (``_`` is gettext_noop here), read
in the reader's language. The report's e-mail carries no clinical content either (no
specialty, no question, no conclusion): the request number and the link only.
"""

from __future__ import annotations

from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext_noop as _

from expertise.models import PoolMember, ReportDocument, Request
from portal.mail import portal_url
from portal.models import User
from portal.notifications import at_send, email_context, notify
from portal.selectors import current_gp


def request_url(request: Request) -> str:
    return reverse("expertise-request", kwargs={"request_id": request.pk})


def _send(
    recipients, message: str, params: dict, request: Request, *, url: str = "", **email
) -> list[User]:
    return notify(recipients, message, url or request_url(request), params=params, **email)


def pool_users(request: Request, role: str = PoolMember.Role.EXPERT) -> list[User]:
    return list(
        User.objects.filter(
            is_active=True,
            professional__expertise_memberships__pool=request.pool,
            professional__expertise_memberships__role=role,
        )
        .distinct()
        .order_by("pk")
    )


def _experts_concerned(request: Request) -> list[User]:
    """The expert who has the request, else the pool's experts."""
    return [request.expert] if request.expert_id else pool_users(request)


def gp_of(request: Request) -> User | None:
    gp = current_gp(request.patient_id)
    return gp.user if gp else None


def _label(request: Request) -> dict:
    """The parameters: the specialty as its English label, translated when read."""
    with translation.override(None):
        specialty = str(request.get_specialty_display())
    return {"number": request.pk, "specialty": {"msgid": specialty}}


def request_sent(request: Request) -> list[User]:
    if request.expert_id:
        message = _("Tele-expertise request no. %(number)s (%(specialty)s) is addressed to you.")
    else:
        message = _("New tele-expertise request no. %(number)s in your pool (%(specialty)s).")
    return _send(_experts_concerned(request), message, _label(request), request)


def request_cancelled(request: Request) -> list[User]:
    message = _("Tele-expertise request no. %(number)s was cancelled by the requester.")
    return _send(_experts_concerned(request), message, _label(request), request)


def request_claimed(request: Request) -> list[User]:
    message = _("Your tele-expertise request no. %(number)s was accepted by %(expert)s.")
    expert = getattr(request.expert, "professional", None) or request.expert
    return _send([request.requester], message, {**_label(request), "expert": str(expert)}, request)


def request_declined(request: Request, *, to: str, by=None) -> list[User]:
    if to == "pool":
        message = _("Tele-expertise request no. %(number)s is back in your pool's queue.")
        others = [user for user in pool_users(request) if user != by]
        return _send(others, message, _label(request), request)
    message = _("Your tele-expertise request no. %(number)s was declined: see the reason.")
    return _send([request.requester], message, _label(request), request)


def information_requested(request: Request, message) -> list[User]:
    text = _("The expert needs more information on your tele-expertise request no. %(number)s.")
    return _send([request.requester], text, _label(request), request)


def message_posted(request: Request, message) -> list[User]:
    other = request.expert if message.author_id == request.requester_id else request.requester
    text = _("New message on tele-expertise request no. %(number)s.")
    return _send([other], text, _label(request), request)


def review_started(request: Request, room, *, to) -> list[User]:
    text = _("A live review of the images of tele-expertise request no. %(number)s is open.")
    url = reverse("review-room", kwargs={"room_id": room.pk})
    return _send([to], text, _label(request), request, url=url)


def deadline_near(request: Request) -> list[User]:
    text = _("Tele-expertise request no. %(number)s is due soon (%(specialty)s).")
    return _send(_experts_concerned(request), text, _label(request), request)


def deadline_passed(request: Request) -> list[User]:
    text = _("Tele-expertise request no. %(number)s is overdue: no answer within the delay.")
    recipients = pool_users(request, PoolMember.Role.COORDINATOR) or _experts_concerned(request)
    return _send(recipients, text, _label(request), request)


def report_delivered(request: Request) -> list[User]:
    """The signed report's PDF is ready: it goes to the requester and the patient's GP, in
    the portal and by e-mail. Call it inside the delivering transaction: e-mails leave on
    commit."""
    text = _("The report of tele-expertise request no. %(number)s is available.")
    return _send(
        [request.requester, gp_of(request)],
        text,
        _label(request),
        request,
        email_template="expertise/email/report_available",
        context=at_send(report_email_context, request.pk),
    )


@email_context
def report_email_context(request_id: int) -> dict | None:
    """Sent while the report is signed and has a ready PDF, else dropped."""
    if not Request.objects.filter(
        pk=request_id,
        report__signed_at__isnull=False,
        report__documents__status=ReportDocument.Status.READY,
    ).exists():
        return None
    return {
        "number": request_id,
        "request_url": portal_url(reverse("expertise-request", kwargs={"request_id": request_id})),
    }

"""One notification service: ``notify(users, message, link, ...)`` tells people something
happened, on every channel registered here (in the portal, by e-mail; secure health
messaging would be one more channel).

A notification never names a patient: the in-portal message says what happened to which
committee or request and links to the page, where the reader's rights apply; an e-mail
leaves the portal's security perimeter and says no more, with a link built from PORTAL_URL
(portal.mail.portal_url).

Everything leaves after commit. The in-portal notification is written in the caller's
transaction and pushed to open pages on commit (:func:`notify_in_portal`). The e-mails are
enqueued on commit by the task's name (portal.task_queue): tasks import this module, never the
other way round, and the task still runs in-process where there is no broker
(CELERY_TASK_ALWAYS_EAGER, the demo's background thread). One message per recipient; on an SMTP
error the task retries for the recipients not yet served, so nobody gets the same message twice.

Each reader chooses how e-mails reach him (portal.notification_models.NotificationPreference,
on his notification e-mails page): one for each notification (the default), in his language;
none at once but one digest a day of his unread notifications (portal.digests); or none.

An e-mail's context is either given at the call (JSON only: it travels through the broker),
or built when the e-mail leaves by a function marked :func:`email_context`
(``context=at_send(builder, *ids)``), so the e-mail says what is true then and is dropped
when the builder returns None (the session was cancelled meanwhile).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone, translation
from django.utils.module_loading import import_string

from portal.directory_accounts import has_placeholder_email
from portal.mail import send_each
from portal.models import Notification, User, render_notification_text
from portal.notification_models import EmailFrequency, NotificationPreference
from portal.task_queue import enqueue

logger = logging.getLogger(__name__)

PARIS = ZoneInfo("Europe/Paris")
NOTIFICATION_MAX = Notification._meta.get_field("message").max_length


# --- In the portal ------------------------------------------------------------------------------


def user_group_name(user_id: int) -> str:
    """The channel-layer group of a user's open pages (portal.consumers)."""
    return f"user.{user_id}"


def notify_in_portal(
    *,
    recipient,
    message: str,
    url: str = "",
    params: dict | None = None,
    plural: str = "",
) -> Notification:
    """Leave a notification for ``recipient`` and push it to their open pages after commit.

    With ``params`` (even empty), ``message`` is the English source, marked with
    gettext_noop, ``params`` its parameters and ``plural`` its plural source (a ``count``
    parameter picks the form): each reader sees it in their own language. Without, ``message``
    is a text already translated, shown as it is."""
    if params is None:
        source = {"msgid": "", "msgid_plural": "", "params": {}}
        text = message
    else:
        source = {"msgid": message, "msgid_plural": plural, "params": params}
        with translation.override(settings.LANGUAGE_CODE):
            text = render_notification_text(**source, fallback=message)
    notification = Notification.objects.create(
        recipient=recipient, message=text[:NOTIFICATION_MAX], url=url, **source
    )
    payload = {
        "type": "notification.new",
        "id": notification.pk,
        "message": notification.message,
        "url": url,
        **source,
    }
    transaction.on_commit(
        lambda: async_to_sync(get_channel_layer().group_send)(
            user_group_name(recipient.pk), payload
        )
    )
    return notification


# --- E-mail contexts built when the e-mail leaves -------------------------------------------


def email_context(builder: Callable[..., dict | None]) -> Callable[..., dict | None]:
    """Mark ``builder`` as one the e-mail task may call by its name: it takes the ids given to
    :func:`at_send` and returns the template's context, or None to drop the e-mail."""
    builder.email_context = True
    return builder


@dataclass(frozen=True)
class AtSend:
    builder: Callable[..., dict | None]
    args: tuple = ()

    def as_message(self) -> dict:
        if not getattr(self.builder, "email_context", False):
            raise ValueError(f"{self.builder!r} is not marked @email_context")
        return {
            "builder": f"{self.builder.__module__}.{self.builder.__qualname__}",
            "args": list(self.args),
        }


def at_send(builder: Callable[..., dict | None], *args) -> AtSend:
    """The context ``builder(*args)`` returns when the e-mail leaves (``args``: ids, JSON)."""
    return AtSend(builder, args)


# --- Channels ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """What :func:`notify` was asked to say, as each channel receives it."""

    message: str
    link: str
    params: dict | None = None
    plural: str = ""
    email_template: str = ""
    context: dict | AtSend | None = field(default=None)


Channel = Callable[[list[User], Notice], None]
CHANNELS: dict[str, Channel] = {}


def channel(name: str) -> Callable[[Channel], Channel]:
    """Register a channel: called with the users to tell (active, once each) and the notice,
    inside the caller's transaction; whatever leaves the portal leaves on commit."""

    def register(deliver: Channel) -> Channel:
        CHANNELS[name] = deliver
        return deliver

    return register


@channel("portal")
def _in_portal(users: list[User], notice: Notice) -> None:
    for user in users:
        notify_in_portal(
            recipient=user,
            message=notice.message,
            url=notice.link,
            params=notice.params,
            plural=notice.plural,
        )


def email_message(template: str, context: dict | AtSend | None) -> dict:
    """The e-mail as the task receives it (JSON): its template and its context, or the name
    and ids of the builder that makes the context when it leaves."""
    if isinstance(context, AtSend):
        return {"template": template, **context.as_message()}
    return {"template": template, "context": dict(context or {})}


@channel("email")
def _by_email(users: list[User], notice: Notice) -> None:
    if not notice.email_template:
        return
    # A placeholder address (an account made from the directory) reaches nobody.
    reachable = [user.pk for user in users if user.email and not has_placeholder_email(user.email)]
    if not reachable:
        return
    # Each reader's choice: an e-mail now, in his language; or his daily digest
    # (portal.digests), or none at all. No row: an e-mail now, in the portal's language.
    preferences = {
        user_id: (frequency, language)
        for user_id, frequency, language in NotificationPreference.objects.filter(
            user_id__in=reachable
        ).values_list("user_id", "email", "language")
    }
    by_language: dict[str, list[int]] = {}
    for pk in reachable:
        frequency, language = preferences.get(pk, (EmailFrequency.EACH, settings.LANGUAGE_CODE))
        if frequency == EmailFrequency.EACH:
            by_language.setdefault(language, []).append(pk)
    for language, recipient_ids in by_language.items():
        email = email_message(notice.email_template, notice.context)
        if language != settings.LANGUAGE_CODE:
            email["language"] = language
        # Robust: the change is committed and the in-portal notifications are there; a broker
        # outage loses the e-mails (logged), not the caller's response.
        transaction.on_commit(
            lambda email=email, ids=recipient_ids: enqueue("portal.send_emails", email, ids),
            robust=True,
        )


def notify(
    users: Iterable[User | None],
    message: str,
    link: str,
    *,
    params: dict | None = None,
    plural: str = "",
    email_template: str = "",
    context: dict | AtSend | None = None,
) -> list[User]:
    """Tell ``users`` (None and inactive accounts skipped, each once) on every channel; the
    users told, in the order given. Call it inside the transaction of the change it tells.

    ``message``, ``params`` and ``plural`` are the in-portal notification's, as
    :func:`notify_in_portal` takes them (with ``params``, an English source each reader reads in
    their language). ``link`` is the page's path. With ``email_template`` (a template name
    without its ``.txt``; its subject is ``<name>_subject.txt``), an e-mail too, rendered in the
    reader's language with ``context``, for those who want one for each notification (the
    others read it in their daily digest, or in the portal only)."""
    told: list[User] = []
    seen: set[int] = set()
    for user in users:
        if user is None or not user.is_active or user.pk in seen:
            continue
        seen.add(user.pk)
        told.append(user)
    if not told:
        return told
    notice = Notice(
        message=message,
        link=link,
        params=params,
        plural=plural,
        email_template=email_template,
        context=context,
    )
    for deliver in CHANNELS.values():
        deliver(told, notice)
    return told


# --- Sending the e-mails (portal.tasks.send_emails) -------------------------------------------


def _context(email: dict) -> dict | None:
    if "builder" not in email:
        return email.get("context", {})
    builder = import_string(email["builder"])
    if not getattr(builder, "email_context", False):
        raise ValueError(f"{email['builder']} is not an e-mail context")
    return builder(*email.get("args", ()))


def emails_send(*, email: dict, recipient_ids: list[int]) -> int:
    """Render ``email`` (what the e-mail channel enqueued) and send it to each recipient; how
    many were sent, 0 when its context builder says it no longer makes sense.

    Raises portal.mail.EmailsNotSent with the recipients left when the mail server fails."""
    template = email["template"]
    language = email.get("language") or settings.LANGUAGE_CODE
    with translation.override(language), timezone.override(PARIS):
        context = _context(email)
        if context is None:
            logger.info("%s e-mail dropped: no longer relevant (%s)", template, email)
            return 0
        subject = " ".join(render_to_string(f"{template}_subject.txt", context).split())
        body = render_to_string(f"{template}.txt", context)
    return send_each(subject=subject, body=body, recipient_ids=recipient_ids, what=template)

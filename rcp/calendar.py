"""iCalendar feeds of the RCP sessions (RFC 5545, with RFC 7986 properties).

A member subscribes to the sessions of all their committees (or of one committee) from their
calendar app. Calendar apps cannot sign in, so the feed's address carries a secret token,
one per user, revocable and regenerable; only its SHA-256 is stored (like the viewer tokens).

A feed holds committee and session facts only: name, dates, place, video link, case
submission deadline and the link to the session page. Never a case, never a patient: the
address travels through calendar servers outside the portal.
"""

import datetime as dt
import hashlib
import secrets
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import icalendar
from django.db import transaction
from django.db.models import QuerySet
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.translation import gettext as _

from portal import audit
from portal.audit import Actor
from portal.mail import portal_url
from rcp.models import CalendarFeedToken, Committee, Session
from rcp.selectors import committees_of, sessions_visible_to

PARIS = ZoneInfo("Europe/Paris")
PRODID = "-//MIRC Centre-Val de Loire//Portail RCP//FR"
# Past sessions stay in the feed for a year: enough to look back, small enough to poll hourly.
FEED_HISTORY = dt.timedelta(days=365)
REFRESH = dt.timedelta(hours=1)


# --- Tokens ----------------------------------------------------------------------------------


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def calendar_token_issue(*, by: Actor) -> tuple[CalendarFeedToken, str]:
    """A new feed token for ``by.user``; the previous one stops working. The raw value is
    returned once and only its hash is stored."""
    raw = secrets.token_urlsafe(32)
    now = timezone.now()
    with transaction.atomic():
        revoked = CalendarFeedToken.objects.filter(user=by.user, revoked_at__isnull=True).update(
            revoked_at=now
        )
        token = CalendarFeedToken.objects.create(
            user=by.user, token_hash=token_hash(raw), created_at=now
        )
        audit.record(
            actor=by,
            event=audit.AuditEventId.SECURITY_ALERT,
            event_type=audit.AuditEventType.USER_SECURITY_ATTRIBUTES_CHANGED,
            action=audit.AuditAction.EXECUTE,
            obj=token,
            detail={"calendar_token": "issued", "replaced": revoked},
        )
    return token, raw


def calendar_token_revoke(*, by: Actor) -> int:
    """Stop ``by.user``'s feed address (how many were live: 0 or 1)."""
    with transaction.atomic():
        live = list(
            CalendarFeedToken.objects.select_for_update().filter(
                user=by.user, revoked_at__isnull=True
            )
        )
        for token in live:
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
            audit.record(
                actor=by,
                event=audit.AuditEventId.SECURITY_ALERT,
                event_type=audit.AuditEventType.USER_SECURITY_ATTRIBUTES_CHANGED,
                action=audit.AuditAction.EXECUTE,
                obj=token,
                detail={"calendar_token": "revoked"},
            )
    return len(live)


def calendar_token_current(user) -> CalendarFeedToken | None:
    return CalendarFeedToken.objects.filter(user=user, revoked_at__isnull=True).first()


def user_for_feed_token(raw: str):
    """The active user whose live feed token is ``raw``, or None."""
    token = (
        CalendarFeedToken.objects.filter(
            token_hash=token_hash(raw), revoked_at__isnull=True, user__is_active=True
        )
        .select_related("user")
        .first()
    )
    if token is None:
        return None
    # Tells the user (and the security officer) whether the address is in use.
    CalendarFeedToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user


def feed_path(raw: str, committee: Committee | None = None) -> str:
    if committee is None:
        return reverse("rcp-calendar-feed", kwargs={"token": raw})
    return reverse(
        "rcp-committee-calendar-feed", kwargs={"token": raw, "committee_id": committee.pk}
    )


# --- Feeds -----------------------------------------------------------------------------------


def feed_sessions(*, user, committee: Committee | None = None) -> QuerySet[Session]:
    """The sessions a feed shows: those of the user's committees, from a year ago on."""
    sessions = sessions_visible_to(user).filter(starts_at__gte=timezone.now() - FEED_HISTORY)
    if committee is not None:
        sessions = sessions.filter(committee=committee)
    return sessions.select_related("committee").order_by("starts_at", "pk")


def session_uid(session: Session) -> str:
    """Stable across renames, moves and cancellation: calendar apps update the event."""
    host = urlsplit(portal_url("/")).hostname or "localhost"
    return f"rcp-session-{session.pk}@{host}"


def _revision(session: Session) -> tuple[int, dt.datetime]:
    """SEQUENCE and LAST-MODIFIED. A session keeps no history of its edits: only a
    cancellation is known to supersede what calendars hold."""
    sequence = 1 if session.status == Session.Status.CANCELLED else 0
    return sequence, session.created_at


def _when(moment: dt.datetime) -> str:
    return formats.date_format(moment.astimezone(PARIS), "l j F Y, H:i")


def session_event(session: Session) -> icalendar.Event:
    page = portal_url(reverse("rcp-session", kwargs={"session_id": session.pk}))
    sequence, last_modified = _revision(session)
    lines = [
        _("Multidisciplinary committee: %(name)s") % {"name": session.committee.name},
        _("Case submission deadline: %(date)s (Paris time)")
        % {"date": _when(session.submission_deadline)},
    ]
    if session.video_url:
        lines.append(_("Video link: %(url)s") % {"url": session.video_url})
    lines.append(_("Session page (sign-in required): %(url)s") % {"url": page})
    if session.status == Session.Status.CANCELLED:
        lines.insert(0, _("This session is cancelled."))

    event = icalendar.Event()
    event.add("uid", session_uid(session))
    event.add("dtstamp", last_modified)
    event.add("last-modified", last_modified)
    event.add("created", session.created_at)
    event.add("sequence", sequence)
    event.add("dtstart", session.starts_at.astimezone(PARIS))
    event.add("dtend", session.ends_at.astimezone(PARIS))
    event.add("summary", session.committee.name)
    if session.place or session.video_url:
        # A session held by video only is "where" its link is: calendar apps show LOCATION
        # first (and make a link of it); CONFERENCE (RFC 7986) is for those that read it.
        event.add("location", session.place or session.video_url)
    event.add("description", "\n".join(lines))
    event.add("url", page)
    if session.video_url:
        event.add("conference", session.video_url, parameters={"VALUE": "URI", "FEATURE": "VIDEO"})
    event.add(
        "status",
        "CANCELLED" if session.status == Session.Status.CANCELLED else "CONFIRMED",
    )
    return event


def build_calendar(*, sessions, name: str) -> bytes:
    calendar = icalendar.Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.calendar_name = name
    calendar.add("x-wr-timezone", "Europe/Paris")
    calendar.add("refresh-interval", REFRESH, parameters={"VALUE": "DURATION"})
    calendar.add("x-published-ttl", REFRESH)
    for session in sessions:
        calendar.add_component(session_event(session))
    # A VTIMEZONE for Europe/Paris, which every DTSTART/DTEND names (RFC 5545 3.6.5).
    calendar.add_missing_timezones()
    return calendar.to_ical()


def user_calendar(*, user) -> bytes:
    return build_calendar(sessions=feed_sessions(user=user), name=_("Multidisciplinary meetings"))


def committee_calendar(*, user, committee: Committee) -> bytes:
    return build_calendar(
        sessions=feed_sessions(user=user, committee=committee), name=committee.name
    )


def committee_of_member(*, user, committee_id) -> Committee | None:
    return committees_of(user).filter(pk=committee_id).first()

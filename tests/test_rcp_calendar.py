"""RCP calendar feeds, session reminders, the agenda and decision notifications.

The members of the thoracic committee (the surgeon chairs it, the oncologist sits on it, the
coordinator runs it) subscribe to its sessions from their calendar apps, get reminded two
days before, get the agenda, and the doctors of a patient learn that a decision is ready.
Nothing that leaves the portal (a feed, an e-mail) names a patient.
"""

import datetime as dt
import hashlib
import re
import smtplib
from zoneinfo import ZoneInfo

import icalendar
import pytest
from celery.exceptions import Retry
from django.core import mail
from django.core.mail.backends.locmem import EmailBackend
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from portal import services as portal_services
from portal.audit import Actor
from portal.mail import EmailsNotSent
from portal.models import (
    AuditEvent,
    AuditEventId,
    AuditOutcome,
    CareRelationship,
    CareRole,
    Notification,
)
from portal.notifications import at_send, email_message, emails_send
from portal.tasks import send_emails
from rcp import calendar
from rcp.models import CalendarFeedToken, Case, CommitteeMember, Decision, Session
from rcp.notifications import notify_agenda, notify_decision_validated, reminder_email_context
from rcp.services import case_create, committee_create, sessions_schedule
from rcp.tasks import send_session_reminders
from tests.conftest import client_for, make_professional

PARIS = ZoneInfo("Europe/Paris")
PORTAL = "https://portail.mirc.test"
Role = CommitteeMember.Role


@pytest.fixture(autouse=True)
def _portal_address(settings):
    settings.PORTAL_URL = PORTAL


@pytest.fixture
def thoracic(world):
    world.radiotherapist = make_professional(
        email="radiotherapeute@mirc.test",
        first_name="Hélène",
        last_name="Garnier",
        specialty="oncologie_radiotherapie",
        establishment=world.tours,
    )
    return committee_create(
        by=Actor.system("tests"),
        name="RCP thoracique du CHRU de Tours",
        kind="organ",
        members=[
            (world.surgeon, Role.CHAIR),
            (world.coordinator, Role.COORDINATOR),
            (world.oncologist, Role.MEMBER),
            (world.radiotherapist, Role.MEMBER),
        ],
        establishment=world.tours,
        place="Salle Vésale, bâtiment B2",
        video_url="https://visio.mirc.test/rcp-thoracique",
    )


@pytest.fixture
def digestive(world):
    """A committee of Bourges the outsider sits on, and nobody of Tours."""
    return committee_create(
        by=Actor.system("tests"),
        name="RCP digestive de Bourges",
        kind="organ",
        members=[(world.outsider, Role.CHAIR)],
        establishment=world.bourges,
        place="CH de Bourges, salle 3",
    )


def _thursday_at(hour: int, weeks_ahead: int = 1) -> dt.datetime:
    today = timezone.localdate(timezone=PARIS)
    thursday = today + dt.timedelta(days=(3 - today.weekday()) % 7 + 7 * weeks_ahead)
    return dt.datetime.combine(thursday, dt.time(hour), tzinfo=PARIS)


def _on_agenda(world, committee, session, *, question="Chirurgie ou radio-chimiothérapie ?"):
    """A case of world.patient on the session's agenda (the agenda rules are the services'
    tests' business; here only its presence matters)."""
    case = case_create(
        patient=world.patient,
        committee=committee,
        by=Actor(user=world.oncologist.user),
        question=question,
    )
    position = Case.objects.filter(session=session).count() + 1
    Case.objects.filter(pk=case.pk).update(
        session=session, state=Case.State.ON_AGENDA, agenda_position=position
    )
    case.refresh_from_db()
    return case


def _patient_traces(world) -> list[str]:
    patient = world.patient
    return [
        patient.birth_name,
        *patient.first_names.split(),
        patient.ins_matricule,
        "T100001",  # the IPP
    ]


def _assert_no_patient(world, text: str) -> None:
    lowered = text.lower()
    for trace in _patient_traces(world):
        assert trace.lower() not in lowered, f"{trace!r} leaked"


def _subscribe(user) -> str:
    """Make the feed address on the calendar page, as the user does; return it."""
    response = client_for(user).post(reverse("rcp-calendar"))
    assert response.status_code == 200
    page = response.content.decode()
    addresses = re.findall(rf"{re.escape(PORTAL)}/rcp/agenda/[\w-]+\.ics", page)
    assert addresses, "the page shows the new address"
    return addresses[0]


def _fetch(address: str):
    """A calendar app reading the feed: no session, no cookie."""
    return client_for(None).get(address.removeprefix(PORTAL))


def _parse(response) -> icalendar.Calendar:
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/calendar")
    return icalendar.Calendar.from_ical(response.content)


# --- Feeds ---------------------------------------------------------------------------------


def test_my_feed_lists_my_committees_sessions_in_paris_time(world, thoracic, digestive):
    weekly = sessions_schedule(
        by=Actor.system("tests"),
        committee=thoracic,
        first_start=_thursday_at(17),
        duration=dt.timedelta(hours=2),
        every="weekly",
        count=3,
    )
    sessions_schedule(
        by=Actor.system("tests"),
        committee=digestive,
        first_start=_thursday_at(12),
        duration=dt.timedelta(hours=1),
    )

    feed = _parse(_fetch(_subscribe(world.oncologist.user)))

    events = sorted(feed.events, key=lambda event: event.start)
    assert [event["UID"] for event in events] == [
        f"rcp-session-{session.pk}@portail.mirc.test" for session in weekly
    ]
    first, session = events[0], weekly[0]
    assert first.start == session.starts_at
    assert first.start.tzinfo.key == "Europe/Paris"
    assert (first.start.hour, first.end.hour) == (17, 19)
    assert feed.timezones[0].tz_name == "Europe/Paris"
    assert str(first["SUMMARY"]) == "RCP thoracique du CHRU de Tours"
    assert str(first["LOCATION"]) == "Salle Vésale, bâtiment B2"
    assert str(first["URL"]) == f"{PORTAL}/rcp/seances/{session.pk}/"
    description = str(first["DESCRIPTION"])
    assert "https://visio.mirc.test/rcp-thoracique" in description
    deadline = session.submission_deadline.astimezone(PARIS)
    assert f"{deadline:%H:%M}" in description and str(deadline.year) in description
    assert str(first["STATUS"]) == "CONFIRMED"
    # The Bourges committee, which the oncologist does not sit on, is not there.
    assert {str(event["SUMMARY"]) for event in events} == {thoracic.name}


def test_a_feed_is_read_in_a_constant_number_of_queries(world, thoracic):
    address = _subscribe(world.oncologist.user)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert _fetch(address).status_code == 200
        return len(captured)

    start = _thursday_at(17)
    sessions_schedule(
        by=Actor.system("tests"),
        committee=thoracic,
        first_start=start,
        duration=dt.timedelta(hours=2),
    )
    one = queries()
    sessions_schedule(
        by=Actor.system("tests"),
        committee=thoracic,
        first_start=start + dt.timedelta(days=1),
        duration=dt.timedelta(hours=2),
        every="weekly",
        count=6,
    )
    assert queries() == one


def test_a_cancelled_session_is_marked_cancelled(world, thoracic):
    planned, cancelled = sessions_schedule(
        by=Actor.system("tests"),
        committee=thoracic,
        first_start=_thursday_at(17),
        duration=dt.timedelta(hours=2),
        every="weekly",
        count=2,
    )
    Session.objects.filter(pk=cancelled.pk).update(status=Session.Status.CANCELLED)

    feed = _parse(_fetch(_subscribe(world.surgeon.user)))

    by_uid = {str(event["UID"]): event for event in feed.events}
    gone, kept = by_uid[calendar.session_uid(cancelled)], by_uid[calendar.session_uid(planned)]
    assert (gone["STATUS"], kept["STATUS"]) == ("CANCELLED", "CONFIRMED")
    # A higher SEQUENCE tells calendar apps the cancellation supersedes what they hold.
    assert gone["SEQUENCE"] > kept["SEQUENCE"]


def test_no_patient_data_in_a_feed(world, thoracic):
    (session,) = sessions_schedule(
        by=Actor.system("tests"),
        committee=thoracic,
        first_start=_thursday_at(17),
        duration=dt.timedelta(hours=2),
    )
    _on_agenda(world, thoracic, session, question="Lobectomie supérieure droite ?")

    content = _fetch(_subscribe(world.oncologist.user)).content.decode()

    _assert_no_patient(world, content)
    assert "Lobectomie" not in content


def test_the_address_is_shown_once_and_only_its_hash_is_kept(world, thoracic):
    address = _subscribe(world.oncologist.user)
    raw = address.rsplit("/", 1)[1].removesuffix(".ics")

    token = CalendarFeedToken.objects.get(user=world.oncologist.user)
    assert token.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in str(list(CalendarFeedToken.objects.values()))
    page = client_for(world.oncologist.user).get(reverse("rcp-calendar"))
    assert page.status_code == 200
    assert raw not in page.content.decode()
    # Issuing it is a security event of the user's account.
    assert AuditEvent.objects.filter(
        event_id=AuditEventId.SECURITY_ALERT, actor=world.oncologist.user, object_id=str(token.pk)
    ).exists()


def test_a_regenerated_or_revoked_address_stops_working(world, thoracic):
    sessions_schedule(
        by=Actor.system("tests"),
        committee=thoracic,
        first_start=_thursday_at(17),
        duration=dt.timedelta(hours=2),
    )
    old = _subscribe(world.oncologist.user)
    new = _subscribe(world.oncologist.user)

    assert _fetch(old).status_code == 404
    assert _fetch(new).status_code == 200

    client_for(world.oncologist.user).post(reverse("rcp-calendar"), {"action": "revoke"})

    assert _fetch(new).status_code == 404
    assert not CalendarFeedToken.objects.filter(revoked_at__isnull=True).exists()
    assert _fetch(f"{PORTAL}/rcp/agenda/not-a-token.ics").status_code == 404


def test_the_address_of_a_deactivated_account_stops_working(world, thoracic):
    address = _subscribe(world.oncologist.user)
    world.oncologist.user.is_active = False
    world.oncologist.user.save(update_fields=["is_active"])

    assert _fetch(address).status_code == 404


def test_a_committee_feed_is_for_its_members(world, thoracic, digestive):
    sessions_schedule(
        by=Actor.system("tests"),
        committee=thoracic,
        first_start=_thursday_at(17),
        duration=dt.timedelta(hours=2),
    )
    address = _subscribe(world.oncologist.user)
    raw = address.rsplit("/", 1)[1].removesuffix(".ics")
    own = reverse("rcp-committee-calendar-feed", args=[raw, thoracic.pk])
    other = reverse("rcp-committee-calendar-feed", args=[raw, digestive.pk])

    feed = _parse(client_for(None).get(own))

    assert {str(event["SUMMARY"]) for event in feed.events} == {thoracic.name}
    assert client_for(None).get(other).status_code == 404


def test_the_signed_in_committee_feed_refuses_outsiders_with_an_audited_404(world, thoracic):
    sessions_schedule(
        by=Actor.system("tests"),
        committee=thoracic,
        first_start=_thursday_at(17),
        duration=dt.timedelta(hours=2),
    )
    url = reverse("rcp-committee-calendar", args=[thoracic.pk])

    assert len(_parse(client_for(world.coordinator.user).get(url)).events) == 1
    assert client_for(world.outsider.user).get(url).status_code == 404
    assert AuditEvent.objects.filter(
        event_id=AuditEventId.SECURITY_ALERT,
        outcome=AuditOutcome.MINOR_FAILURE,
        actor=world.outsider.user,
        object_type="rcp.committee",
    ).exists()
    anonymous = client_for(None).get(url)
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]


# --- Reminders -----------------------------------------------------------------------------


@pytest.fixture
def upcoming(world, thoracic, digestive):
    """Thoracic sessions: tomorrow (due), in five days (too far), already reminded,
    cancelled; and a Bourges session tomorrow."""
    now = timezone.now()

    def one(committee, start, **fields):
        (session,) = sessions_schedule(
            by=Actor.system("tests"),
            committee=committee,
            first_start=start,
            duration=dt.timedelta(hours=2),
        )
        Session.objects.filter(pk=session.pk).update(**fields)
        session.refresh_from_db()
        return session

    sessions = {
        "due": one(thoracic, now + dt.timedelta(hours=30)),
        "far": one(thoracic, now + dt.timedelta(days=5)),
        "reminded": one(thoracic, now + dt.timedelta(hours=20), reminder_sent_at=now),
        "cancelled": one(thoracic, now + dt.timedelta(hours=10), status=Session.Status.CANCELLED),
        "bourges": one(digestive, now + dt.timedelta(hours=26)),
    }
    _on_agenda(world, thoracic, sessions["due"])
    _on_agenda(world, thoracic, sessions["due"], question="Place de l'immunothérapie ?")
    return sessions


def test_members_are_reminded_once_of_a_session_within_48_hours(
    world, thoracic, upcoming, django_capture_on_commit_callbacks
):
    due = upcoming["due"]
    thoracic_members = {
        world.surgeon.user.email,
        world.coordinator.user.email,
        world.oncologist.user.email,
        world.radiotherapist.user.email,
    }

    with django_capture_on_commit_callbacks(execute=True):
        send_session_reminders.delay()

    thoracic_mail = [m for m in mail.outbox if set(m.to) <= thoracic_members]
    assert sorted(m.to[0] for m in thoracic_mail) == sorted(thoracic_members)
    body = thoracic_mail[0].body
    start = due.starts_at.astimezone(PARIS)
    assert f"{start:%H:%M}" in body and str(start.year) in body
    assert "Salle Vésale, bâtiment B2" in body
    assert "https://visio.mirc.test/rcp-thoracique" in body
    assert re.search(r"\b2\b", body), "the number of cases on the agenda"
    assert f"{PORTAL}/rcp/seances/{due.pk}/" in body
    for message in mail.outbox:
        _assert_no_patient(world, message.subject + message.body)
    notified = Notification.objects.filter(url=reverse("rcp-session", args=[due.pk]))
    assert {n.recipient.email for n in notified} == thoracic_members
    for notification in notified:
        _assert_no_patient(world, notification.message)
    due.refresh_from_db()
    assert due.reminder_sent_at is not None

    # Nothing for the sessions too far, already reminded or cancelled.
    for name in ("far", "reminded", "cancelled"):
        session = upcoming[name]
        assert not Notification.objects.filter(
            url=reverse("rcp-session", args=[session.pk])
        ).exists(), name
    upcoming["far"].refresh_from_db()
    assert upcoming["far"].reminder_sent_at is None
    # The Bourges session reminds its own member, and only them.
    assert [m.to for m in mail.outbox if m not in thoracic_mail] == [[world.outsider.user.email]]

    # Run again: nobody hears twice.
    sent, notifications = len(mail.outbox), Notification.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        send_session_reminders.delay()
    assert (len(mail.outbox), Notification.objects.count()) == (sent, notifications)


class FlakyMailServer(EmailBackend):
    """The locmem outbox, with a mail server that drops the connection once, on the second
    message it is given."""

    calls = 0

    def send_messages(self, messages):
        type(self).calls += 1
        if type(self).calls == 2:
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        return super().send_messages(messages)


@pytest.fixture
def flaky_mail(settings):
    settings.EMAIL_BACKEND = f"{__name__}.FlakyMailServer"
    FlakyMailServer.calls = 0
    return FlakyMailServer


def test_an_smtp_error_is_retried_for_the_members_not_yet_served(world, upcoming, flaky_mail):
    due = upcoming["due"]
    members = [
        world.surgeon.user.pk,
        world.coordinator.user.pk,
        world.oncologist.user.pk,
    ]

    reminder = email_message("rcp/email/session_reminder", at_send(reminder_email_context, due.pk))
    with pytest.raises(EmailsNotSent) as refused:
        emails_send(email=reminder, recipient_ids=members)
    assert refused.value.remaining == members[1:]
    assert [m.to for m in mail.outbox] == [[world.surgeon.user.email]]

    # In a worker, the task retries with the members left, and each gets one message.
    mail.outbox.clear()
    flaky_mail.calls = 0
    send_emails.push_request(id="reminder-1", is_eager=False, called_directly=False)
    try:
        with pytest.raises(Retry):
            send_emails.run(reminder, members)
    finally:
        send_emails.pop_request()
    assert sorted(m.to[0] for m in mail.outbox) == sorted(
        [world.surgeon.user.email, world.coordinator.user.email, world.oncologist.user.email]
    )


# --- Agenda --------------------------------------------------------------------------------


def test_the_agenda_reaches_the_members_without_patient_names_by_email(
    world, thoracic, upcoming, django_capture_on_commit_callbacks
):
    due = upcoming["due"]

    with django_capture_on_commit_callbacks(execute=True):
        told = notify_agenda(session=due, by=Actor(user=world.coordinator.user))

    expected = {
        world.surgeon.user.email,
        world.oncologist.user.email,
        world.radiotherapist.user.email,
    }
    assert told == 3
    assert {m.to[0] for m in mail.outbox} == expected, "every member but the sender"
    for message in mail.outbox:
        assert f"{PORTAL}/rcp/seances/{due.pk}/" in message.body
        assert re.search(r"\b2\b", message.body)
        _assert_no_patient(world, message.subject + message.body)
    notified = Notification.objects.filter(url=reverse("rcp-session", args=[due.pk]))
    assert {n.recipient.email for n in notified} == expected
    assert not Notification.objects.filter(recipient=world.outsider.user).exists()


# --- Validated decision --------------------------------------------------------------------


@pytest.fixture
def validated(world, thoracic, upcoming):
    case = Case.objects.filter(session=upcoming["due"]).order_by("pk").first()
    now = timezone.now()
    decision = Decision.objects.create(
        case=case,
        proposal="Lobectomie supérieure droite avec curage ganglionnaire.",
        created_by=world.surgeon.user,
        validated_by=world.surgeon.user,
        validated_at=now,
    )
    Case.objects.filter(pk=case.pk).update(state=Case.State.VALIDATED, validated_at=now)
    return case, decision


def test_the_decision_reaches_the_submitting_doctor_and_the_gp_only(
    world, validated, django_capture_on_commit_callbacks
):
    case, decision = validated

    with django_capture_on_commit_callbacks(execute=True):
        notify_decision_validated(case=case, decision=decision)

    expected = {world.oncologist.user.email, world.gp.user.email}
    assert {m.to[0] for m in mail.outbox} == expected
    notified = Notification.objects.filter(url=reverse("rcp-case", args=[case.pk]))
    assert {n.recipient.email for n in notified} == expected
    for message in mail.outbox:
        assert f"{PORTAL}/rcp/dossiers/{case.pk}/" in message.body
        text = message.subject + message.body
        _assert_no_patient(world, text)
        assert "Lobectomie" not in text, "no clinical content by e-mail"
        assert "thoracique" not in text.lower(), "not even the committee"
    for notification in notified:
        _assert_no_patient(world, notification.message)


def test_a_former_gp_is_not_told(world, validated, django_capture_on_commit_callbacks):
    case, decision = validated
    relationship = CareRelationship.objects.get(
        patient=world.patient, professional=world.gp, role=CareRole.GP
    )
    portal_services.care_relationship_end(relationship=relationship, by=Actor.system("tests"))

    with django_capture_on_commit_callbacks(execute=True):
        recipients = notify_decision_validated(case=case, decision=decision)

    assert recipients == [world.oncologist.user]
    assert [m.to for m in mail.outbox] == [[world.oncologist.user.email]]
    assert not Notification.objects.filter(recipient=world.gp.user).exists()

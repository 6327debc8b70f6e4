"""The coordinator sends the agenda: the members get the cases by initials and question,
the session page says when and by whom it was sent, and a second sending is an update that
the coordinator confirms first (two coordinators at once: one update, not two)."""

import html
import re

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import translation

from portal.audit import Actor
from portal.models import AuditEvent, Notification
from rcp.models import Session
from rcp.notifications import (
    AgendaNotSent,
    AgendaUpdateToConfirm,
    agenda_send,
    patient_initials,
)
from tests.conftest import client_for
from tests.rcp_world import case_on_agenda, rcp_world

PORTAL = "https://portail.mirc.test:8443"
QUESTION = "Lobectomie d'emblée ou traitement néoadjuvant ?"


@pytest.fixture(autouse=True)
def _portal_address(settings):
    settings.PORTAL_URL = PORTAL


@pytest.fixture
def on_agenda(world):
    rcp_world(world)
    Session.objects.filter(pk=world.session.pk).update(video_url="https://visio.mirc.test/thorax")
    return case_on_agenda(world, question=QUESTION)


def _send(client, session, **data):
    return client.post(reverse("rcp-session-agenda-send", args=[session.pk]), data)


def _patient_traces(world) -> list[str]:
    patient = world.patient
    return [
        patient.birth_name,
        *patient.first_names.split(),
        patient.ins_matricule,
        "T100001",  # the IPP
        patient.birth_date.strftime("%d/%m/%Y"),
        patient.birth_date.isoformat(),
    ]


def test_initials_name_no_one():
    class Someone:
        used_first_name = ""
        first_names = "Jeanne Marie"
        used_name = ""
        birth_name = "Dupont"

    assert patient_initials(Someone) == "J. D."
    Someone.used_name = "durand"
    assert patient_initials(Someone) == "J. D."


def test_the_first_sending_lists_the_cases_by_initials_and_question(
    world, on_agenda, django_capture_on_commit_callbacks
):
    coordinator = client_for(world.coordinator.user)
    with django_capture_on_commit_callbacks(execute=True):
        response = _send(coordinator, world.session, sendings="0")
    assert response.status_code == 302

    assert {m.to[0] for m in mail.outbox} == {
        world.oncologist.user.email,
        world.surgeon.user.email,
        world.radiotherapist.user.email,
    }
    message = mail.outbox[0]
    assert "Ordre du jour" in message.subject and "Mise à jour" not in message.subject
    assert "J. D." in message.body
    assert QUESTION in message.body
    assert "https://visio.mirc.test/thorax" in message.body
    assert world.session.starts_at.astimezone(_paris()).strftime("%H:%M") in message.body
    assert f"{PORTAL}/rcp/seances/{world.session.pk}/" in message.body
    for trace in _patient_traces(world):
        assert trace.lower() not in (message.subject + message.body).lower(), trace

    session = Session.objects.get(pk=world.session.pk)
    assert session.agenda_sendings == 1
    assert session.agenda_sent_by == world.coordinator.user
    assert session.agenda_sent_at is not None
    event = AuditEvent.objects.filter(object_type="rcp.session").latest("pk")
    assert event.detail["agenda_sent"] == 1 and event.detail["cases"] == [on_agenda.pk]

    page = html.unescape(
        coordinator.get(reverse("rcp-session", args=[world.session.pk])).content.decode()
    )
    sent = re.search(r'data-testid="agenda-sent">([^<]*)<', page).group(1)
    assert "Ordre du jour envoyé le" in sent
    assert session.agenda_sent_at.astimezone(_paris()).strftime("%d/%m/%Y") in sent
    assert "Perrin" in sent
    # Now the button offers an update.
    assert "Envoyer une mise à jour de l'ordre du jour" in page


def _paris():
    from zoneinfo import ZoneInfo

    return ZoneInfo("Europe/Paris")


def test_sending_again_asks_first_then_says_it_is_an_update(
    world, on_agenda, django_capture_on_commit_callbacks
):
    coordinator = client_for(world.coordinator.user)
    with django_capture_on_commit_callbacks(execute=True):
        _send(coordinator, world.session, sendings="0")
    mail.outbox.clear()

    # Without the confirmation nothing leaves: the coordinator meets the question.
    with django_capture_on_commit_callbacks(execute=True):
        response = _send(coordinator, world.session, sendings="1")
    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    assert 'data-testid="agenda-confirm"' in page
    assert "Envoyer une mise à jour de l'ordre du jour ?" in page
    assert "Ordre du jour envoyé le" in page
    assert 'name="confirm" value="yes"' in page
    assert mail.outbox == []
    assert Session.objects.get(pk=world.session.pk).agenda_sendings == 1

    with django_capture_on_commit_callbacks(execute=True):
        response = _send(coordinator, world.session, sendings="1", confirm="yes")
    assert response.status_code == 302
    assert len(mail.outbox) == 3
    message = mail.outbox[0]
    assert "Mise à jour de l'ordre du jour" in message.subject
    assert "Mise à jour de l'ordre du jour" in message.body
    assert "J. D." in message.body and QUESTION in message.body
    assert Session.objects.get(pk=world.session.pk).agenda_sendings == 2
    # The members' notification says it too, in each reader's language.
    told = Notification.objects.filter(recipient=world.surgeon.user).order_by("pk").last()
    with translation.override("en"):
        assert told.text.startswith("Agenda update of")
    with translation.override("fr"):
        assert told.text.startswith("Mise à jour de l'ordre du jour")


def test_two_coordinators_at_once_send_one_update_not_two(
    world, on_agenda, django_capture_on_commit_callbacks
):
    """Both saw the agenda sent once and both confirm an update: the second is asked again,
    told who sent it, and nothing more leaves."""
    chair = Actor(user=world.oncologist.user)
    coordinator = Actor(user=world.coordinator.user)
    with django_capture_on_commit_callbacks(execute=True):
        agenda_send(session=world.session, by=coordinator, seen_sendings=0, confirmed=False)
        agenda_send(session=world.session, by=chair, seen_sendings=1, confirmed=True)
    sent = len(mail.outbox)
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(AgendaUpdateToConfirm) as question,
    ):
        agenda_send(session=world.session, by=coordinator, seen_sendings=1, confirmed=True)
    assert len(mail.outbox) == sent
    assert question.value.session.agenda_sendings == 2
    assert question.value.session.agenda_sent_by == world.oncologist.user

    # Through the page: the late coordinator meets the question, with who sent it.
    with django_capture_on_commit_callbacks(execute=True):
        response = _send(
            client_for(world.coordinator.user), world.session, sendings="1", confirm="yes"
        )
    assert response.status_code == 200
    page = response.content.decode()
    assert "envoyé entre-temps" in page
    assert "Claire Martin" in page
    assert len(mail.outbox) == sent
    assert Session.objects.get(pk=world.session.pk).agenda_sendings == 2


def test_a_first_sending_at_once_by_two_sends_one_agenda(
    world, on_agenda, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        agenda_send(
            session=world.session,
            by=Actor(user=world.coordinator.user),
            seen_sendings=0,
            confirmed=False,
        )
        with pytest.raises(AgendaUpdateToConfirm):
            agenda_send(
                session=world.session,
                by=Actor(user=world.oncologist.user),
                seen_sendings=0,
                confirmed=False,
            )
    assert Session.objects.get(pk=world.session.pk).agenda_sendings == 1
    assert len(mail.outbox) == 3


def test_a_member_who_does_not_coordinate_sends_nothing(
    world, on_agenda, django_capture_on_commit_callbacks
):
    notifications = Notification.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(AgendaNotSent):
            agenda_send(
                session=world.session,
                by=Actor(user=world.surgeon.user),
                seen_sendings=0,
                confirmed=True,
            )
        _send(client_for(world.surgeon.user), world.session, sendings="0")
    assert mail.outbox == []
    assert Session.objects.get(pk=world.session.pk).agenda_sendings == 0
    assert Notification.objects.count() == notifications


def _feed_events(world) -> dict:
    """The coordinator's feed, subscribed on the calendar page and read as a calendar app."""
    import icalendar
    from django.test import Client

    page = client_for(world.coordinator.user).post(reverse("rcp-calendar")).content.decode()
    address = re.search(rf"{re.escape(PORTAL)}(/rcp/agenda/[\w-]+\.ics)", page).group(1)
    response = Client().get(address)
    assert response["Content-Type"].startswith("text/calendar")
    feed = icalendar.Calendar.from_ical(response.content)
    return {str(event["UID"]): event for event in feed.walk("VEVENT")}


def test_the_calendar_feed_carries_the_video_link(world, on_agenda):
    from rcp.calendar import session_uid

    Session.objects.filter(pk=world.later_session.pk).update(
        place="", video_url="https://visio.mirc.test/distanciel"
    )
    events = _feed_events(world)
    in_room = events[session_uid(world.session)]
    assert str(in_room["CONFERENCE"]) == "https://visio.mirc.test/thorax"
    assert in_room["CONFERENCE"].params["FEATURE"] == "VIDEO"
    assert "https://visio.mirc.test/thorax" in str(in_room["DESCRIPTION"])
    assert str(in_room["URL"]) == f"{PORTAL}/rcp/seances/{world.session.pk}/"
    # Held by video only: the link is where the session is, as calendar apps show it.
    remote = events[session_uid(world.later_session)]
    assert str(remote["LOCATION"]) == "https://visio.mirc.test/distanciel"
    assert str(remote["CONFERENCE"]) == "https://visio.mirc.test/distanciel"


def test_the_confirmation_and_the_session_page_take_constant_queries(
    world, on_agenda, django_assert_max_num_queries
):
    coordinator = client_for(world.coordinator.user)
    agenda_send(
        session=world.session,
        by=Actor(user=world.coordinator.user),
        seen_sendings=0,
        confirmed=False,
    )
    with django_assert_max_num_queries(12):
        response = _send(coordinator, world.session, sendings="1")
    assert response.status_code == 200
    with django_assert_max_num_queries(21):
        page = coordinator.get(reverse("rcp-session", args=[world.session.pk]))
    assert 'data-testid="agenda-sent"' in page.content.decode()

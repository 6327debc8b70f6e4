"""Every link of every e-mail the portal sends comes from one setting, PORTAL_URL: the RCP's
reminder, agenda and decision e-mails, the tele-expertise report e-mail, and the account
e-mails of allauth (password reset, unknown address, e-mail confirmation), whatever host the
request that caused them came through."""

import re

import pytest
from allauth.account.models import EmailAddress
from allauth.core.context import request_context
from django.contrib.sessions.middleware import SessionMiddleware
from django.core import mail
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from expertise import services as expertise_services
from portal.audit import Actor
from portal.models import Notification
from rcp.models import Case, Decision, Session
from rcp.notifications import notify_decision_validated, session_reminders_send
from tests.conftest import client_for
from tests.expertise_world import QUESTION, REPORT, consent, expertise_world
from tests.rcp_world import case_on_agenda, rcp_world

# An address no default would produce: another scheme, host and port than any request's.
PORTAL = "https://portail-liens.mirc.example:8443"
VIDEO = "https://visio.mirc.test/rcp-thoracique"  # the one link that leaves the portal
LINK = re.compile(r"https?://[^\s<>\"')\]]+")
REQUEST_HOST = "hote-de-la-requete.mirc.test"


@pytest.fixture(autouse=True)
def _portal_address(settings):
    settings.PORTAL_URL = PORTAL
    settings.ALLOWED_HOSTS = [REQUEST_HOST, "testserver"]


def _texts(message) -> list[str]:
    """The subject, the text part and every HTML part."""
    parts = [message.subject, message.body]
    parts += [content for content, _mimetype in getattr(message, "alternatives", [])]
    return parts


def assert_links_from_the_setting(messages, *, external=()) -> None:
    assert messages, "no e-mail was sent"
    for message in messages:
        links = [link for text in _texts(message) for link in LINK.findall(text)]
        portal_links = [link for link in links if link not in external]
        assert portal_links, f"{message.subject!r} carries no link into the portal"
        for link in portal_links:
            assert link.startswith(PORTAL + "/"), f"{message.subject!r}: {link}"
        for text in _texts(message):
            assert REQUEST_HOST not in text and "testserver" not in text, message.subject


def test_the_rcp_emails_link_to_the_portal_address(world, django_capture_on_commit_callbacks):
    rcp_world(world)
    Session.objects.filter(pk=world.session.pk).update(video_url=VIDEO)
    case = case_on_agenda(world)
    world.session.refresh_from_db()

    with django_capture_on_commit_callbacks(execute=True):
        reminded = session_reminders_send(now=world.session.starts_at - timezone.timedelta(days=1))
    assert reminded == [world.session.pk]
    with django_capture_on_commit_callbacks(execute=True):
        client_for(world.coordinator.user).post(
            reverse("rcp-session-agenda-send", args=[world.session.pk]),
            {"sendings": "0"},
            HTTP_HOST=REQUEST_HOST,
        )
    now = timezone.now()
    decision = Decision.objects.create(
        case=case,
        proposal="Lobectomie.",
        created_by=world.surgeon.user,
        validated_by=world.surgeon.user,
        validated_at=now,
    )
    Case.objects.filter(pk=case.pk).update(state=Case.State.VALIDATED, validated_at=now)
    with django_capture_on_commit_callbacks(execute=True):
        notify_decision_validated(case=case, decision=decision)

    subjects = {message.subject.split(":")[0] for message in mail.outbox}
    assert len(subjects) == 3, subjects  # the reminder, the agenda and the decision
    assert_links_from_the_setting(mail.outbox, external={VIDEO})
    assert any(VIDEO in message.body for message in mail.outbox)


def test_the_report_email_links_to_the_portal_address(world, django_capture_on_commit_callbacks):
    w = expertise_world(world)
    oncologist = Actor(user=w.oncologist.user)
    expert = Actor(user=w.teleradiologist.user)
    request = expertise_services.request_create(
        patient=w.patient,
        pool=w.teleradiology,
        by=oncologist,
        urgency="priority",
        question=QUESTION,
        clinical_context="Découverte fortuite.",
        studies=[w.ct],
        **consent(),
    )
    expertise_services.request_send(request=request, by=oncologist)
    request = expertise_services.request_claim(request=request, by=expert)
    draft = expertise_services.report_save(request=request, by=expert, revision=None, **REPORT)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        expertise_services.report_sign_and_send(request=request, by=expert, revision=draft.revision)
    assert_links_from_the_setting(mail.outbox)


def test_the_password_reset_emails_link_to_the_portal_address(world):
    client = client_for(None)
    url = reverse("account_reset_password")
    client.post(url, {"email": world.gp.user.email}, HTTP_HOST=REQUEST_HOST)
    client.post(url, {"email": "personne@mirc.test"}, HTTP_HOST=REQUEST_HOST)
    assert sorted(message.to[0] for message in mail.outbox) == sorted(
        [world.gp.user.email, "personne@mirc.test"]
    )
    assert_links_from_the_setting(mail.outbox)
    reset = next(message for message in mail.outbox if message.to[0] == world.gp.user.email)
    link = next(link for link in LINK.findall(reset.body) if "/password/reset/key/" in link)
    # The link works: it leads to the form that sets a new password.
    assert client.get(link.removeprefix(PORTAL)).status_code in (200, 302)


def test_the_address_confirmation_email_links_to_the_portal_address(world):
    address = EmailAddress.objects.create(
        user=world.gp.user, email="nouvelle-adresse@mirc.test", primary=False, verified=False
    )
    request = RequestFactory().get("/", HTTP_HOST=REQUEST_HOST)
    request.user = world.gp.user
    SessionMiddleware(lambda request: None).process_request(request)
    with request_context(request):
        address.send_confirmation(request)
    assert_links_from_the_setting(mail.outbox)
    assert f"{PORTAL}/accounts/confirm-email/" in mail.outbox[0].body
    assert not Notification.objects.filter(message__contains=REQUEST_HOST).exists()

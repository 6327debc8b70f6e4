"""How notification e-mails reach each reader (issue 16): one for each notification (the
default), one digest a day, or none, chosen on his profile, in his language; the digest lists
his unread notifications since the previous one, as links, never a patient's name, and leaves
once a day whatever the redeliveries."""

import datetime as dt
import re

import pytest
import time_machine
from celery.schedules import crontab
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from portal import digests, services
from portal.audit import Actor
from portal.models import AuditEvent, AuditEventId, Notification
from portal.notification_models import EmailFrequency, NotificationDigest, NotificationPreference
from portal.tasks import digest_hour, send_digest, send_digests
from tests.conftest import client_for
from tests.permission_matrix import _rcp_case, _study_report
from tests.test_settings import _run

pytestmark = pytest.mark.django_db

PORTAL = "https://portail.mirc.test"


@pytest.fixture(autouse=True)
def portal_address(settings):
    settings.PORTAL_URL = PORTAL


def _choose(user, email: str, language: str = "fr"):
    return services.notification_preference_set(
        user=user, email=email, language=language, by=Actor(user=user)
    )


def _notifications(user, count: int, *, at=None) -> list[Notification]:
    """``count`` notifications as the RCP leaves them (English source, read in his language)."""
    left = [
        services.notify(
            recipient=user,
            message="A decision of %(committee)s is available.",
            params={"committee": f"RCP {n}"},
            url=f"/rcp/dossiers/{n + 100}/",
        )
        for n in range(count)
    ]
    if at is not None:
        Notification.objects.filter(pk__in=[n.pk for n in left]).update(created_at=at)
    return left


def _mails_to(user) -> list:
    return [message for message in mail.outbox if message.to == [user.email]]


def _assert_names_no_patient(patient, message):
    for identity in (
        patient.birth_name,
        patient.birth_name.upper(),
        patient.first_names.split()[0],
        patient.ins_matricule,
        patient.birth_date.strftime("%d/%m/%Y"),
    ):
        assert identity not in message.body and identity not in message.subject


def _decision(world, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        return _rcp_case(world, "validated")


# --- The preference -----------------------------------------------------------------------------


def test_by_default_each_notification_reaches_him_by_email(
    world, django_capture_on_commit_callbacks
):
    _decision(world, django_capture_on_commit_callbacks)
    [message] = _mails_to(world.gp.user)
    assert message.subject == "[MIRC] Un avis de RCP est disponible"


@pytest.mark.parametrize("choice", [EmailFrequency.DIGEST, EmailFrequency.NONE])
def test_a_gp_who_chose_a_digest_or_nothing_gets_no_email_at_once(
    world, django_capture_on_commit_callbacks, choice
):
    _choose(world.gp.user, choice)
    case = _decision(world, django_capture_on_commit_callbacks)
    assert _mails_to(world.gp.user) == []
    # The portal still tells him, and the doctor who submitted the case is e-mailed as before.
    assert Notification.objects.filter(
        recipient=world.gp.user, url=reverse("rcp-case", args=[case.pk])
    ).exists()
    assert len(_mails_to(world.oncologist.user)) == 1


def test_the_email_of_a_notification_speaks_his_language(world, django_capture_on_commit_callbacks):
    _choose(world.gp.user, EmailFrequency.EACH, language="en")
    _decision(world, django_capture_on_commit_callbacks)
    [english] = _mails_to(world.gp.user)
    assert english.subject == "[MIRC] A committee decision is available"
    [french] = _mails_to(world.oncologist.user)
    assert french.subject == "[MIRC] Un avis de RCP est disponible"


def test_he_chooses_on_his_profile_page_and_the_choice_is_audited(world):
    client = client_for(world.gp.user)
    url = reverse("account-notifications")
    page = client.get(url).content.decode()
    assert "E-mails de notification" in page
    assert re.search(r'value="each"[^>]*checked', page)  # the default, before any choice
    response = client.post(url, {"email": "digest", "language": "en"})
    assert response.status_code == 302 and response.url == url
    preference = NotificationPreference.objects.get(user=world.gp.user)
    assert (preference.email, preference.language) == ("digest", "en")
    event = AuditEvent.objects.filter(actor=world.gp.user).latest("occurred_at")
    assert event.event_id == AuditEventId.APPLICATION_ACTIVITY
    assert event.detail["after"] == {"email": "digest", "language": "en"}
    # A value that is none of the choices: the form says so, nothing changes.
    response = client.post(url, {"email": "hourly", "language": "fr"})
    assert response.status_code == 200
    assert "Sélectionnez un choix valide" in response.content.decode()
    preference.refresh_from_db()
    assert preference.email == "digest"


def test_nobody_chooses_for_someone_else(world):
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        services.notification_preference_set(
            user=world.gp.user, email="none", language="fr", by=Actor(user=world.oncologist.user)
        )
    assert not NotificationPreference.objects.filter(user=world.gp.user).exists()


def test_a_study_report_reaches_his_gp_by_email_with_a_link_only(
    world, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        report = _study_report(world)
    [message] = _mails_to(world.gp.user)
    assert message.subject == "[MIRC] Un compte rendu d'examen est disponible"
    url = reverse("study-report-pdf", args=[world.patient.pk, report.pk])
    assert f"{PORTAL}{url}" in message.body
    _assert_names_no_patient(world.patient, message)
    # In the portal too; the referring oncologist who uploaded it is not told of his own upload.
    assert Notification.objects.filter(recipient=world.gp.user, url=url).count() == 1
    assert _mails_to(world.oncologist.user) == []


# --- The digest ---------------------------------------------------------------------------------


def test_one_digest_lists_his_unread_notifications_as_links(world):
    _choose(world.gp.user, EmailFrequency.DIGEST)
    _choose(world.oncologist.user, EmailFrequency.EACH)
    left = _notifications(world.gp.user, 3)
    _notifications(world.oncologist.user, 2)  # he wants them one by one: no digest for him
    Notification.objects.filter(pk=left[0].pk).update(read_at=timezone.now())  # already read

    assert send_digests.delay().get() == 1
    [digest] = mail.outbox
    assert digest.to == [world.gp.user.email]
    assert digest.subject == "[MIRC] Votre récapitulatif du jour : 2 nouvelles notifications"
    links = re.findall(r"^\s+(https://\S+)$", digest.body, re.MULTILINE)
    assert f"{PORTAL}/rcp/dossiers/101/" in links and f"{PORTAL}/rcp/dossiers/102/" in links
    assert f"{PORTAL}/rcp/dossiers/100/" not in links
    assert "Un avis de RCP 1 est disponible." in digest.body
    assert f"{PORTAL}{reverse('account-notifications')}" in digest.body
    row = NotificationDigest.objects.get(user=world.gp.user)
    assert row.notifications == 2 and row.sent_at is not None


def test_no_digest_when_nothing_is_new(world):
    _choose(world.gp.user, EmailFrequency.DIGEST)
    assert send_digests.delay().get() == 1
    assert mail.outbox == []
    # Read before the digest hour: nothing to tell either.
    for notification in _notifications(world.gp.user, 2):
        services.notification_mark_read(user=world.gp.user, notification_ids=[notification.pk])
    assert digests.digest_send(user=world.gp.user, now=timezone.now() + dt.timedelta(days=1)) == 0
    assert mail.outbox == []


def test_a_redelivered_task_sends_the_digest_once(world):
    _choose(world.gp.user, EmailFrequency.DIGEST)
    _notifications(world.gp.user, 2)
    assert send_digest.delay(world.gp.user.pk).get() == 2
    assert send_digest.delay(world.gp.user.pk).get() == 0
    send_digests.delay().get()
    assert len(mail.outbox) == 1
    assert NotificationDigest.objects.filter(user=world.gp.user).count() == 1


def test_the_next_digest_starts_where_the_last_one_ended(world):
    _choose(world.gp.user, EmailFrequency.DIGEST)
    yesterday = timezone.now() - dt.timedelta(days=1)
    _notifications(world.gp.user, 2, at=yesterday - dt.timedelta(hours=1))
    assert digests.digest_send(user=world.gp.user, now=yesterday) == 2
    # Still unread today, but listed yesterday: only today's news.
    new = services.notify(
        recipient=world.gp.user,
        message="A decision of %(committee)s is available.",
        params={"committee": "RCP digestive"},
        url="/rcp/dossiers/900/",
    )
    assert digests.digest_send(user=world.gp.user) == 1
    assert len(mail.outbox) == 2 and new.url in mail.outbox[1].body
    assert "/rcp/dossiers/100/" not in mail.outbox[1].body


def test_the_digest_of_a_decision_names_no_patient(world, django_capture_on_commit_callbacks):
    _choose(world.gp.user, EmailFrequency.DIGEST)
    case = _decision(world, django_capture_on_commit_callbacks)
    assert _mails_to(world.gp.user) == []
    assert send_digest.delay(world.gp.user.pk).get() == 1
    [digest] = _mails_to(world.gp.user)
    _assert_names_no_patient(world.patient, digest)
    assert f"{PORTAL}{reverse('rcp-case', args=[case.pk])}" in digest.body


def test_the_digest_speaks_his_language(world):
    _choose(world.gp.user, EmailFrequency.DIGEST, language="en")
    _notifications(world.gp.user, 1)
    assert send_digest.delay(world.gp.user.pk).get() == 1
    [digest] = mail.outbox
    assert digest.subject == "[MIRC] Your daily digest: 1 new notification"
    assert "A decision of RCP 0 is available." in digest.body
    assert "Un avis" not in digest.body


def test_the_beat_sends_the_digests_at_digest_hour_in_paris_summer_and_winter(world, settings):
    from portal.celery import app

    entry = app.conf.beat_schedule["portal-send-digests"]
    assert entry["task"] == digest_hour.name
    assert entry["schedule"] == crontab(minute=0)  # hourly, in beat's UTC
    settings.DIGEST_HOUR = 7
    _choose(world.gp.user, EmailFrequency.DIGEST)
    _notifications(world.gp.user, 1)
    utc = dt.UTC
    for instant, sends in [
        (dt.datetime(2026, 7, 1, 6, 0, tzinfo=utc), False),  # 8:00 in Paris (summer time)
        (dt.datetime(2026, 7, 1, 5, 0, tzinfo=utc), True),  # 7:00 in Paris
        (dt.datetime(2026, 12, 1, 5, 0, tzinfo=utc), False),  # 6:00 in Paris (winter time)
        (dt.datetime(2026, 12, 1, 6, 0, tzinfo=utc), True),  # 7:00 in Paris
    ]:
        with time_machine.travel(instant, tick=False):
            assert digest_hour.delay().get() == (1 if sends else 0), instant
    assert [row.day for row in NotificationDigest.objects.order_by("day")] == [
        dt.date(2026, 7, 1),
        dt.date(2026, 12, 1),
    ]


def test_a_bad_digest_hour_is_named_at_start_up():
    result = _run(["manage.py", "check"], DIGEST_HOUR="25")
    assert result.returncode != 0
    assert "DIGEST_HOUR" in result.stderr


def test_a_mail_server_failure_leaves_the_day_free_for_the_retry(world, monkeypatch):
    from portal import mail as portal_mail

    _choose(world.gp.user, EmailFrequency.DIGEST)
    _notifications(world.gp.user, 2)

    def refused(**kwargs):
        raise portal_mail.EmailsNotSent([world.gp.user.pk], OSError("connection refused"))

    monkeypatch.setattr(digests, "send_each", refused)
    with pytest.raises(portal_mail.EmailsNotSent):
        digests.digest_send(user=world.gp.user)
    assert not NotificationDigest.objects.filter(user=world.gp.user).exists()
    monkeypatch.undo()
    assert digests.digest_send(user=world.gp.user) == 2
    assert len(mail.outbox) == 1

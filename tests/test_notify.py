"""A new notification needs only a call: a feature the portal knows nothing of (a parcel
service, with its own e-mail templates) calls portal.notifications.notify and its users are
told in the portal and by e-mail, once the change commits, and not at all if it rolls back."""

import pytest
from django.core import mail
from django.db import transaction
from django.utils.translation import gettext_noop

from portal.mail import portal_url
from portal.models import Notification, User
from portal.notifications import CHANNELS, at_send, email_context, emails_send, notify

TEMPLATES = {
    "parcels/email/arrived_subject.txt": "Parcel no. {{ number }}\n",
    "parcels/email/arrived.txt": "Parcel no. {{ number }} is at the desk: {{ url }}\n",
}
RETURNED: set[int] = set()


class Refused(Exception):
    pass


@pytest.fixture(autouse=True)
def parcel_templates(settings):
    settings.PORTAL_URL = "https://portail.mirc.test"
    settings.TEMPLATES = [
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "OPTIONS": {"loaders": [("django.template.loaders.locmem.Loader", TEMPLATES)]},
        }
    ]
    RETURNED.clear()


@pytest.fixture
def reader(transactional_db):
    return User.objects.create_user("lecteur@mirc.test", "x", first_name="Léa")


@email_context
def parcel_context(number: int) -> dict | None:
    if number in RETURNED:
        return None
    return {"number": number, "url": portal_url(f"/parcels/{number}/")}


def parcel_arrived(users, number: int, *, at_send_time: bool = False) -> list[User]:
    """The whole of the fake feature's notification code."""
    return notify(
        users,
        gettext_noop("Parcel no. %(number)s arrived."),
        f"/parcels/{number}/",
        params={"number": number},
        email_template="parcels/email/arrived",
        context=(
            at_send(parcel_context, number)
            if at_send_time
            else {"number": number, "url": portal_url(f"/parcels/{number}/")}
        ),
    )


def test_a_call_tells_each_active_user_once_in_the_portal_and_by_email_after_commit(reader):
    former = User.objects.create_user("ancien@mirc.test", "x", is_active=False)

    with transaction.atomic():
        told = parcel_arrived([reader, None, former, reader], 7)
        assert mail.outbox == [], "an e-mail left before the change was committed"

    assert told == [reader]
    assert [message.to for message in mail.outbox] == [["lecteur@mirc.test"]]
    assert mail.outbox[0].subject == "Parcel no. 7"
    assert "https://portail.mirc.test/parcels/7/" in mail.outbox[0].body
    assert [(n.recipient, n.url, n.msgid) for n in Notification.objects.all()] == [
        (reader, "/parcels/7/", "Parcel no. %(number)s arrived.")
    ]


def test_nothing_is_told_when_the_change_rolls_back(reader):
    with pytest.raises(Refused), transaction.atomic():
        parcel_arrived([reader], 8)
        raise Refused

    assert mail.outbox == []
    assert not Notification.objects.exists()


def test_a_context_built_at_send_time_drops_the_email_that_no_longer_applies(reader):
    with transaction.atomic():
        parcel_arrived([reader], 9, at_send_time=True)
        parcel_arrived([reader], 10, at_send_time=True)
        RETURNED.add(10)  # sent back before the e-mails leave

    assert [message.subject for message in mail.outbox] == ["Parcel no. 9"]
    assert Notification.objects.count() == 2


def test_a_new_channel_is_one_registration(reader, monkeypatch):
    secure_messages = []
    monkeypatch.setitem(
        CHANNELS, "secure", lambda users, notice: secure_messages.append((users, notice.link))
    )

    parcel_arrived([reader], 11)

    assert secure_messages == [([reader], "/parcels/11/")]


def test_the_email_task_runs_only_builders_marked_for_it(reader):
    def unmarked(number):
        return {"number": number}

    with pytest.raises(ValueError):
        notify(
            [reader], "x", "/", email_template="parcels/email/arrived", context=at_send(unmarked)
        )
    # A message on the queue naming any other function is refused, not called.
    forged = {"template": "parcels/email/arrived", "builder": "os.getcwd", "args": []}
    with pytest.raises(ValueError):
        emails_send(email=forged, recipient_ids=[reader.pk])
    assert mail.outbox == []

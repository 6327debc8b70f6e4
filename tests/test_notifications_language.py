"""Notifications are read in the reader's language, whatever language was active when they
were left: the notifications page, the live toast, and Notification.text for other pages."""

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.db import transaction
from django.urls import reverse
from django.utils import translation

from expertise import notifications as expertise_notifications
from portal import services
from portal.models import Notification
from tests.conftest import client_for

DECISION_EN = "A decision of RCP thoracique is available."
DECISION_FR = "Un avis de RCP thoracique est disponible."


def _left_in_french(user) -> Notification:
    with translation.override("fr"):
        return services.notify(
            recipient=user,
            message="A decision of %(committee)s is available.",
            params={"committee": "RCP thoracique"},
            url="/rcp/",
        )


def test_a_notification_left_in_french_reads_in_english_to_an_english_reader(world):
    notification = _left_in_french(world.oncologist.user)
    with translation.override("en"):
        assert notification.text == DECISION_EN
    with translation.override("fr"):
        assert Notification.objects.get(pk=notification.pk).text == DECISION_FR
    # The text stored for older readers is the portal's language (French).
    assert notification.message == DECISION_FR


def test_the_notifications_page_speaks_the_readers_language(world):
    _left_in_french(world.oncologist.user)
    client = client_for(world.oncologist.user)
    english = client.get(reverse("notification-list"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert DECISION_EN in english and DECISION_FR not in english
    client.cookies[django_settings.LANGUAGE_COOKIE_NAME] = "fr"
    french = client.get(reverse("notification-list")).content.decode()
    assert DECISION_FR in french and DECISION_EN not in french


def test_parameters_that_are_words_are_translated_too(world):
    """The specialty of a tele-expertise request follows the reader's language."""

    class Request:
        pk = 42
        expert_id = None

        def get_specialty_display(self):
            return translation.gettext_lazy("Dermatology")

    with translation.override("fr"):
        label = expertise_notifications._label(Request())
    assert label["specialty"] == {"msgid": "Dermatology"}
    notification = services.notify(
        recipient=world.gp.user,
        message="Tele-expertise request no. %(number)s is due soon (%(specialty)s).",
        params=label,
    )
    with translation.override("en"):
        assert notification.text == "Tele-expertise request no. 42 is due soon (Dermatology)."
    with translation.override("fr"):
        assert "(Dermatologie)" in notification.text


def test_older_rows_and_broken_sources_keep_their_stored_text(world):
    old = Notification.objects.create(recipient=world.gp.user, message="Cas discuté")
    with translation.override("en"):
        assert old.text == "Cas discuté"
    broken = Notification.objects.create(
        recipient=world.gp.user,
        message="Texte enregistré",
        msgid="A decision of %(committee)s is available.",
        params={},
    )
    with translation.override("en"):
        assert broken.text == "Texte enregistré"


@pytest.fixture
def memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends = {}
    yield
    channel_layers.backends = {}


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_live_notification_speaks_the_language_of_the_page(memory_layer, world):
    from portal.asgi import application

    client = await database_sync_to_async(client_for)(world.oncologist.user)
    name = django_settings.SESSION_COOKIE_NAME
    cookie = f"{name}={client.cookies[name].value}"
    english = WebsocketCommunicator(
        application,
        "/ws/notifications/",
        headers=[
            (b"origin", b"http://localhost"),
            (b"cookie", cookie.encode()),
            (b"accept-language", b"en-GB,en;q=0.9"),
        ],
    )
    french = WebsocketCommunicator(
        application,
        "/ws/notifications/",
        headers=[
            (b"origin", b"http://localhost"),
            (b"cookie", (cookie + f"; {django_settings.LANGUAGE_COOKIE_NAME}=fr").encode()),
            (b"accept-language", b"en"),
        ],
    )
    assert (await english.connect(timeout=3))[0]
    assert (await french.connect(timeout=3))[0]

    def leave_in_french():
        with transaction.atomic():
            _left_in_french(world.oncologist.user)

    await database_sync_to_async(leave_in_french)()
    assert (await english.receive_json_from(timeout=3))["message"] == DECISION_EN
    assert (await french.receive_json_from(timeout=3))["message"] == DECISION_FR
    await english.disconnect()
    await french.disconnect()


def test_the_case_presentation_reads_in_the_readers_language(world):
    """ "Cas enregistré / Cas discuté" are the portal's workflow: English readers read
    English, on the case page and in the fiche's list; the FRCP document keeps them French."""
    from rcp import frcp
    from tests.rcp_world import submitted_case

    case = submitted_case(world)
    assert case.presentation == frcp.CASE_DISCUSSED
    url = reverse("rcp-case", args=[case.pk])
    english = client_for(world.oncologist.user).get(url, HTTP_ACCEPT_LANGUAGE="en")
    page = english.content.decode()
    assert "Case discussed" in page and "Cas discuté" not in page
    assert "Cas enregistré" not in page
    french = client_for(world.oncologist.user).get(url, HTTP_ACCEPT_LANGUAGE="fr")
    assert "Cas discuté" in french.content.decode()
    assert frcp.STATUT_CAS.label(frcp.CASE_DISCUSSED) == "Cas discuté"


def test_older_french_rows_find_their_source_again(world):
    """portal 0006: the rows written in French before the source was stored."""
    import importlib

    from django.apps import apps

    migration = importlib.import_module("portal.migrations.0006_notification_sources_of_old_rows")
    with translation.override("fr"):
        reminder = translation.ngettext(
            "Reminder: %(committee)s meets on %(date)s, %(count)s case on the agenda.",
            "Reminder: %(committee)s meets on %(date)s, %(count)s cases on the agenda.",
            2,
        ) % {"committee": "RCP thoracique", "date": "12/12/2026 17:00", "count": 2}
        due = translation.gettext(
            "Tele-expertise request no. %(number)s is due soon (%(specialty)s)."
        ) % {"number": 7, "specialty": translation.gettext("Dermatology")}
    rows = [
        Notification.objects.create(recipient=world.gp.user, message=text)
        for text in (DECISION_FR, reminder, due, "Un texte inconnu")
    ]
    migration.find_sources(apps, None)
    decision, reminder_row, due_row, unknown = (Notification.objects.get(pk=row.pk) for row in rows)
    with translation.override("en"):
        assert decision.text == DECISION_EN
        assert reminder_row.text == (
            "Reminder: RCP thoracique meets on 12/12/2026 17:00; cases on the agenda: 2."
        )
        assert due_row.text == "Tele-expertise request no. 7 is due soon (Dermatology)."
        assert unknown.text == "Un texte inconnu"

"""The GP opens what his bell announced: the bell stops counting it.

From the news of his home he opens the RCP decision, the tele-expertise report, the study
report; the notifications that linked to that page are his read ones from then on. His other
notifications, and other people's about the same page, stay unread.
"""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from expertise import services as expertise_services
from portal import services as portal_services
from portal.audit import Actor
from portal.models import Notification
from tests.conftest import client_for
from tests.expertise_world import REPORT, expertise_world, sent_request
from tests.permission_matrix import _rcp_case, _study_report

pytestmark = pytest.mark.django_db

BELL = re.compile(r'<span class="badge" data-count="(\d*)"')


def _bell(client) -> int:
    """The count the bell of the GP's home shows."""
    count = BELL.search(client.get(reverse("home")).content.decode()).group(1)
    return int(count or 0)


def _unread(user, url):
    return Notification.objects.filter(recipient=user, url__endswith=url, read_at__isnull=True)


def _notification_updates(queries) -> list[str]:
    return [
        query["sql"]
        for query in queries
        if query["sql"].startswith("UPDATE") and "portal_notification" in query["sql"]
    ]


def test_opening_the_rcp_decision_reads_its_notification(world):
    case = _rcp_case(world, "validated")
    gp = client_for(world.gp.user)
    url = reverse("rcp-case", args=[case.pk])
    assert _unread(world.gp.user, url).exists()
    unrelated = portal_services.notify(recipient=world.gp.user, message="Autre chose", url="/x/")
    others = list(
        Notification.objects.filter(url__endswith=url, read_at__isnull=True).exclude(
            recipient=world.gp.user
        )
    )
    before = _bell(gp)

    with CaptureQueriesContext(connection) as queries:
        assert gp.get(url).status_code == 200
    assert len(_notification_updates(queries.captured_queries)) == 1

    assert not _unread(world.gp.user, url).exists()
    assert _bell(gp) < before
    unrelated.refresh_from_db()
    assert unrelated.read_at is None  # only what the page announced
    for other in others:  # the other members' notifications of the decision stay theirs
        other.refresh_from_db()
        assert other.read_at is None


def test_opening_the_tele_expertise_request_reads_the_report_notification(world):
    expertise_world(world)
    request = sent_request(world)
    expert = Actor(user=world.teleradiologist.user)
    expertise_services.request_claim(request=request, by=expert)
    report = expertise_services.report_save(request=request, by=expert, revision=None, **REPORT)
    expertise_services.report_sign_and_send(request=request, by=expert, revision=report.revision)
    url = reverse("expertise-request", args=[request.pk])
    assert _unread(world.gp.user, url).exists()  # the requester was told of the report

    gp = client_for(world.gp.user)
    before = _bell(gp)
    assert gp.get(url).status_code == 200
    assert not _unread(world.gp.user, url).exists()
    assert _bell(gp) < before


def test_opening_a_study_report_reads_the_notification_that_linked_to_it(world):
    report = _study_report(world)
    url = reverse(
        "study-report-pdf", kwargs={"patient_id": world.patient.pk, "report_id": report.pk}
    )
    portal_services.notify(recipient=world.gp.user, message="Compte rendu", url=url)
    gp = client_for(world.gp.user)
    assert gp.get(url).status_code == 200
    assert not _unread(world.gp.user, url).exists()


def test_a_refused_page_reads_nothing(world):
    case = _rcp_case(world, "validated")
    url = reverse("rcp-case", args=[case.pk])
    notification = portal_services.notify(recipient=world.outsider.user, message="x", url=url)
    # The outsider meets 404: nothing of his is marked read by a page he did not see.
    assert client_for(world.outsider.user).get(url).status_code == 404
    notification.refresh_from_db()
    assert notification.read_at is None

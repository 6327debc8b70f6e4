"""The RCP indicators of every committee, for the regional programme (rcp.view_indicators).

The thoracic board of Tours held a session 40 days ago (two cases discussed) and closed one
10 days ago without any case (not held); the digestive board of Bourges held one 20 days ago
(one case). The regional programme (Mathilde Dumas, tests.permission_matrix) sits on neither
board and reads both; the thoracic surgeon reads only his board; the GP reads none.
"""

import csv
import datetime as dt
import io

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from portal.audit import Actor
from portal.models import AuditEvent, AuditEventId, AuditOutcome
from rcp import frcp, services
from rcp.models import Case, Committee, CommitteeMember, Decision, Session
from tests.conftest import client_for
from tests.permission_matrix import _regional_programme
from tests.rcp_world import rcp_world, submitted_case

pytestmark = pytest.mark.django_db

ENGLISH = {"HTTP_ACCEPT_LANGUAGE": "en"}


def _session(committee, days_ago, status):
    start = timezone.now().replace(microsecond=0) - dt.timedelta(days=days_ago)
    return Session.objects.create(
        committee=committee,
        starts_at=start,
        ends_at=start + dt.timedelta(hours=2),
        submission_deadline=start - dt.timedelta(days=2),
        status=status,
    )


def _discussed(world, session):
    """A case of world.patient discussed at ``session`` (any committee: dates and states are
    set as the meeting would have)."""
    case = submitted_case(world)
    Case.objects.filter(pk=case.pk).update(
        committee=session.committee,
        session=session,
        state=Case.State.DISCUSSED,
        discussed_at=session.starts_at,
    )
    return case


@pytest.fixture
def region(world):
    rcp_world(world)
    world.thoracic_held = _session(world.thoracic, 40, Session.Status.HELD)
    _session(world.thoracic, 10, Session.Status.NOT_HELD)
    world.digestive_held = _session(world.digestive, 20, Session.Status.HELD)
    _discussed(world, world.thoracic_held)
    late = _discussed(world, world.thoracic_held)
    # Its decision validated in the meeting without the quorum (reason, second validator).
    Decision.objects.create(
        case=late,
        version=1,
        created_by=world.oncologist.user,
        validated_by=world.oncologist.user,
        validated_at=world.thoracic_held.starts_at,
        quorum_status=frcp.QUORUM_NOT_REACHED,
        validated_without_quorum=True,
        without_quorum_reason="Chirurgien absent, décision urgente",
        second_validator=world.coordinator.user,
    )
    Case.objects.filter(pk=late.pk).update(state=Case.State.VALIDATED)
    _discussed(world, world.digestive_held)
    world.programme = _regional_programme(world)
    return world


def _figures(response):
    return {one.committee.name: one for one in response.context["figures"]}


def test_the_programme_reads_every_committee_with_charts(region):
    response = client_for(region.programme).get(reverse("rcp-indicators"), **ENGLISH)
    assert response.status_code == 200
    figures = _figures(response)
    assert set(figures) == {region.thoracic.name, region.digestive.name}
    thoracic, digestive = figures[region.thoracic.name], figures[region.digestive.name]
    assert thoracic.indicators.cases_presented == 2
    assert digestive.indicators.cases_presented == 1
    assert thoracic.sessions == {"held": 1, "not_held": 1, "total": 2}
    page = response.content.decode()
    assert 'data-testid="committees"' in page
    # Cases per month, one colour per committee, both named in the legend.
    chart = response.context["months_chart"]
    assert sum(column.total for column in chart.columns) == 3
    assert [series.name for series in chart.series] == [region.digestive.name, region.thoracic.name]
    assert 'data-testid="months-legend"' in page
    assert "Held: 1 of 2 (not held: 1)" in page
    assert thoracic.indicators.validated_without_quorum.count == 1
    assert 'data-testid="without-quorum">1<' in page
    # Reading the counts is not reading the sessions: no link to a session's page.
    assert reverse("rcp-session", args=[region.thoracic_held.pk]) not in page
    event = AuditEvent.objects.filter(actor=region.programme).latest("id")
    assert (event.event_id, event.detail["committees"]) == (AuditEventId.QUERY, 2)


def test_the_programme_chooses_one_committee(region):
    response = client_for(region.programme).get(
        reverse("rcp-indicators"), {"committee": region.digestive.pk}, **ENGLISH
    )
    assert list(_figures(response)) == [region.digestive.name]
    assert 'data-testid="summary"' in response.content.decode()
    # And a committee's own page, though not sitting on it.
    page = client_for(region.programme).get(
        reverse("rcp-committee-indicators", args=[region.thoracic.pk])
    )
    assert page.status_code == 200
    assert page.context["indicators"].cases_presented == 2


def test_a_member_reads_only_the_committees_they_sit_on(region):
    surgeon = client_for(region.surgeon.user)
    response = surgeon.get(reverse("rcp-indicators"), **ENGLISH)
    assert list(_figures(response)) == [region.thoracic.name]
    # Naming the other board in the address shows nothing of it.
    refused = surgeon.get(reverse("rcp-indicators"), {"committee": region.digestive.pk})
    assert refused.status_code == 400
    assert region.digestive.name not in refused.content.decode()
    assert surgeon.get(
        reverse("rcp-committee-indicators", args=[region.digestive.pk])
    ).status_code == (404)


def test_someone_on_no_committee_without_the_permission_is_refused_and_audited(region):
    for name in ("rcp-indicators", "rcp-indicators-csv"):
        assert client_for(region.gp.user).get(reverse(name)).status_code == 403
    assert (
        AuditEvent.objects.filter(
            actor=region.gp.user,
            event_id=AuditEventId.SECURITY_ALERT,
            outcome=AuditOutcome.MINOR_FAILURE,
        ).count()
        == 2
    )
    # The technical administrator's blanket rights do not make them a reader either, and the
    # RCP home offers them no link to a page that would refuse them.
    assert client_for(region.admin_user).get(reverse("rcp-indicators")).status_code == 403
    home = client_for(region.admin_user).get(reverse("rcp-home")).content.decode()
    assert 'data-testid="rcp-indicators"' not in home
    home = client_for(region.programme).get(reverse("rcp-home")).content.decode()
    assert 'data-testid="rcp-indicators"' in home


def test_the_csv_has_one_line_per_committee(region):
    response = client_for(region.programme).get(reverse("rcp-indicators-csv"), **ENGLISH)
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig")), delimiter=";"))
    header, *lines = rows
    cases = header.index("Cases presented")
    by_name = {line[0]: line for line in lines}
    assert by_name[region.thoracic.name][cases] == "2"
    assert by_name[region.digestive.name][cases] == "1"
    assert by_name[region.thoracic.name][header.index("Sessions not held")] == "1"
    event = AuditEvent.objects.filter(actor=region.programme).latest("id")
    assert event.event_id == AuditEventId.EXPORT


def _queries(client, name, query=None):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse(name), query or {})
        assert response.status_code == 200
    return len(queries)


def test_the_page_takes_the_same_queries_however_many_sessions_and_cases(region):
    client = client_for(region.programme)
    before = {name: _queries(client, name) for name in ("rcp-indicators", "rcp-indicators-csv")}
    for days in (30, 25, 15):
        _discussed(region, _session(region.digestive, days, Session.Status.HELD))
        _session(region.thoracic, days + 1, Session.Status.NOT_HELD)
    after = {name: _queries(client, name) for name in before}
    assert after == before
    # rcp.indicators takes three queries for every committee; the page a fixed number besides.
    assert before["rcp-indicators"] <= 12 + 3


def test_the_page_takes_the_same_queries_for_1_or_5_committees(region):
    client = client_for(region.programme)
    names = ("rcp-indicators", "rcp-indicators-csv")
    one = {name: _queries(client, name, {"committee": region.thoracic.pk}) for name in names}
    # Three more boards of the region, each with a held session and a case discussed.
    for town in ("Blois", "Chartres", "Orléans"):
        board = services.committee_create(
            by=Actor.system("tests"),
            name=f"RCP thoracique — CH de {town}",
            kind=Committee.Kind.ORGAN,
            establishment=region.bourges,
            members=[(region.outsider, CommitteeMember.Role.CHAIR)],
        )
        _discussed(region, _session(board, 12, Session.Status.HELD))

    five = {name: _queries(client, name) for name in names}

    assert five == one
    response = client.get(reverse("rcp-indicators"), **ENGLISH)
    assert len(response.context["figures"]) == 5
    assert all(f.indicators.cases_presented for f in response.context["figures"])

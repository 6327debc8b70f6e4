"""Pools set up by the regional administration and run by their coordinators: a pool created
with a first coordinator found in the national directory, experts added from the directory (of
the pool's specialty only), roles, removals, the pool closed to new requests and its own delays,
which the deadlines of requests sent afterwards follow; each change audited, outsiders and the
pool's experts refused like a missing id.
"""

import datetime as dt

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from expertise import pools
from expertise.deadlines import deadlines_watch
from expertise.errors import ExpertiseError, NotAllowed
from expertise.models import Pool, PoolMember, Urgency
from expertise.pdf import urgency_fr
from portal.audit import Actor
from portal.models import AuditEvent, AuditEventId, AuditEventType, Professional, Specialty, User
from tests import builders
from tests.conftest import client_for
from tests.expertise_world import draft_request, expertise_world, sent_request
from tests.test_committee_admin import directory_doctor, messages_of

Role = PoolMember.Role


@pytest.fixture
def tele(world):
    """The pools of tests/expertise_world.py, the regional administrator, and two doctors of
    the directory who have no account yet: a radiologist of Bourges and a cardiologist of Tours."""
    expertise_world(world)
    world.regional_admin = builders.user(
        email="administration.regionale@mirc.test",
        first_name="Mathieu",
        last_name="Leroy",
        permissions=["rcp.add_committee", "expertise.add_pool"],
    )
    world.faure = directory_doctor(
        last_name="Faure",
        first_name="Léa",
        specialty=Specialty.RADIOLOGY,
        specialty_label="Radio-diagnostic",
        finess=world.bourges.finess,
        number=11,
    )
    world.morin = directory_doctor(
        last_name="Morin",
        first_name="Eric",
        specialty=Specialty.CARDIOLOGY,
        specialty_label="Cardiologie",
        finess=world.tours.finess,
        number=12,
    )
    return world


def _manage_url(pool) -> str:
    return reverse("expertise-pool-manage", args=[pool.pk])


def _roles(pool) -> dict[str, str]:
    return {
        str(m.professional): m.role for m in pool.memberships.select_related("professional__user")
    }


def _settings(pool, **overrides) -> dict:
    pool.refresh_from_db()
    return {
        "is_active": "on" if pool.is_active else "",
        "urgent_hours": int(pool.urgent_delay.total_seconds() // 3600),
        "priority_days": pool.priority_delay.days,
        "routine_days": pool.routine_delay.days,
        "revision": pool.revision,
        **overrides,
    }


# --- Creating a pool ------------------------------------------------------------------------------


def test_the_regional_administration_creates_a_pool_coordinated_by_a_directory_doctor(tele):
    client = client_for(tele.regional_admin)
    create = reverse("expertise-pool-create")
    assert create in client.get(reverse("expertise-home")).content.decode()
    assert tele.morin.rpps in client.get(create, {"q": "morin"}).content.decode()
    chosen = client.post(create + "?q=morin", {"national_id": tele.morin.national_id})
    assert "Eric" in chosen.content.decode()

    response = client.post(
        create,
        {
            "step": "create",
            "national_id": tele.morin.national_id,
            "name": "Télécardiologie — CHRU de Tours",
            "specialty": Specialty.CARDIOLOGY,
            "establishment": tele.tours.pk,
        },
    )
    pool = Pool.objects.get(name="Télécardiologie — CHRU de Tours")
    assert response["Location"] == reverse("expertise-home")
    morin = Professional.objects.select_related("user").get(rpps=tele.morin.rpps)
    assert _roles(pool) == {str(morin): Role.COORDINATOR}
    # The default delays until its coordinators set their own; open to requests.
    assert (pool.is_active, pool.urgent_delay, pool.routine_delay) == (
        True,
        dt.timedelta(hours=24),
        dt.timedelta(days=7),
    )
    created = AuditEvent.objects.get(
        event_id=AuditEventId.SECURITY_ALERT, object_type="expertise.pool", object_id=str(pool.pk)
    )
    assert created.actor == tele.regional_admin
    assert client_for(morin.user).get(_manage_url(pool)).status_code == 200


def test_a_second_pool_of_the_same_specialty_and_establishment_is_refused(tele):
    client = client_for(tele.regional_admin)
    before = (Pool.objects.count(), User.objects.count(), AuditEvent.objects.count())
    response = client.post(
        reverse("expertise-pool-create"),
        {
            "step": "create",
            "national_id": tele.faure.national_id,
            "name": "Imagerie bis",
            "specialty": Specialty.RADIOLOGY,
            "establishment": tele.tours.pk,
        },
    )
    assert response.status_code == 200
    assert any("Téléradiologie — CHRU de Tours" in m for m in messages_of(response))
    # Neither the pool nor the chosen doctor's account: nothing was created.
    assert (Pool.objects.count(), User.objects.count(), AuditEvent.objects.count()) == before


def test_only_the_regional_administration_creates_pools(tele):
    for user in (tele.pool_coordinator.user, tele.teleradiologist.user):
        client = client_for(user)
        assert client.get(reverse("expertise-pool-create")).status_code == 403
        assert "pool-create" not in client.get(reverse("expertise-home")).content.decode()
    with pytest.raises(NotAllowed):
        pools.pool_create(
            name="X",
            specialty=Specialty.CARDIOLOGY,
            establishment=tele.tours,
            coordinator=tele.teleradiologist,
            by=Actor(user=tele.pool_coordinator.user),
        )
    assert not Pool.objects.filter(name="X").exists()


# --- Who manages a pool ---------------------------------------------------------------------------


def test_the_management_page_is_the_pool_coordinators_only(tele):
    url = _manage_url(tele.teleradiology)
    assert client_for(tele.pool_coordinator.user).get(url).status_code == 200
    # Its own experts, an expert of another pool, the technical administrator: 404.
    for user in (tele.teleradiologist.user, tele.outsider.user, tele.admin_user):
        assert client_for(user).get(url).status_code == 404, user
    other = _manage_url(tele.bourges_radiology)
    assert client_for(tele.pool_coordinator.user).get(other).status_code == 404
    expert = tele.teleradiology.memberships.get(professional=tele.teleradiologist)
    response = client_for(tele.teleradiologist.user).post(
        reverse("expertise-pool-member-role", args=[tele.teleradiology.pk, expert.pk]),
        {"role": Role.COORDINATOR, "seen_role": Role.EXPERT},
    )
    assert response.status_code == 404
    assert _roles(tele.teleradiology)[str(tele.teleradiologist)] == Role.EXPERT


# --- Experts from the directory -------------------------------------------------------------------


def test_a_coordinator_adds_a_radiologist_of_the_directory_as_expert(tele):
    client = client_for(tele.pool_coordinator.user)
    page = client.get(_manage_url(tele.teleradiology), {"q": "Faure"}).content.decode()
    assert tele.faure.rpps in page
    response = client.post(
        _manage_url(tele.teleradiology) + "?q=Faure",
        {"national_id": tele.faure.national_id, "role": Role.EXPERT},
        follow=True,
    )
    faure = Professional.objects.get(rpps=tele.faure.rpps)
    assert _roles(tele.teleradiology)[str(faure)] == Role.EXPERT
    assert messages_of(response) == [f"{faure} a rejoint l'équipe (expert)."]
    added = AuditEvent.objects.get(
        object_type="expertise.pool", event_type=AuditEventType.SECURITY_ROLES_CHANGED
    )
    assert (added.actor, added.detail["professional"]) == (tele.pool_coordinator.user, faure.pk)
    # The new expert sees the pool's queue: a request sent to the pool now reaches him.
    request = sent_request(tele)
    home = client_for(faure.user).get(reverse("expertise-home")).content.decode()
    assert reverse("expertise-request", args=[request.pk]) in home


def test_an_expert_of_another_specialty_is_refused_but_may_coordinate(tele):
    client = client_for(tele.pool_coordinator.user)
    before = (PoolMember.objects.count(), User.objects.count(), AuditEvent.objects.count())
    refused = client.post(
        _manage_url(tele.teleradiology),
        {"national_id": tele.morin.national_id, "role": Role.EXPERT},
        follow=True,
    )
    assert any(
        "(Cardiologie) n'est pas celle de l'équipe (Radiologie)" in m for m in messages_of(refused)
    )
    assert (PoolMember.objects.count(), User.objects.count(), AuditEvent.objects.count()) == before
    client.post(
        _manage_url(tele.teleradiology) + "?role=coordinator",
        {"national_id": tele.morin.national_id, "role": Role.COORDINATOR},
    )
    morin = Professional.objects.get(rpps=tele.morin.rpps)
    assert _roles(tele.teleradiology)[str(morin)] == Role.COORDINATOR
    # Nor can he be made an expert afterwards.
    with pytest.raises(ExpertiseError):
        pools.member_set_role(
            pool=tele.teleradiology,
            member=tele.teleradiology.memberships.get(professional=morin),
            role=Role.EXPERT,
            by=Actor(user=tele.pool_coordinator.user),
        )


def test_twice_an_unknown_identifier_or_the_last_coordinator_change_nothing(tele):
    client = client_for(tele.pool_coordinator.user)
    url = _manage_url(tele.teleradiology)
    client.post(url, {"national_id": tele.faure.national_id})
    before = (_roles(tele.teleradiology), User.objects.count(), AuditEvent.objects.count())
    twice = client.post(url, {"national_id": tele.faure.national_id}, follow=True)
    unknown = client.post(url, {"national_id": "81234567890"}, follow=True)
    me = tele.teleradiology.memberships.get(professional=tele.pool_coordinator)
    leave = client.post(
        reverse("expertise-pool-member-remove", args=[tele.teleradiology.pk, me.pk]),
        {"seen_role": Role.COORDINATOR},
        follow=True,
    )
    for response in (twice, unknown, leave):
        assert messages_of(response)
    assert (_roles(tele.teleradiology), User.objects.count(), AuditEvent.objects.count()) == before


def test_a_coordinator_removes_an_expert(tele):
    client = client_for(tele.pool_coordinator.user)
    expert = tele.teleradiology.memberships.get(professional=tele.second_radiologist)
    client.post(
        reverse("expertise-pool-member-remove", args=[tele.teleradiology.pk, expert.pk]),
        {"seen_role": Role.EXPERT},
    )
    assert str(tele.second_radiologist) not in _roles(tele.teleradiology)
    removed = AuditEvent.objects.get(object_type="expertise.pool", action="D")
    assert removed.detail["professional"] == tele.second_radiologist.pk


# --- Accepting requests and delays ----------------------------------------------------------------


def test_a_closed_pool_takes_no_new_request(tele):
    client = client_for(tele.pool_coordinator.user)
    url = reverse("expertise-pool-settings", args=[tele.teleradiology.pk])
    client.post(url, _settings(tele.teleradiology, is_active=""))
    tele.teleradiology.refresh_from_db()
    assert not tele.teleradiology.is_active
    page = client.get(_manage_url(tele.teleradiology)).content.decode()
    assert 'data-testid="pool-closed"' in page
    with pytest.raises(ExpertiseError):
        draft_request(tele)


def test_the_pool_delays_set_the_deadline_of_requests_sent_afterwards(tele):
    start = timezone.now().replace(microsecond=0)
    with time_machine.travel(start, tick=False):
        earlier = sent_request(tele, urgency=Urgency.URGENT)  # the default: 24 h
        client = client_for(tele.pool_coordinator.user)
        url = reverse("expertise-pool-settings", args=[tele.teleradiology.pk])
        client.post(url, _settings(tele.teleradiology, urgent_hours=8, priority_days=2))
        later = sent_request(tele, urgency=Urgency.URGENT)
    earlier.refresh_from_db()
    assert earlier.due_at == start + dt.timedelta(hours=24)  # a deadline given does not move
    assert later.due_at == start + dt.timedelta(hours=8)
    assert later.expected_delay == dt.timedelta(hours=8)
    # The signed report says the delay the request was sent with.
    assert urgency_fr(later) == "Urgente (réponse attendue sous 8 h)"
    assert urgency_fr(earlier) == "Urgente (réponse attendue sous 24 h)"
    page = client_for(tele.gp.user).get(reverse("expertise-request", args=[later.pk]))
    assert "8" in page.content.decode()
    # The reminder comes when a quarter of the pool's delay is left (2 h of 8), the alert after.
    with time_machine.travel(start + dt.timedelta(hours=6, minutes=1), tick=False):
        assert deadlines_watch()["reminded"] == [later.pk]
    with time_machine.travel(start + dt.timedelta(hours=8, minutes=1), tick=False):
        assert deadlines_watch()["escalated"] == [later.pk]
    changed = AuditEvent.objects.get(
        object_type="expertise.pool", event_type=AuditEventType.SOFTWARE_CONFIGURATION
    )
    assert changed.detail["settings"] == {
        "urgent_delay": "8:00:00",
        "priority_delay": "2 days, 0:00:00",
    }


def test_unreasonable_or_stale_settings_change_nothing(tele):
    client = client_for(tele.pool_coordinator.user)
    url = reverse("expertise-pool-settings", args=[tele.teleradiology.pk])
    stale = _settings(tele.teleradiology, urgent_hours=12)
    before = _settings(tele.teleradiology)
    # An urgent answer later than a priority one; hours that are not a number.
    upside_down = client.post(
        url, _settings(tele.teleradiology, urgent_hours=72, priority_days=1), follow=True
    )
    garbage = client.post(url, _settings(tele.teleradiology, urgent_hours="vite"), follow=True)
    assert messages_of(upside_down) and messages_of(garbage)
    assert _settings(tele.teleradiology) == before
    # Another coordinator saved first: the form built before that is refused.
    client.post(url, _settings(tele.teleradiology, routine_days=10))
    refused = client.post(url, stale, follow=True)
    assert any("entre-temps" in m for m in messages_of(refused))
    tele.teleradiology.refresh_from_db()
    assert tele.teleradiology.urgent_delay == dt.timedelta(hours=24)
    assert tele.teleradiology.routine_delay == dt.timedelta(days=10)


def test_the_management_page_costs_the_same_queries_for_3_or_23_members(tele):
    client = client_for(tele.pool_coordinator.user)
    url = _manage_url(tele.teleradiology)
    client.get(url, {"q": "Fau"})
    with CaptureQueriesContext(connection) as few:
        assert client.get(url, {"q": "Fau"}).status_code == 200
    for n in range(20):
        radiologist = builders.professional(
            email=f"radiologie.n{n}@mirc.test",
            first_name="Radio",
            last_name=f"N{n}",
            specialty=Specialty.RADIOLOGY,
            establishment=tele.tours if n % 2 else tele.bourges,
        )
        pools.member_add(
            pool=tele.teleradiology,
            professional=radiologist,
            by=Actor(user=tele.pool_coordinator.user),
        )
    with CaptureQueriesContext(connection) as many:
        page = client.get(url, {"q": "Fau"}).content.decode()
    assert page.count('name="seen_role"') == 2 * 23
    assert len(many) == len(few)

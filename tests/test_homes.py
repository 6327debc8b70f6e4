"""The home page by role: the coordinator's worklist across her committees, the GP's news
about his patients (unread first), and the tiles everyone keeps."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from imaging.home import STUDIES_SHOWN
from portal import services as portal_services
from portal.audit import Actor
from portal.home import NEWS_MARKED_READ, NEWS_OBJECT, gp_news
from portal.models import AuditEvent, AuditEventId, CareRole, Notification
from rcp import services
from rcp.models import Case, Committee, CommitteeMember, RcpDocument, Session
from rcp.selectors import coordinator_worklist
from tests.conftest import client_for, make_patient
from tests.permission_matrix import _rcp_case, _study_report, imaged_study
from tests.rcp_world import COMPLETE_THORACIC, rcp_world, submitted_case

pytestmark = pytest.mark.django_db


def _home(user):
    response = client_for(user).get(reverse("home"))
    assert response.status_code == 200
    return response


def _session(committee, *, days, status=Session.Status.PLANNED) -> Session:
    """A session ``days`` from now (negative: past), made as the clock left it (planning
    refuses the past)."""
    start = timezone.now().replace(microsecond=0) + dt.timedelta(days=days)
    return Session.objects.create(
        committee=committee,
        starts_at=start,
        ends_at=start + dt.timedelta(hours=2),
        submission_deadline=start - dt.timedelta(days=2),
        status=status,
    )


def _draft(world, committee=None, patient=None, **fields) -> Case:
    by = Actor(user=world.oncologist.user)
    case = services.case_create(
        patient=patient or world.patient, committee=committee or world.thoracic, by=by
    )
    if fields:
        case = services.case_update(case=case, revision=case.revision, by=by, **fields)
    return case


def _postponed(world) -> Case:
    case = submitted_case(world)
    case = services.case_put_on_agenda(
        case=case, session=world.session, by=Actor(user=world.coordinator.user)
    )
    return services.case_postpone(case=case, to_session=None, by=Actor(user=world.coordinator.user))


def _worklist_world(world):
    """One case or session in every section of the thoracic board's worklist."""
    rcp_world(world)
    world.waiting = submitted_case(world)
    world.incomplete = _draft(world, question="Place de la chirurgie ?")
    world.postponed = _postponed(world)
    world.running = _session(world.thoracic, days=0, status=Session.Status.IN_PROGRESS)
    world.forgotten = _session(world.thoracic, days=-8)
    world.held = _session(world.thoracic, days=-15, status=Session.Status.HELD)
    return world


# --- The coordinator's worklist ----------------------------------------------------------------


def test_the_coordinator_home_opens_on_her_worklist_with_a_place_to_act_for_each_row(world):
    _worklist_world(world)
    page = _home(world.coordinator.user).content.decode()
    assert page.index('data-testid="worklist"') < page.index('class="cards"')
    session_url = reverse("rcp-session", args=[world.session.pk])
    waiting = page[page.index('data-testid="worklist-waiting"') :]
    waiting = waiting[: waiting.index("</section>")]
    assert reverse("rcp-case", args=[world.waiting.pk]) in waiting
    # Where to put it: the next session of its committee, whose page offers "put on this agenda".
    assert session_url in waiting
    incomplete = page[page.index('data-testid="worklist-incomplete"') :]
    incomplete = incomplete[: incomplete.index("</section>")]
    assert reverse("rcp-case", args=[world.incomplete.pk]) in incomplete
    # What the draft lacks, as the case page says it.
    for missing in services.case_completeness(world.incomplete):
        assert str(missing).replace("'", "&#x27;") in incomplete
    assert "La question posée" not in incomplete  # it has one
    postponed = page[page.index('data-testid="worklist-postponed"') :]
    postponed = postponed[: postponed.index("</section>")]
    assert reverse("rcp-case", args=[world.postponed.pk]) in postponed
    to_close = page[page.index('data-testid="worklist-to-close"') :]
    to_close = to_close[: to_close.index("</section>")]
    assert reverse("rcp-session", args=[world.running.pk]) in to_close
    assert reverse("rcp-session", args=[world.forgotten.pk]) in to_close
    assert session_url not in to_close  # in three days: nothing to close yet
    minutes = page[page.index('data-testid="worklist-minutes"') :]
    minutes = minutes[: minutes.index("</section>")]
    assert reverse("rcp-session", args=[world.held.pk]) in minutes
    assert 'data-state="none"' in minutes  # no minutes made yet


def test_the_worklist_sections_follow_the_record(world):
    _worklist_world(world)
    worklist = coordinator_worklist(world.coordinator.user)
    assert [c.pk for c in worklist.waiting] == [world.waiting.pk]
    assert [c.pk for c in worklist.incomplete] == [world.incomplete.pk]
    assert [c.pk for c in worklist.postponed] == [world.postponed.pk]
    assert worklist.waiting[0].next_session == world.session
    assert {s.pk for s in worklist.to_close} == {world.running.pk, world.forgotten.pk}
    assert [s.pk for s in worklist.minutes] == [world.held.pk]
    assert worklist.minutes[0].minutes_state == "none"

    # The minutes made: off the list; a decision validated since: back, as outdated.
    document = RcpDocument.objects.create(
        kind=RcpDocument.Kind.MINUTES, session=world.held, status=RcpDocument.Status.FAILED
    )
    assert coordinator_worklist(world.coordinator.user).minutes[0].minutes_state == "failed"
    RcpDocument.objects.filter(pk=document.pk).update(status=RcpDocument.Status.READY)
    assert coordinator_worklist(world.coordinator.user).minutes == []
    case = _draft(world, **COMPLETE_THORACIC)
    Case.objects.filter(pk=case.pk).update(session=world.held, state=Case.State.VALIDATED)
    case.decisions.create(
        created_by=world.surgeon.user,
        validated_at=timezone.now() + dt.timedelta(minutes=1),
        validated_by=world.oncologist.user,
    )
    [outdated] = coordinator_worklist(world.coordinator.user).minutes
    assert outdated.minutes_state == "outdated"

    # Put on an agenda, completed and submitted, closed: each leaves its section.
    services.case_put_on_agenda(
        case=world.waiting, session=world.session, by=Actor(user=world.coordinator.user)
    )
    Session.objects.filter(pk=world.running.pk).update(status=Session.Status.HELD)
    worklist = coordinator_worklist(world.coordinator.user)
    assert worklist.waiting == []
    assert {s.pk for s in worklist.to_close} == {world.forgotten.pk}


def test_only_a_chair_or_coordinator_has_a_worklist(world):
    _worklist_world(world)
    # The surgeon sits on the board as a member: the tiles, no worklist.
    page = _home(world.surgeon.user).content.decode()
    assert 'data-testid="worklist"' not in page
    assert 'class="cards"' in page
    # The chair has one, like the coordinator.
    assert 'data-testid="worklist"' in _home(world.oncologist.user).content.decode()


def _worklist_queries(world) -> int:
    client = client_for(world.coordinator.user)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(reverse("home")).status_code == 200
    return len(queries)


def test_the_worklist_costs_the_same_queries_for_one_committee_or_many(
    world, django_assert_max_num_queries
):
    _worklist_world(world)
    with django_assert_max_num_queries(7):
        coordinator_worklist(world.coordinator.user)
    one = _worklist_queries(world)

    # Three more boards she coordinates, each with cases in every section.
    for n in range(3):
        board = services.committee_create(
            by=Actor.system("tests"),
            name=f"RCP {n}",
            kind=Committee.Kind.ORGAN,
            establishment=world.tours,
            members=[(world.coordinator, CommitteeMember.Role.COORDINATOR)],
        )
        next_session = _session(board, days=5)
        _session(board, days=-4 - n)
        _session(board, days=-20, status=Session.Status.HELD)
        for _ in range(3):
            _draft(world, committee=board)
            case = _draft(world, committee=board, studies=[world.ct], **COMPLETE_THORACIC)
            case = services.case_submit(case=case, by=Actor(user=world.oncologist.user))
        services.case_put_on_agenda(
            case=case, session=next_session, by=Actor(user=world.coordinator.user)
        )
        services.case_postpone(case=case, to_session=None, by=Actor(user=world.coordinator.user))
    worklist = coordinator_worklist(world.coordinator.user)
    assert len(worklist.committees) == 4 and len(worklist.incomplete) == 10
    with django_assert_max_num_queries(7):
        coordinator_worklist(world.coordinator.user)
    client = client_for(world.coordinator.user)
    with django_assert_max_num_queries(one):
        assert client.get(reverse("home")).status_code == 200


# --- The GP's news ------------------------------------------------------------------------------


def _news_world(world):
    """A decision validated for the GP's patient (he was notified), a CT and a PDF report."""
    world.validated = _rcp_case(world, "validated")
    world.report = _study_report(world)
    return world


def _kinds(items):
    return [(item.kind, item.unread) for item in items]


def test_the_gp_home_shows_what_is_new_for_his_patients_unread_first(world):
    _news_world(world)
    gp = world.gp.user
    items = gp_news(gp)
    assert {item.kind for item in items} == {"rcp-decision", "study", "study-report"}
    assert all(item.unread for item in items)
    assert all(item.patient == world.patient for item in items)

    # He reads the notification of the decision: the decision goes below the unread ones.
    Notification.objects.filter(
        recipient=gp, url=reverse("rcp-case", args=[world.validated.pk])
    ).update(read_at=timezone.now())
    items = gp_news(gp)
    assert items[-1].kind == "rcp-decision" and not items[-1].unread
    assert all(item.unread for item in items[:-1])

    # He opens the study in the viewer: read too (nobody notified him of it).
    study = imaged_study(world)["study"]
    assert client_for(gp).get(reverse("study-viewer", args=[study.pk])).status_code == 200
    assert dict(_kinds(gp_news(gp)))["study"] is False

    page = _home(gp).content.decode()
    news = page[page.index('data-testid="gp-news"') :]
    assert news.index('data-unread="1"') < news.index('data-unread="0"')
    assert world.patient.display_name in news
    assert reverse("rcp-gp-cases") in news


def test_marking_the_news_read_reads_them_all_and_their_notifications(world):
    _news_world(world)
    gp = world.gp.user
    assert Notification.objects.filter(recipient=gp, read_at__isnull=True).exists()
    response = client_for(gp).post(reverse("home-news-read"))
    assert response.status_code == 302
    assert not any(item.unread for item in gp_news(gp))
    decision_url = reverse("rcp-case", args=[world.validated.pk])
    assert not Notification.objects.filter(
        recipient=gp, url=decision_url, read_at__isnull=True
    ).exists()
    assert AuditEvent.objects.filter(actor=gp, object_type=NEWS_OBJECT, query=NEWS_MARKED_READ)
    assert 'data-testid="news-mark-read"' not in _home(gp).content.decode()

    # What comes after is new again.
    later = imaged_study(world, key="later-ct")["study"]
    [new] = [item for item in gp_news(gp) if item.unread]
    assert new.url == reverse("study-viewer", args=[later.pk])


def test_a_dozen_new_studies_leave_the_decision_in_view(world):
    _news_world(world)
    for n in range(12):
        imaged_study(world, key=f"import-{n}")
    items = gp_news(world.gp.user)
    assert "rcp-decision" in {item.kind for item in items}
    assert sum(item.kind == "study" for item in items) == STUDIES_SHOWN


def test_a_gp_sees_the_news_of_his_current_patients_only(world):
    _news_world(world)
    # The referring oncologist is not the GP: no news panel.
    assert 'data-testid="gp-news"' not in _home(world.oncologist.user).content.decode()
    # Another GP's patient: nothing of world.patient.
    other_gp_patient = make_patient(birth_name="Martin", first_names="Louise", order=7)
    portal_services.care_relationship_add(
        patient=other_gp_patient,
        professional=world.outsider,
        role=CareRole.GP,
        by=Actor.system("tests"),
    )
    assert gp_news(world.outsider.user) == []
    assert 'data-testid="news-empty"' in _home(world.outsider.user).content.decode()
    # No longer his GP: the news go.
    relationship = world.patient.care_relationships.get(role=CareRole.GP)
    portal_services.care_relationship_end(relationship=relationship, by=Actor.system("tests"))
    assert gp_news(world.gp.user) == []


def test_the_gp_home_costs_the_same_queries_for_a_few_news_or_many(
    world, django_assert_max_num_queries
):
    _news_world(world)
    client = client_for(world.gp.user)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(reverse("home")).status_code == 200
    few = len(queries)
    for n in range(6):
        imaged_study(world, key=f"news-{n}")
    assert len(gp_news(world.gp.user)) >= 8
    with django_assert_max_num_queries(few):
        assert client.get(reverse("home")).status_code == 200


def test_the_home_audits_a_query_only_when_it_shows_patients(world):
    _news_world(world)
    gp, auditor = client_for(world.gp.user), client_for(world.auditor_user)
    last = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
    response = gp.get(reverse("home"))
    assert "no-store" in response["Cache-Control"]
    [event] = AuditEvent.objects.filter(pk__gt=last)
    assert (event.event_id, event.actor) == (AuditEventId.QUERY, world.gp.user)
    assert auditor.get(reverse("home")).status_code == 200  # the tiles only
    assert not AuditEvent.objects.filter(pk__gt=event.pk).exists()

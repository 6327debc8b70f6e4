"""The billing records of tele-expertise, as the billing office of CHRU de Tours exports them.

The oncologist of Tours asked the teleradiology pool of Tours about world.patient; the
teleradiologist answered: the portal recorded her TE2 (20 €) and his RQD (10 €), both for
Tours. The GP of the MSP de Vierzon asked too: the TE2 is Tours', the RQD the practice's,
which Tours' billing office does not see.
"""

import csv
import datetime as dt
import io

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from expertise import billing, services
from expertise.models import Act, Urgency
from expertise.views import indicators as views
from portal.audit import Actor
from portal.models import AuditEvent, AuditEventId, AuditOutcome, AuditPurpose
from tests.conftest import client_for, make_professional
from tests.expertise_world import (
    QUESTION,
    REPORT,
    answered_request,
    consent,
    expertise_world,
)

pytestmark = pytest.mark.django_db

ENGLISH = {"HTTP_ACCEPT_LANGUAGE": "en"}  # the English source strings, whatever the .po says
URL = "expertise-acts"


def billing_office(world):
    """The billing officer of CHRU de Tours, who may export the acts (built once per world)."""
    if "_billing_office" not in world.__dict__:
        officer = make_professional(
            email="facturation@mirc.test",
            first_name="Sylvie",
            last_name="Caron",
            profession="autre",
            establishment=world.tours,
            title="Mme",
            with_rpps=False,
        )
        officer.user.user_permissions.add(
            Permission.objects.get(codename="export_acts", content_type__app_label="expertise")
        )
        world._billing_office = officer.user
    return world._billing_office


def answered_for_the_oncologist(world):
    """A request of the oncologist of Tours, answered by the teleradiologist."""
    expertise_world(world)
    oncologist = Actor(user=world.oncologist.user)
    request = services.request_create(
        patient=world.patient,
        pool=world.teleradiology,
        by=oncologist,
        urgency=Urgency.PRIORITY,
        question=QUESTION,
        studies=[world.ct],
        **consent(),
    )
    request = services.request_send(request=request, by=oncologist)
    expert = Actor(user=world.teleradiologist.user)
    request = services.request_claim(request=request, by=expert)
    report = services.report_save(request=request, by=expert, revision=None, **REPORT)
    services.report_sign_and_send(request=request, by=expert, revision=report.revision)
    request.refresh_from_db()
    return request


def _today() -> dict:
    today = timezone.localdate().isoformat()
    return {"start": today, "end": today}


def _get(user, **params):
    client = client_for(user)  # signing in is audited too: done before the caller counts
    return lambda: client.get(reverse(URL), params, **ENGLISH)


def _rows(response) -> list[list[str]]:
    text = response.content.decode("utf-8")
    assert text.startswith("\ufeff")  # Excel reads the accents as UTF-8
    return list(csv.reader(io.StringIO(text[1:]), delimiter=";"))


def _last_event_pk() -> int:
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


# --- The CSV -------------------------------------------------------------------------------------


def test_the_csv_has_the_te2_and_the_rqd_of_an_answered_request(world):
    request = answered_for_the_oncologist(world)
    officer = billing_office(world)
    export = _get(officer, establishment=world.tours.pk, format="csv", **_today())
    last = _last_event_pk()
    response = export()
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "no-store" in response["Cache-Control"]
    assert f"actes-teleexpertise-{world.tours.finess}-" in response["Content-Disposition"]
    header, *rows = _rows(response)
    assert header == [
        "Act date",
        "Code",
        "Amount (€)",
        "Professional",
        "Professional RPPS",
        "Counterpart",
        "Counterpart RPPS",
        "Patient",
        "INS",
        "INS OID",
        "Request",
        "Over the annual limit",
    ]
    today = timezone.localdate().isoformat()
    expert, asker, patient = world.teleradiologist, world.oncologist, world.patient
    assert rows == [
        [
            today,
            "TE2",
            "20,00",
            "Dr Sophie Garnier",
            expert.rpps,
            "Dr Claire Martin",
            asker.rpps,
            patient.display_name,
            patient.ins_matricule,
            patient.ins_oid,
            str(request.pk),
            "no",
        ],
        [
            today,
            "RQD",
            "10,00",
            "Dr Claire Martin",
            asker.rpps,
            "Dr Sophie Garnier",
            expert.rpps,
            patient.display_name,
            patient.ins_matricule,
            patient.ins_oid,
            str(request.pk),
            "no",
        ],
    ]
    assert expert.rpps and asker.rpps

    [event] = AuditEvent.objects.filter(pk__gt=last)
    assert (event.event_id, event.action, event.outcome) == (
        AuditEventId.EXPORT,
        "R",
        AuditOutcome.SUCCESS,
    )
    assert event.purpose == AuditPurpose.ADMINISTRATION
    assert event.patient is None and event.actor == officer
    assert event.detail == {
        "establishment": world.tours.finess,
        "from": today,
        "to": today,
        "count": 2,
        "format": "csv",
    }


def test_the_ins_of_an_unqualified_identity_is_not_exported(world):
    answered_for_the_oncologist(world)
    type(world.patient).objects.filter(pk=world.patient.pk).update(identity_status="recuperee")
    rows = _rows(_get(billing_office(world), format="csv", **_today())())
    assert [(row[8], row[9]) for row in rows[1:]] == [("", ""), ("", "")]


def test_the_establishment_sees_only_its_own_acts(world):
    """The GP's RQD is the MSP de Vierzon's; the acts of another day are not in the period."""
    ours = answered_for_the_oncologist(world)
    gps = answered_request(world)
    Act.objects.filter(request=ours).update(act_date=timezone.localdate() - dt.timedelta(days=40))
    rows = _rows(_get(billing_office(world), format="csv", **_today())())
    assert [(row[1], row[10]) for row in rows[1:]] == [("TE2", str(gps.pk))]


def test_the_csv_cannot_carry_a_formula(world):
    answered_for_the_oncologist(world)
    Act.objects.filter(code="TE2").update(professional_name='=HYPERLINK("http://evil.test","x")')
    rows = _rows(_get(billing_office(world), format="csv", **_today())())
    assert rows[1][3] == '\'=HYPERLINK("http://evil.test","x")'


# --- The page ------------------------------------------------------------------------------------


def test_the_page_lists_the_acts_and_is_audited_once(world):
    request = answered_for_the_oncologist(world)
    officer = billing_office(world)
    read = _get(officer, establishment=world.tours.pk, **_today())
    last = _last_event_pk()
    response = read()
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    assert [act.code for act in response.context["page"]] == ["TE2", "RQD"]
    for shown in (
        "20.00 €",
        "10.00 €",
        world.teleradiologist.rpps,
        world.oncologist.rpps,
        world.patient.display_name,
        world.patient.ins_matricule,
        "2 acts, 30.00 € billable",
        f"<td>{request.pk}</td>",
    ):
        assert shown in html, shown
    assert "format=csv" in html

    [event] = AuditEvent.objects.filter(pk__gt=last)
    assert (event.event_id, event.action, event.purpose) == (
        AuditEventId.EXPORT,
        "R",
        AuditPurpose.ADMINISTRATION,
    )
    assert event.patient is None
    assert (event.detail["count"], event.detail["format"]) == (2, "page")


def test_the_page_opens_on_the_previous_month_of_the_primary_establishment(world):
    officer = billing_office(world)
    response = _get(officer)()
    assert response.status_code == 200
    assert response.context["establishment"] == world.tours
    assert response.context["period"] == billing.previous_month()
    assert "No act recorded" in response.content.decode()
    assert AuditEvent.objects.filter(actor=officer, event_id=AuditEventId.EXPORT).count() == 1


def test_the_previous_month():
    assert billing.previous_month(dt.date(2025, 3, 15)) == billing.Period(
        dt.date(2025, 2, 1), dt.date(2025, 2, 28)
    )
    assert billing.previous_month(dt.date(2025, 1, 1)) == billing.Period(
        dt.date(2024, 12, 1), dt.date(2024, 12, 31)
    )


def test_the_pages_keep_the_filters(world, monkeypatch):
    monkeypatch.setattr(views, "ACTS_PAGE_SIZE", 1)
    answered_for_the_oncologist(world)
    response = _get(billing_office(world), establishment=world.tours.pk, page=2, **_today())()
    assert [act.code for act in response.context["page"]] == ["RQD"]
    html = response.content.decode()
    assert f"establishment={world.tours.pk}&amp;start=" in html and "page=1" in html


def test_the_fifth_act_of_the_year_with_the_same_expert_is_flagged(world):
    requests = [answered_request(world) for _ in range(5)]
    response = _get(billing_office(world), establishment=world.tours.pk, **_today())()
    flags = {act.request_id: act.over_annual_limit for act in response.context["page"]}
    assert flags == {r.pk: r == requests[-1] for r in requests}
    totals = response.context["totals"]
    assert (totals["count"], totals["over_limit"], totals["billable_cents"]) == (5, 1, 8000)
    html = response.content.decode()
    assert html.count("Over the limit") == 1
    assert "1 over the annual limit (not billable)" in html

    rows = _rows(_get(billing_office(world), format="csv", **_today())())
    assert [row[11] for row in rows[1:]] == ["no", "no", "no", "no", "yes"]
    assert rows[-1][10] == str(requests[-1].pk)


def test_the_page_takes_the_same_queries_for_2_or_10_acts(world):
    officer = billing_office(world)
    client = client_for(officer)

    def read():
        counts = []
        for params in ({}, {"format": "csv"}):
            with CaptureQueriesContext(connection) as captured:
                response = client.get(reverse(URL), {**params, **_today()}, **ENGLISH)
            assert response.status_code == 200
            counts.append(len(captured))
        return counts

    answered_for_the_oncologist(world)
    two = read()
    for _ in range(4):
        answered_for_the_oncologist(world)
    assert Act.objects.filter(establishment=world.tours).count() == 10
    assert read() == two


# --- Who may export ------------------------------------------------------------------------------


def test_an_establishment_outside_the_affiliations_is_refused(world):
    expertise_world(world)
    answered_request(world)  # the GP's RQD, at the MSP de Vierzon
    officer = billing_office(world)
    exports = AuditEvent.objects.filter(event_id=AuditEventId.EXPORT)
    before = exports.count()
    for establishment in (world.practice, world.bourges):
        for params in ({}, {"format": "csv"}):
            response = _get(officer, establishment=establishment.pk, **params, **_today())()
            assert response.status_code == 400
            html = response.content.decode()
            assert "Select a valid choice" in html
            assert response.context["page"] is None
            assert world.patient.display_name not in html
            assert not response.get("Content-Disposition")
    assert exports.count() == before
    # The form offers only the officer's establishment.
    choices = list(_get(officer)().context["form"].fields["establishment"].queryset)
    assert choices == [world.tours]


def test_without_the_permission_it_is_403(world):
    answered_for_the_oncologist(world)
    url = reverse(URL)
    # The expert and the requester of the acts, affiliated with Tours, are no billing office.
    for user in (world.teleradiologist.user, world.oncologist.user, world.coordinator.user):
        refusals = AuditEvent.objects.filter(
            event_id=AuditEventId.SECURITY_ALERT, outcome=AuditOutcome.MINOR_FAILURE, actor=user
        )
        for params in ({}, {"establishment": world.tours.pk, "format": "csv"}):
            response = client_for(user).get(url, params)
            assert response.status_code == 403
            assert world.patient.display_name not in response.content.decode()
        assert refusals.count() == 2
    assert client_for(None).get(url)["Location"].startswith(reverse("account_login"))


def test_the_permission_without_an_affiliation_shows_nothing(world):
    expertise_world(world)
    user = world.auditor_user
    user.user_permissions.add(
        Permission.objects.get(codename="export_acts", content_type__app_label="expertise")
    )
    response = _get(user)()
    assert response.status_code == 200
    assert "not affiliated with any establishment" in response.content.decode()
    assert not AuditEvent.objects.filter(actor=user, event_id=AuditEventId.EXPORT).exists()

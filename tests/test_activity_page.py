"""The regional programme's imaging indicators page (issue 17, imaging.activity_views): who
sees what, the filters, a CSV per table, constant queries whatever the period, the charts'
data.

The page reads the nightly summary rows only (tests/test_activity_indicators.py checks how
they are computed); here they are written by hand, first quarter of 2026:

* Tours (the CHRU): January 3 CT studies (2 from the gateway, 1 uploaded) of 10 images and
  1.5 GB, 2 opened by Bourges; February 1 MR study (STOW-RS), 1 possibly redundant repeat.
* Bourges: January 2 CT studies (upload), 1 prior consulted; 1 turnaround of 2 hours; March
  1 CR study (upload).
* A study of no establishment in March (1 CR, gateway): the region's only.
"""

import datetime as dt

import pytest
from django.db import connection
from django.urls import reverse

from imaging.models import ActivityMonth
from portal.models import AuditEvent, AuditEventId, AuditOutcome
from tests import builders
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

JAN, FEB, MAR = dt.date(2026, 1, 1), dt.date(2026, 2, 1), dt.date(2026, 3, 1)
URL = reverse("imaging-activity")
QUARTER = {"start": "2026-01-01", "end": "2026-03-31"}


def _rows(world):
    rows = [
        (world.tours, JAN, "CT", "studies", 3),
        (world.tours, JAN, "CT", "studies_access_point", 2),
        (world.tours, JAN, "CT", "studies_upload", 1),
        (world.tours, JAN, "CT", "instances", 10),
        (world.tours, JAN, "CT", "bytes", 1_500_000_000),
        (world.tours, JAN, "CT", "opened_by_others", 2),
        (world.tours, FEB, "MR", "studies", 1),
        (world.tours, FEB, "MR", "studies_stow", 1),
        (world.tours, FEB, "MR", "repeat_possibly_redundant", 1),
        (world.bourges, JAN, "CT", "studies", 2),
        (world.bourges, JAN, "CT", "studies_upload", 2),
        (world.bourges, JAN, "CT", "repeat_prior_consulted", 1),
        (world.bourges, JAN, "CT", "opened_from_others", 2),
        (world.bourges, JAN, "CT", "turnaround_count", 1),
        (world.bourges, JAN, "CT", "turnaround_seconds", 7200),
        (world.bourges, JAN, "CT", "turnaround_within_day", 1),
        (world.bourges, MAR, "CR", "studies", 1),
        (world.bourges, MAR, "CR", "studies_upload", 1),
        (None, MAR, "CR", "studies", 1),
        (None, MAR, "CR", "studies_access_point", 1),
    ]
    ActivityMonth.objects.bulk_create(
        ActivityMonth(establishment=e, month=m, modality=mod, figure=f, value=v)
        for e, m, mod, f, v in rows
    )


@pytest.fixture
def rows(world):
    _rows(world)


@pytest.fixture
def programme(world, rows):
    """The regional programme (the demo's m.dumas): every establishment."""
    return builders.user(
        email="programme@mirc.test",
        first_name="Mathilde",
        last_name="Dumas",
        permissions=["imaging.view_activitymonth"],
    )


@pytest.fixture
def director(world, rows):
    """The director of the CH de Bourges: his establishment, and the region's totals."""
    return builders.professional(
        email="direction.bourges@mirc.test",
        first_name="Henri",
        last_name="Blanc",
        profession="directeur",
        establishment=world.bourges,
        with_rpps=False,
        title="M.",
        permissions=["imaging.view_establishment_activity"],
    ).user


def _csv(response) -> list[list[str]]:
    text = response.content.decode("utf-8")
    assert text.startswith("\ufeff")
    return [line.split(";") for line in text[1:].strip().split("\r\n")]


def test_the_programme_sees_every_establishment_and_the_region(world, programme):
    response = client_for(programme).get(URL, {**QUARTER, "group": "quarter"})
    assert response.status_code == 200
    rows = _csv(
        client_for(programme).get(
            URL, {**QUARTER, "group": "quarter", "format": "csv", "table": "archived"}
        )
    )
    assert rows == [
        [
            "Période",
            "Établissement",
            "Examens",
            "Images",
            "Volume (Go)",
            "Passerelle DICOM",
            "Dépôt",
            "STOW-RS",
            "Migration",
            "Trouvé dans l'archive",
            "Origine non enregistrée",
        ],
        ["T1 2026", "CH de Bourges", "3", "0", "0,0", "0", "3", "0", "0", "0", "0"],
        ["T1 2026", "CHRU de Tours", "4", "10", "1,5", "2", "1", "1", "0", "0", "0"],
        ["T1 2026", "MSP de Vierzon", "0", "0", "0,0", "0", "0", "0", "0", "0", "0"],
        ["T1 2026", "Région", "8", "10", "1,5", "3", "4", "1", "0", "0", "0"],
    ]


def test_a_director_sees_his_establishment_and_the_region_only(world, director):
    response = client_for(director).get(URL, {**QUARTER, "group": "quarter"})
    assert response.status_code == 200
    content = response.content.decode()
    assert "CH de Bourges" in content
    assert "CHRU de Tours" not in content
    rows = _csv(
        client_for(director).get(
            URL, {**QUARTER, "group": "quarter", "format": "csv", "table": "turnaround"}
        )
    )
    assert rows[1:] == [
        # The tele-expertise's answers joined the turnaround (issue 17): none here.
        ["T1 2026", "CH de Bourges", "1", "2,0", "1", "0", "0", ""],
        ["T1 2026", "Région", "1", "2,0", "1", "0", "0", ""],
    ]
    # Another establishment asked for by its id: not one of his, the form refuses it.
    refused = client_for(director).get(URL, {**QUARTER, "establishment": world.tours.pk})
    assert refused.status_code == 400
    assert "CHRU de Tours" not in refused.content.decode().split("activity-filters")[-1]


def test_others_are_refused_and_the_refusal_audited(world, programme):
    for user in (world.oncologist.user, world.admin_user):
        assert client_for(user).get(URL).status_code == 403
        assert AuditEvent.objects.filter(
            actor=user, event_id=AuditEventId.SECURITY_ALERT, outcome=AuditOutcome.MINOR_FAILURE
        ).exists()
    # A director's permission without any affiliation shows nothing: refused too.
    lone = builders.user(
        email="lone@mirc.test", permissions=["imaging.view_establishment_activity"]
    )
    assert client_for(lone).get(URL).status_code == 403
    assert client_for(None).get(URL).status_code == 302


def test_the_filters_by_month_modality_and_establishment(world, programme):
    rows = _csv(
        client_for(programme).get(
            URL,
            {
                **QUARTER,
                "group": "month",
                "modality": "CT",
                "establishment": world.bourges.pk,
                "format": "csv",
                "table": "repeats",
            },
        )
    )
    # The tele-expertise's "avoided" is three columns since issue 17: an exam, a transfer,
    # and the answer of before the split.
    assert rows[1:] == [
        ["janvier 2026", "CH de Bourges", "0", "1", "0", "0", "0", "0"],
        # Tours' possibly redundant repeat was an MR: not among the CTs.
        ["janvier 2026", "Région", "0", "1", "0", "0", "0", "0"],
        ["février 2026", "CH de Bourges", "0", "0", "0", "0", "0", "0"],
        ["février 2026", "Région", "0", "0", "0", "0", "0", "0"],
        ["mars 2026", "CH de Bourges", "0", "0", "0", "0", "0", "0"],
        ["mars 2026", "Région", "0", "0", "0", "0", "0", "0"],
    ]


def test_the_page_and_its_csv_are_audited(world, programme):
    client = client_for(programme)
    client.get(URL, QUARTER)
    client.get(URL, {**QUARTER, "format": "csv", "table": "sharing"})
    events = list(AuditEvent.objects.filter(object_type="portal.establishment").order_by("pk"))
    assert [event.event_id for event in events] == [AuditEventId.QUERY, AuditEventId.EXPORT]
    assert events[1].query == "Imaging activity indicators 2026-01-01..2026-03-31"


def test_bad_filters_give_a_message_not_an_error(world, programme):
    response = client_for(programme).get(URL, {"start": "2026-04-01", "end": "2026-01-01"})
    assert response.status_code == 400
    assert client_for(programme).get(URL, {**QUARTER, "group": "decade"}).status_code == 400
    assert (
        client_for(programme).get(URL, {**QUARTER, "format": "csv", "table": "nope"}).status_code
        == 404
    )


def test_each_figure_is_explained_and_charted_with_its_table(world, programme):
    response = client_for(programme).get(URL, {**QUARTER, "group": "month"})
    content = response.content.decode()
    for key in ("archived", "modalities", "sharing", "repeats", "meetings", "turnaround", "city"):
        assert f'data-chart="chart-{key}"' in content
        assert f'<script id="chart-{key}" type="application/json">' in content
        assert f'data-testid="activity-table-{key}"' in content
    chart = response.context["tables"][0]["chart"]
    # The establishments shown, summed: the study of no establishment is only the region's.
    assert chart["labels"] == ["janvier 2026", "février 2026", "mars 2026"]
    assert chart["datasets"] == [{"label": "Examens", "data": [5, 1, 1]}]
    assert "Examens archivés ce mois-là" in content or "Studies archived that month" in content
    assert 'src="/static/build/charts.js"' in content


def test_constant_queries_whatever_the_period(world, programme, django_assert_max_num_queries):
    client = client_for(programme)
    client.get(URL, QUARTER)  # the session, the permissions' cache
    # On PostgreSQL the audit event's append takes the chain's advisory lock: one more.
    most = 14 + (connection.vendor == "postgresql")
    with django_assert_max_num_queries(most) as month:
        client.get(URL, {"start": "2026-01-01", "end": "2026-01-31", "group": "month"})
    with django_assert_max_num_queries(most) as year:
        client.get(URL, {"start": "2025-01-01", "end": "2026-12-31", "group": "month"})
    assert len(year.captured_queries) == len(month.captured_queries)


def test_the_home_links_the_readers_to_the_page(world, programme, director):
    for user in (programme, director):
        assert 'data-testid="activity-link"' in client_for(user).get("/").content.decode()
    assert (
        'data-testid="activity-link"'
        not in client_for(world.oncologist.user).get("/").content.decode()
    )


def test_studies_by_modality_for_the_director_and_the_region(world, director):
    rows = _csv(client_for(director).get(URL, {**QUARTER, "format": "csv", "table": "modalities"}))
    assert rows == [
        [
            "Modalité",
            "Examens",
            "Images",
            "Volume (Go)",
            "Examens, région",
            "Images, région",
            "Volume (Go), région",
        ],
        ["CR", "1", "0", "0,0", "2", "0", "0,0"],
        ["CT", "2", "0", "0,0", "5", "10", "1,5"],
        ["MR", "0", "0", "0,0", "1", "0", "0,0"],
    ]
    page = client_for(director).get(URL, QUARTER)
    assert page.context["modalities_chart"]["datasets"] == [{"label": "Examens", "data": [1, 2, 0]}]


def test_what_the_filters_leave_out_is_the_default_period_shown_in_the_form(world, programme):
    from portal.indicators import PeriodForm

    default = PeriodForm.default_period()
    response = client_for(programme).get(URL, {"group": "quarter"})
    assert response.status_code == 200
    assert f'value="{default.start.isoformat()}"' in response.content.decode()
    assert response.context["tables"][0]["rows"][-1]["label"].startswith("T")


def test_city_doctors_and_tele_expertise_answers_in_their_tables(world, programme):
    """Issue 17's city-doctor figures (their own table) and the tele-expertise's time to
    answer (in the turnaround table), each with its CSV."""
    rows = [
        (world.tours, FEB, "CT", "city_consultations", 2),
        (world.tours, FEB, "", "shares_made", 1),
        (world.tours, FEB, "", "share_openings", 3),
        (world.tours, FEB, "", "packages_made", 1),
        (world.bourges, FEB, "MR", "city_consultations", 1),
        (world.bourges, FEB, "", "expertise_answered", 2),
        (world.bourges, FEB, "", "expertise_answer_seconds", 40 * 3600),
        (world.bourges, FEB, "", "expertise_exam_avoided", 1),
        (world.bourges, FEB, "", "expertise_transfer_avoided", 1),
    ]
    ActivityMonth.objects.bulk_create(
        ActivityMonth(establishment=e, month=m, modality=mod, figure=f, value=v)
        for e, m, mod, f, v in rows
    )
    client = client_for(programme)
    page = client.get(URL, {**QUARTER, "group": "quarter"}).content.decode()
    assert 'data-testid="activity-table-city"' in page
    assert "Médecins de ville" in page
    assert "Examens ouverts par des médecins généralistes" in page

    def csv_lines(table):
        found = _csv(
            client.get(URL, {**QUARTER, "group": "quarter", "format": "csv", "table": table})
        )
        return found[0], {line[1]: line[2:] for line in found[1:]}

    header, city = csv_lines("city")
    assert header[2:] == [
        "Examens ouverts par des médecins généralistes",
        "Partages faits",
        "Ouvertures des partages",
        "Paquets DICOMDIR produits",
    ]
    assert city == {
        "CH de Bourges": ["1", "0", "0", "0"],
        "CHRU de Tours": ["2", "1", "3", "1"],
        "MSP de Vierzon": ["0", "0", "0", "0"],
        "Région": ["3", "1", "3", "1"],
    }
    _header, turnaround = csv_lines("turnaround")
    # Two requests answered in 40 hours in all: 20 hours each on average.
    assert turnaround["CH de Bourges"][-2:] == ["2", "20,0"]
    _header, repeats = csv_lines("repeats")
    assert repeats["CH de Bourges"][-3:] == ["1", "1", "0"]

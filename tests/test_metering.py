"""Usage metering (issue 17): each establishment's monthly statement, issued once its month is
closed, never changed, on a small hand-built world whose every amount is known.

The world, in Europe/Paris, 2026 (a month closes 15 days after its end), prices archive 0,80 €
an exam, sharing 0,20 € an exam consulted by another establishment, storage 0,05 € a GB:

* January: the CHRU (E) archives a CT (S1, 1.5 GB) and an MR (S2, 0.25 GB); the CH de Blois
  (F) an X-ray (S3, 1 GB). Blois opens S1 twice (counted once), the CHRU its own S1 (not
  sharing) and S3 (Blois's sharing).
  E: 0,80 + 0,80 + 0,20 + 1.750 GB × 0,05 = 0,0875 → 0,09: 1,89 €. F: 0,80 + 0,20 + 0,05 = 1,05 €.
* February: the CHRU archives a CT (S4, 0.5 GB). After January's statements, a CT the CHRU made
  on 28 January (S5, 0.1 GB) is indexed late under its archiving date, and the archive's price
  rises to 1,00 €. E's February: 1,00 + 2.350 GB × 0,05 = 0,1175 → 0,12, and the corrections
  of January, + 1 CT at 1,00 and + 0.100 GB (0,005 → 0,01): 2,13 €. F: storage only, 0,05 €.
"""

import datetime as dt
import io
import re
import unicodedata
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from pypdf import PdfReader

from imaging.activity import activity_compute
from imaging.metering import statements_issue
from imaging.models import (
    Instance,
    Series,
    Statement,
    StatementDocument,
    StatementLine,
    Study,
    StudyIdentity,
    StudyOrigin,
)
from portal import audit, documents
from portal.audit import Actor
from portal.models import AuditEvent, AuditEventId, AuditOutcome
from tests import builders
from tests.conftest import client_for
from tests.permission_matrix import _with_role

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_metering_settings")]

PARIS = ZoneInfo("Europe/Paris")
JAN, FEB = dt.date(2026, 1, 1), dt.date(2026, 2, 1)
GB = 10**9
PRICES = {"archive": Decimal("0.80"), "sharing": Decimal("0.20"), "storage": Decimal("0.05")}


def at(month, day, hour=12) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, tzinfo=PARIS)


@pytest.fixture
def _metering_settings(settings):
    settings.ACTIVITY_MONTH_CLOSES_AFTER_DAYS = 15
    settings.ACTIVITY_REPEAT_WINDOWS = {"CT": 30, "MR": 30, "CR": 7}
    settings.METERING_PRICES = dict(PRICES)


def make_study(key, establishment, modality, created_at, sizes):
    study = Study.objects.create(
        study_instance_uid=f"1.2.826.0.1.3680043.10.1017.9{key}",
        establishment=establishment,
        identity=StudyIdentity.MATCHED,
        modalities=modality,
        body_part="CHEST",
        origin=StudyOrigin.UPLOAD,
        instance_count=len(sizes),
        created_at=created_at,
    )
    series = Series.objects.create(
        study=study, series_instance_uid=f"{study.study_instance_uid}.1", modality=modality
    )
    Instance.objects.bulk_create(
        Instance(
            series=series,
            sop_instance_uid=f"{series.series_instance_uid}.{n}",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            sha256=f"{n:064d}",
            size=size,
            transfer_syntax_uid="1.2.840.10008.1.2.1",
        )
        for n, size in enumerate(sizes)
    )
    return study


def opens(who, study, moment):
    with time_machine.travel(moment, tick=False):
        audit.record(
            actor=Actor(user=who.user),
            event=audit.AuditEventId.INSTANCES_ACCESSED,
            action=audit.AuditAction.READ,
            object_type="imaging.study",
            object_id=str(study.pk),
            purpose=audit.AuditPurpose.CARE,
        )


@pytest.fixture
def region():
    chu = builders.establishment(
        name="CHRU de Tours",
        finess="370000481",
        city="Tours",
        contact_name="Bureau des entrées",
        contact_phone="02 47 47 47 47",
        contact_email="facturation@chu-tours.test",
    )
    blois = builders.establishment(name="CH de Blois", finess="410000087", city="Blois")
    radiologist = builders.professional(
        email="radio@chu.test", first_name="Anne", last_name="Roux", establishment=chu
    )
    blois_doctor = builders.professional(
        email="radio@blois.test", first_name="Paul", last_name="Morel", establishment=blois
    )
    s1 = make_study(1, chu, "CT", at(1, 5), [600_000_000, 900_000_000])
    make_study(2, chu, "MR", at(1, 10), [250_000_000])
    s3 = make_study(3, blois, "CR", at(1, 12), [GB])
    opens(blois_doctor, s1, at(1, 19))
    opens(blois_doctor, s1, at(1, 25))  # again that month: once
    opens(radiologist, s1, at(1, 20))  # its own: not sharing
    opens(radiologist, s3, at(1, 20))
    make_study(4, chu, "CT", at(2, 3), [500_000_000])
    return {"chu": chu, "blois": blois}


def lines_of(statement):
    return [
        (
            line.kind,
            line.corrects_month,
            line.service,
            line.modality,
            line.quantity,
            line.unit_price,
            line.amount,
        )
        for line in statement.lines.all()
    ]


def issue_january():
    activity_compute(now=at(2, 20, 2))
    return statements_issue(now=at(2, 20, 3))


def issue_february_after_a_late_study(region, settings):
    issue_january()
    # Indexed in March under its archiving date in January (a closed month).
    make_study(5, region["chu"], "CT", at(1, 28), [100_000_000])
    settings.METERING_PRICES = {**PRICES, "archive": Decimal("1.00")}
    activity_compute(now=at(3, 20, 2))
    return statements_issue(now=at(3, 20, 3))


# --- Issuing ------------------------------------------------------------------------------------


def test_a_month_is_issued_only_once_closed(region):
    activity_compute(now=at(2, 10, 2))  # January closes on 16 February
    report = statements_issue(now=at(2, 10, 3))
    assert report.months == []
    assert not Statement.objects.exists()

    report = issue_january()
    assert report.months == [JAN]
    assert report.statements == 2
    assert report.corrections == 0


def test_january_statements_are_exact_and_keep_their_prices(region):
    issue_january()
    chu = Statement.objects.get(establishment=region["chu"], month=JAN)
    assert (chu.exams_archived, chu.exams_consulted) == (2, 1)
    assert chu.storage_gb == Decimal("1.750")
    assert chu.total == Decimal("1.89")
    assert chu.issued_at == at(2, 20, 3)
    assert lines_of(chu) == [
        ("normal", None, "archive", "CT", 1, Decimal("0.80"), Decimal("0.80")),
        ("normal", None, "archive", "MR", 1, Decimal("0.80"), Decimal("0.80")),
        ("normal", None, "sharing", "CT", 1, Decimal("0.20"), Decimal("0.20")),
        ("normal", None, "storage", "", Decimal("1.750"), Decimal("0.05"), Decimal("0.09")),
    ]
    blois = Statement.objects.get(establishment=region["blois"], month=JAN)
    assert (blois.exams_archived, blois.exams_consulted, blois.total) == (1, 1, Decimal("1.05"))
    assert blois.storage_gb == Decimal("1.000")


def test_never_two_statements_for_one_establishment_month(region):
    issue_january()
    again = statements_issue(now=at(2, 21, 3))
    assert again.months == []
    assert Statement.objects.count() == 2
    with pytest.raises(IntegrityError), transaction.atomic():
        Statement.objects.create(
            establishment=region["chu"],
            month=JAN,
            issued_at=at(2, 22),
            exams_archived=0,
            exams_consulted=0,
            storage_gb=0,
            total=0,
        )


def test_the_database_refuses_to_change_an_issued_statement(region):
    issue_january()
    statement = Statement.objects.get(establishment=region["chu"], month=JAN)
    with pytest.raises(DatabaseError), transaction.atomic():
        Statement.objects.filter(pk=statement.pk).update(total=Decimal("0.01"))
    with pytest.raises(DatabaseError), transaction.atomic():
        StatementLine.objects.filter(statement=statement).update(unit_price=Decimal("9"))
    statement.refresh_from_db()
    assert statement.total == Decimal("1.89")
    assert set(statement.lines.values_list("unit_price", flat=True)) == {
        Decimal("0.80"),
        Decimal("0.20"),
        Decimal("0.05"),
    }


def test_a_late_study_is_a_correction_of_the_next_month_and_january_never_changes(region, settings):
    issue_january()
    january = Statement.objects.get(establishment=region["chu"], month=JAN)
    before = (lines_of(january), january.total, january.exams_archived, january.storage_gb)

    report = issue_february_after_a_late_study(region, settings)

    assert report.months == [FEB]
    assert report.corrections == 2
    january.refresh_from_db()
    assert (lines_of(january), january.total, january.exams_archived, january.storage_gb) == (
        before
    )
    february = Statement.objects.get(establishment=region["chu"], month=FEB)
    assert lines_of(february) == [
        ("normal", None, "archive", "CT", 1, Decimal("1.00"), Decimal("1.00")),
        ("normal", None, "storage", "", Decimal("2.350"), Decimal("0.05"), Decimal("0.12")),
        ("correction", JAN, "archive", "CT", 1, Decimal("1.00"), Decimal("1.00")),
        ("correction", JAN, "storage", "", Decimal("0.100"), Decimal("0.05"), Decimal("0.01")),
    ]
    assert (february.exams_archived, february.exams_consulted) == (1, 0)
    assert february.total == Decimal("2.13")
    blois = Statement.objects.get(establishment=region["blois"], month=FEB)
    assert lines_of(blois) == [
        ("normal", None, "storage", "", Decimal("1.000"), Decimal("0.05"), Decimal("0.05")),
    ]
    # Corrected once: March's statement has nothing more to say of January.
    activity_compute(now=at(4, 20, 2))
    statements_issue(now=at(4, 20, 3))
    assert not StatementLine.objects.filter(
        statement__month=dt.date(2026, 3, 1), kind="correction"
    ).exists()


def test_the_nightly_task_and_the_command_issue_after_the_indicators_job(region, settings):
    from django.core.management import call_command

    from imaging import tasks

    schedule = settings.CELERY_BEAT_SCHEDULE["imaging-issue-statements"]
    activity = settings.CELERY_BEAT_SCHEDULE["imaging-compute-activity"]
    assert schedule["task"] == "imaging.issue_statements"
    assert (schedule["schedule"].hour, activity["schedule"].hour) == ({3}, {2})
    activity_compute(now=at(2, 20, 2))
    with time_machine.travel(at(2, 20, 3), tick=False):
        tasks.issue_statements()
    assert Statement.objects.filter(month=JAN).count() == 2
    out = io.StringIO()
    call_command("statements_issue", stdout=out)
    assert Statement.objects.count() == 2
    assert out.getvalue().strip() in (
        "No closed month left to issue.",
        "Aucun mois clos à émettre.",
    )


def test_a_study_moved_to_another_establishment_is_corrected_on_both(region):
    issue_january()
    # The MR of January was Blois's, not the CHRU's (its images named the wrong one).
    Study.objects.filter(modalities="MR").update(establishment=region["blois"])
    activity_compute(now=at(3, 20, 2))
    report = statements_issue(now=at(3, 20, 3))
    assert report.months == [FEB]

    def corrections(establishment):
        return [
            (line.service, line.modality, line.quantity, line.amount)
            for line in StatementLine.objects.filter(
                statement__establishment=establishment, statement__month=FEB, kind="correction"
            )
        ]

    assert corrections(region["chu"]) == [
        ("archive", "MR", -1, Decimal("-0.80")),
        ("storage", "", Decimal("-0.250"), Decimal("-0.01")),
    ]
    assert corrections(region["blois"]) == [
        ("archive", "MR", 1, Decimal("0.80")),
        ("storage", "", Decimal("0.250"), Decimal("0.01")),
    ]


def test_the_prices_are_checked_at_start_up(monkeypatch):
    import importlib

    import portal.settings

    for bad in ("archive=0.80", "archive=abc,sharing=1,storage=1", "pacs=1,archive=1"):
        monkeypatch.setenv("METERING_PRICES", bad)
        with pytest.raises(ImproperlyConfigured, match="METERING_PRICES"):
            importlib.reload(portal.settings)
    monkeypatch.setenv("METERING_PRICES", "archive=1.5,sharing=0,storage=0.0125")
    importlib.reload(portal.settings)
    prices = portal.settings.METERING_PRICES
    assert prices == {
        "archive": Decimal("1.5"),
        "sharing": Decimal("0"),
        "storage": Decimal("0.0125"),
    }
    monkeypatch.delenv("METERING_PRICES")
    importlib.reload(portal.settings)


# --- Who reads them -----------------------------------------------------------------------------


def _person(email, establishment, role):
    user = builders.professional(
        email=email,
        first_name="Test",
        last_name=email.split("@")[0],
        profession="autre",
        establishment=establishment,
        with_rpps=False,
    ).user
    return _with_role(user, role) if role else user


@pytest.fixture
def readers(region):
    issue_january()
    return {
        "programme": _person("programme@mirc.test", None, "programme"),
        "billing": _person("facturation@chu.test", region["chu"], "billing"),
        "admin": _person("admin@chu.test", region["chu"], "establishment_admin"),
        "blois_admin": _person("admin@blois.test", region["blois"], "establishment_admin"),
        "doctor": _person("docteur@chu.test", region["chu"], None),
    }


def test_who_reads_the_chru_statement(region, readers):
    statement = Statement.objects.get(establishment=region["chu"], month=JAN)
    url = reverse("imaging-statement", args=[statement.pk])
    for who in ("programme", "billing", "admin"):
        response = client_for(readers[who]).get(url)
        assert response.status_code == 200, who
        assert "1,89" in response.content.decode()
    refusals = AuditEvent.objects.filter(
        event_id=AuditEventId.SECURITY_ALERT, outcome=AuditOutcome.MINOR_FAILURE
    )
    for who in ("blois_admin", "doctor"):
        before = refusals.count()
        assert client_for(readers[who]).get(url).status_code == 404, who
        assert client_for(readers[who]).get(url + "csv/").status_code == 404, who
        assert refusals.count() == before + 2


def test_the_list_shows_each_reader_their_establishments(region, readers):
    def listed(who, query=""):
        response = client_for(readers[who]).get(reverse("imaging-statements") + query)
        assert response.status_code == 200
        return [(s.establishment.name, s.month) for s in response.context["statements"]]

    both = [("CH de Blois", JAN), ("CHRU de Tours", JAN)]
    assert listed("programme") == both
    assert listed("programme", f"?establishment={region['blois'].pk}&year=2026") == both[:1]
    assert listed("programme", "?year=2025") == []
    assert listed("billing") == [("CHRU de Tours", JAN)]
    assert listed("admin") == [("CHRU de Tours", JAN)]
    assert listed("blois_admin") == [("CH de Blois", JAN)]
    # Another establishment's id in the filter is a choice the form does not offer.
    response = client_for(readers["blois_admin"]).get(
        reverse("imaging-statements") + f"?establishment={region['chu'].pk}"
    )
    assert response.status_code == 400
    assert client_for(readers["doctor"]).get(reverse("imaging-statements")).status_code == 403
    # Bad input is a message, never a 500.
    for query in ("?year=abc", "?year=1900", "?establishment=xyz"):
        response = client_for(readers["programme"]).get(reverse("imaging-statements") + query)
        assert response.status_code == 400, query
        assert response.context["form"].errors, query


def test_the_home_page_leads_the_readers_to_their_statements(readers):
    for who, shown in (("programme", True), ("admin", True), ("billing", True), ("doctor", False)):
        response = client_for(readers[who]).get(reverse("home"))
        assert response.status_code == 200
        assert ('data-testid="statements-panel"' in response.content.decode()) is shown, who


def test_pages_read_in_constant_queries(region, readers, settings):
    client = client_for(readers["programme"])

    def queries(url):
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url)
        assert response.status_code == 200
        return len(captured), response

    january = Statement.objects.get(establishment=region["chu"], month=JAN)
    list_before, response = queries(reverse("imaging-statements"))
    assert len(response.context["statements"]) == 2
    page_before, response = queries(reverse("imaging-statement", args=[january.pk]))
    assert len(response.context["corrections"]) == 0

    issue_february_after_a_late_study(region, settings)
    february = Statement.objects.get(establishment=region["chu"], month=FEB)
    list_after, response = queries(reverse("imaging-statements"))
    assert len(response.context["statements"]) == 4
    page_after, response = queries(reverse("imaging-statement", args=[february.pk]))
    assert len(response.context["corrections"]) == 2
    assert (list_after, page_after) == (list_before, page_before)


# --- Outputs ------------------------------------------------------------------------------------


def test_the_csv_is_the_statement_line_by_line(region, readers, settings):
    issue_february_after_a_late_study(region, settings)
    february = Statement.objects.get(establishment=region["chu"], month=FEB)
    client = client_for(readers["billing"])
    exports = AuditEvent.objects.filter(event_id=AuditEventId.EXPORT, actor=readers["billing"])
    response = client.get(reverse("imaging-statement-csv", args=[february.pk]))
    assert response.status_code == 200
    assert response["Content-Disposition"] == (
        'attachment; filename="releve-usage-370000481-2026-02.csv"'
    )
    assert exports.count() == 1
    expected = (
        "\ufeffÉtablissement;FINESS;Mois;Ligne;Mois corrigé;Service;Modalité;Quantité;"
        "Prix unitaire (€);Montant (€)\r\n"
        "CHRU de Tours;370000481;2026-02;Mois;;Examens archivés;CT;1;1,00;1,00\r\n"
        "CHRU de Tours;370000481;2026-02;Mois;;Stockage en fin de mois (Go);;2,35;0,05;0,12\r\n"
        "CHRU de Tours;370000481;2026-02;Correction;2026-01;Examens archivés;CT;1;1,00;1,00\r\n"
        "CHRU de Tours;370000481;2026-02;Correction;2026-01;Stockage en fin de mois (Go);;"
        "0,1;0,05;0,01\r\n"
        "CHRU de Tours;370000481;2026-02;Total;;;;;;2,13\r\n"
    )
    assert response.content.decode("utf-8") == expected


def pdf_text(data: bytes) -> str:
    reader = PdfReader(io.BytesIO(data))
    text = " ".join(page.extract_text() or "" for page in reader.pages)
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text))


def test_the_pdf_has_the_establishments_header_and_totals(
    region, readers, django_capture_on_commit_callbacks
):
    statement = Statement.objects.get(establishment=region["chu"], month=JAN)
    client = client_for(readers["admin"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("imaging-statement-pdf-request", args=[statement.pk]))
    assert response.status_code == 302
    document = StatementDocument.objects.get(statement=statement)
    assert document.status == StatementDocument.Status.READY
    response = client.get(reverse("imaging-statement-pdf", args=[statement.pk, document.pk]))
    assert response.status_code == 200
    text = pdf_text(response.content)
    for expected in (
        "CHRU de Tours",
        "FINESS 370000481",
        "Bureau des entrées",
        "02 47 47 47 47",
        "facturation@chu-tours.test",
        "Relevé d'usage de l'archive régionale",
        "janvier 2026",
        "Examens archivés 2",
        "Examens consultés par d'autres établissements 1",
        "1,750 Go",
        "1,89 €",
    ):
        assert expected in text, expected
    assert documents.read(document) == response.content

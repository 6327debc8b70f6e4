"""The regional programme's imaging indicators (issue 17): the nightly computation into
summary rows (imaging.activity) and the sums read from them (imaging.selectors), on a small
hand-built world whose every figure is known.

The world, in Europe/Paris, first quarter of 2026 (windows CT/MR 30 days, CR 7 days; a month
closes 15 days after its end):

* January: the CHU archives a chest CT of Mme Martin (S1, access point, 2 images of 1,000
  and 1,500 bytes). Blois consults it on the 19th (the viewer) and the 25th (DICOMweb), then
  makes its own chest CT of her on the 20th (S2, STOW-RS): prior consulted, exam still done.
  The CHU opens S2 six hours after it was archived.
* February: Blois X-rays M. Bernard's chest (S3, upload); the CHU does it again four days
  later (S4) without opening S3: possibly redundant; and once more 18 days after S3 (S5):
  outside the X-ray window, no prior. The CHU opens S2 again; its PACS receives S3 by
  prefetch.
* March: the CHU migrates an old head MR of Mme Petit (S6, migration: never a new exam); Blois
  makes a head MR (S7) of a duplicate record of hers, merged afterwards: possibly redundant.
  The clinic joins the programme: an abdominal CT of Mme Martin (S8, upload, no prior of
  that body part), and it opens S1.
"""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.utils import timezone

from imaging.activity import activity_compute
from imaging.models import (
    ActivityMonth,
    ActivityMonthState,
    Instance,
    PrefetchItem,
    PrefetchRequest,
    Series,
    Study,
    StudyIdentity,
    StudyOrigin,
)
from imaging.selectors import activity_table
from portal import audit
from portal import services as portal_services
from portal.audit import Actor
from portal.models import AuditEvent, Patient
from portal.periods import Period
from tests import builders

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("_activity_settings"),
]

PARIS = ZoneInfo("Europe/Paris")
JAN, FEB, MAR = dt.date(2026, 1, 1), dt.date(2026, 2, 1), dt.date(2026, 3, 1)


def at(month, day, hour=12, minute=0) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=PARIS)


@pytest.fixture
def _activity_settings(settings):
    settings.ACTIVITY_MONTH_CLOSES_AFTER_DAYS = 15
    settings.ACTIVITY_REPEAT_WINDOWS = {"CT": 30, "MR": 30, "CR": 7, "DX": 7}


def make_study(key, patient, establishment, modality, body_part, created_at, origin, sizes=()):
    """A study as the ingest indexes it, archived at ``created_at``, acquired that morning."""
    study = Study.objects.create(
        study_instance_uid=f"1.2.826.0.1.3680043.10.1017.{key}",
        patient=patient,
        establishment=establishment,
        identity=StudyIdentity.MATCHED,
        modalities=modality,
        body_part=body_part,
        study_date=created_at.date(),
        study_time=dt.time(8, 0),
        origin=origin,
        instance_count=len(sizes) or 1,
        created_at=created_at,
    )
    if sizes:
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


def opens(who, study, moment, *, by_uid=False):
    """``who`` opens the study's images at ``moment``: the viewer names it by pk, DICOMweb by
    its UID (imaging/views.py, imaging/dicomweb.py)."""
    with time_machine.travel(moment, tick=False):
        audit.record(
            actor=Actor(user=who.user),
            event=audit.AuditEventId.INSTANCES_ACCESSED,
            action=audit.AuditAction.READ,
            patient=study.patient,
            object_type="imaging.study",
            object_id=study.study_instance_uid if by_uid else str(study.pk),
            purpose=audit.AuditPurpose.CARE,
        )


@pytest.fixture
def region():
    chu = builders.establishment(name="CHRU de Tours")
    blois = builders.establishment(name="CH de Blois")
    clinic = builders.establishment(name="Clinique de l'Alliance")
    people = {
        "chu": builders.professional(
            email="radio@chu.test", first_name="Anne", last_name="Roux", establishment=chu
        ),
        "blois": builders.professional(
            email="radio@blois.test", first_name="Paul", last_name="Morel", establishment=blois
        ),
        "clinic": builders.professional(
            email="radio@clinic.test", first_name="Inès", last_name="Faure", establishment=clinic
        ),
    }
    martin = builders.patient(birth_name="Martin", first_names="Jeanne")
    bernard = builders.patient(
        birth_name="Bernard", first_names="Louis", sex="M", birth_date=dt.date(1950, 1, 2)
    )
    petit = builders.patient(
        birth_name="Petit", first_names="Marie", birth_date=dt.date(1960, 5, 6)
    )
    # A second record of Mme Petit, made by a feed without her INS: merged in March.
    petit_again = Patient.objects.create(
        birth_name="PETIT",
        first_names="Marie",
        sex="F",
        birth_date=dt.date(1960, 5, 6),
        birth_place_code="37261",
    )
    s = {}
    s[1] = make_study(1, martin, chu, "CT", "CHEST", at(1, 5, 10), "access_point", (1000, 1500))
    opens(people["chu"], s[1], at(1, 6))  # its own: not sharing
    s[2] = make_study(2, martin, blois, "CT", "CHEST", at(1, 20, 12), StudyOrigin.STOW)
    opens(people["blois"], s[1], at(1, 19, 10))  # before making S2: prior consulted
    opens(people["blois"], s[1], at(1, 25), by_uid=True)  # again that month: once
    opens(people["chu"], s[2], at(1, 20, 18), by_uid=True)  # six hours after archiving
    s[3] = make_study(3, bernard, blois, "CR", "CHEST", at(2, 10, 9), StudyOrigin.UPLOAD)
    s[4] = make_study(4, bernard, chu, "CR", "CHEST", at(2, 14, 9), "access_point")
    s[5] = make_study(5, bernard, chu, "CR", "CHEST", at(2, 28, 9), "access_point")
    opens(people["chu"], s[2], at(2, 3))  # another month: counted again
    prefetch = PrefetchRequest.objects.create(
        patient=bernard,
        establishment=chu,
        trigger="A01",
        destination_ae_title="CHU_PACS",
        state=PrefetchRequest.State.SENT,
        finished_at=at(2, 14, 8),
    )
    PrefetchItem.objects.create(request=prefetch, study=s[3], sent=True)
    s[6] = make_study(6, petit, chu, "MR", "HEAD", at(3, 2, 9), StudyOrigin.MIGRATION)
    s[7] = make_study(7, petit_again, blois, "MR", "HEAD", at(3, 10, 9), StudyOrigin.UPLOAD)
    portal_services.patient_merge(source=petit_again, target=petit, by=builders.SYSTEM)
    s[8] = make_study(8, martin, clinic, "CT", "ABDOMEN", at(3, 15, 9), StudyOrigin.UPLOAD)
    opens(people["clinic"], s[1], at(3, 16))
    return {"chu": chu, "blois": blois, "clinic": clinic, "people": people, "studies": s}


def figures(establishment, month):
    """{(modality, figure): value} of one establishment's month."""
    return {
        (row.modality, row.figure): row.value
        for row in ActivityMonth.objects.filter(establishment=establishment, month=month).order_by()
    }


def test_each_figure_of_the_quarter_is_exact(region):
    report = activity_compute(now=at(4, 20))

    assert report.months == [JAN, FEB, MAR, dt.date(2026, 4, 1)]
    assert report.closed == [JAN, FEB, MAR]
    chu, blois, clinic = region["chu"], region["blois"], region["clinic"]
    assert figures(chu, JAN) == {
        ("CT", "studies"): 1,
        ("CT", "studies_access_point"): 1,
        ("CT", "instances"): 2,
        ("CT", "bytes"): 2500,
        ("CT", "opened_by_others"): 1,  # Blois, twice, once by pk and once by UID
        ("CT", "opened_from_others"): 1,  # S2
        ("CT", "repeat_no_prior"): 1,
        # Blois first opened S1 fourteen days after it was archived.
        ("CT", "turnaround_count"): 1,
        ("CT", "turnaround_seconds"): 14 * 86400,
    }
    assert figures(blois, JAN) == {
        ("CT", "studies"): 1,
        ("CT", "studies_stow"): 1,
        ("CT", "instances"): 1,
        ("CT", "opened_by_others"): 1,
        ("CT", "opened_from_others"): 1,
        ("CT", "repeat_prior_consulted"): 1,
        ("CT", "turnaround_count"): 1,
        ("CT", "turnaround_seconds"): 6 * 3600,
        ("CT", "turnaround_within_day"): 1,
        ("CT", "turnaround_within_week"): 1,
    }
    assert figures(chu, FEB) == {
        ("CR", "studies"): 2,
        ("CR", "studies_access_point"): 2,
        ("CR", "instances"): 2,
        ("CT", "opened_from_others"): 1,
        ("CR", "repeat_possibly_redundant"): 1,  # S4, four days after S3, never opened
        ("CR", "repeat_no_prior"): 1,  # S5, 18 days after: outside the X-ray window
        ("", "prefetch_requests_sent"): 1,
        ("CR", "prefetch_studies_sent"): 1,
    }
    assert figures(blois, FEB) == {
        ("CR", "studies"): 1,
        ("CR", "studies_upload"): 1,
        ("CR", "instances"): 1,
        ("CT", "opened_by_others"): 1,
        ("CR", "repeat_no_prior"): 1,
    }
    # The migrated MR is archived but is no new exam; the merged record's MR has it as prior.
    assert figures(chu, MAR) == {
        ("MR", "studies"): 1,
        ("MR", "studies_migration"): 1,
        ("MR", "instances"): 1,
        ("CT", "opened_by_others"): 1,  # the clinic opened S1
    }
    assert figures(blois, MAR) == {
        ("MR", "studies"): 1,
        ("MR", "studies_upload"): 1,
        ("MR", "instances"): 1,
        ("MR", "repeat_possibly_redundant"): 1,
    }
    # The clinic joined in March: nothing before, its own figures after.
    assert figures(clinic, JAN) == figures(clinic, FEB) == {}
    assert figures(clinic, MAR) == {
        ("CT", "studies"): 1,
        ("CT", "studies_upload"): 1,
        ("CT", "instances"): 1,
        ("CT", "opened_from_others"): 1,
        ("CT", "repeat_no_prior"): 1,
    }
    assert not ActivityMonth.objects.filter(establishment__isnull=True).exists()
    # Reading the trail for the figures is itself in the trail.
    used = AuditEvent.objects.get(event_id=audit.AuditEventId.AUDIT_LOG_USED)
    assert (used.object_type, used.query) == (
        "imaging.activitymonth",
        "activity indicators 2026-01..2026-04",
    )
    assert used.detail["closed"] == ["2026-01", "2026-02", "2026-03"]


def test_the_quarter_the_year_and_the_region_are_sums_of_months(region, django_assert_num_queries):
    activity_compute(now=at(4, 20))
    chu, blois, clinic = region["chu"], region["blois"], region["clinic"]
    quarter = Period(start=JAN, end=dt.date(2026, 3, 31))

    with django_assert_num_queries(1):
        table = activity_table(period=quarter, group="quarter", establishment_ids=[clinic.pk])

    assert set(table["lines"]) == {(clinic.pk, JAN)}  # a director sees his own line only
    assert table["lines"][(clinic.pk, JAN)]["studies"] == 1
    region_q1 = table["region"][JAN]
    assert region_q1["studies"] == 8
    assert region_q1["studies_access_point"] == 3
    assert region_q1["opened_by_others"] == 4
    assert region_q1["opened_from_others"] == 4
    assert region_q1["repeat_no_prior"] == 4
    assert region_q1["repeat_prior_consulted"] == 1
    assert region_q1["repeat_possibly_redundant"] == 2
    assert region_q1["turnaround_seconds"] == 14 * 86400 + 6 * 3600

    with django_assert_num_queries(1):
        year = activity_table(
            period=Period(start=JAN, end=dt.date(2026, 12, 31)), group="year", modality="CT"
        )
    assert year["lines"][(chu.pk, JAN)]["studies"] == 1
    assert year["lines"][(blois.pk, JAN)]["opened_by_others"] == 2  # January and February
    assert year["region"][JAN]["studies"] == 3  # the CTs: S1, S2, S8

    months = activity_table(period=quarter, group="month", establishment_ids=[chu.pk])
    assert [months["lines"][(chu.pk, m)]["opened_from_others"] for m in (JAN, FEB)] == [1, 1]
    assert (chu.pk, MAR) in months["lines"]


def test_a_closed_month_never_changes_when_late_data_arrives(region):
    chu, blois = region["chu"], region["blois"]
    first = activity_compute(now=at(2, 20))  # January closed on 16 February
    assert first.closed == [JAN]
    january = figures(chu, JAN), figures(blois, JAN)

    # Late: a January study the access point had kept, and a January access.
    late = make_study(9, None, chu, "CT", "CHEST", at(1, 30), "access_point", (700,))
    opens(region["people"]["blois"], late, at(1, 31))
    second = activity_compute(now=at(3, 1))

    assert JAN not in second.months
    assert (figures(chu, JAN), figures(blois, JAN)) == january
    assert ActivityMonthState.objects.get(month=JAN).closed
    assert not ActivityMonthState.objects.get(month=FEB).closed
    # February, still open, was recomputed; the same figures again (idempotent).
    feb = figures(chu, FEB)
    activity_compute(now=at(3, 2))
    assert figures(chu, FEB) == feb


def test_a_study_sent_twice_is_archived_once(settings):
    """Through the real upload ingest: the second sending stores nothing new."""
    chu = builders.establishment(name="CHRU de Tours")
    doctor = builders.professional(
        email="radio@chu.test", first_name="Anne", last_name="Roux", establishment=chu
    )
    patient = builders.patient(birth_name="Martin", first_names="Jeanne")
    builders.ct_study(patient, by=doctor.user, key="activity-resent", slices=2)
    study = builders.ct_study(patient, by=doctor.user, key="activity-resent", slices=2)["study"]
    assert Study.objects.count() == 1
    assert study.origin == StudyOrigin.UPLOAD

    activity_compute()

    month = study.created_at.astimezone(PARIS).date().replace(day=1)
    table = activity_table(period=Period(start=month, end=month), group="month")
    totals = table["region"][month]
    assert totals["studies"] == totals["studies_upload"] == 1
    assert totals["instances"] == 2
    assert totals["bytes"] == sum(Instance.objects.values_list("size", flat=True))


def test_nothing_to_count_writes_nothing():
    assert activity_compute().months == []
    assert not ActivityMonth.objects.exists()


def test_each_ingest_path_records_where_a_study_came_from(tmp_path):
    """The access point (the gateway's C-STORE), the migration of an archive and STOW-RS go
    through the one ingest; each study keeps the path that first archived it."""
    from imaging import archive_import
    from imaging import services as imaging_services
    from imaging.validation import UploadedFile
    from portal.models import PatientIdentifier
    from tests.dicom_factory import ct_files, uid

    chu = builders.establishment(name="CHRU de Tours", patient_id_issuer="CHRU-TOURS")
    patient = builders.patient(birth_name="Martin", first_names="Jeanne")
    PatientIdentifier.objects.create(patient=patient, establishment=chu, value="T100001")

    def files(key):
        return ct_files(patient, key=key, slices=1, ipp="T100001", issuer="CHRU-TOURS")

    imaging_services.ingest_from_establishment(
        uploads=[UploadedFile("C-STORE", data) for data in files("origin-gateway")],
        establishment=chu,
        by=builders.SYSTEM,
    )
    source = tmp_path / "old-pacs"
    source.mkdir()
    (source / "1.dcm").write_bytes(files("origin-migration")[0])
    archive_import.run_import(
        source=source,
        establishment=chu,
        workers=0,
        journal_path=tmp_path / "journal.sqlite",
        report_path=tmp_path / "report.csv",
    )
    imaging_services.ingest_stow(
        uploads=[UploadedFile("stow", data) for data in files("origin-stow")],
        by=builders.SYSTEM,
        may_attach=lambda patient: True,
    )
    # Sent again by the access point: still the migration's study.
    imaging_services.ingest_from_establishment(
        uploads=[UploadedFile("C-STORE", data) for data in files("origin-migration")],
        establishment=chu,
        by=builders.SYSTEM,
    )

    origins = dict(Study.objects.values_list("study_instance_uid", "origin"))
    assert origins == {
        uid("origin-gateway", "study"): StudyOrigin.ACCESS_POINT,
        uid("origin-migration", "study"): StudyOrigin.MIGRATION,
        uid("origin-stow", "study"): StudyOrigin.STOW,
    }


def test_tele_expertise_brings_its_figures_through_its_app_config(region):
    """Blois asks the CHU's teleradiology about Mme Martin with her two CTs (one of the CHU):
    a request with a study of another establishment; a second one with its own CT only; the
    first closed with "an exam was avoided". Imaging reads them through
    ExpertiseConfig.imaging_activity, never importing expertise."""
    from expertise import services
    from expertise.models import Request
    from portal.models import CareRole
    from tests.expertise_world import REPORT

    chu, blois = region["chu"], region["blois"]
    asker = region["people"]["blois"]
    martin = region["studies"][1].patient
    builders.care_team(martin, (asker, CareRole.REFERRING))
    expert = region["people"]["chu"]
    pool = builders.pool(
        name="Téléradiologie",
        specialty="radiologie",
        establishment=chu,
        members=[(expert, "expert")],
    )
    details = {
        "question": "Nodule ?",
        "patient_informed": True,
        "consent_date": timezone.localdate(),
        "consent_method": "oral",
    }
    with_studies = builders.request(
        patient=martin,
        pool=pool,
        by=asker.user,
        studies=[region["studies"][1], region["studies"][2]],
        **details,
    )
    services.request_send(request=with_studies, by=Actor(user=asker.user))
    # A second one with Blois's own CT only.
    builders.request(
        patient=martin,
        pool=pool,
        by=asker.user,
        studies=[region["studies"][2]],
        send=True,
        **details,
    )
    # The CHU's radiologist answers the first; Blois closes it: an exam avoided.
    as_expert = Actor(user=expert.user)
    claimed = services.request_claim(request=with_studies, by=as_expert)
    report = services.report_save(request=claimed, by=as_expert, revision=None, **REPORT)
    services.report_sign_and_send(request=claimed, by=as_expert, revision=report.revision)
    claimed.refresh_from_db()
    services.request_close(
        request=claimed, by=Actor(user=asker.user), outcome=Request.Outcome.AVOIDED
    )

    activity_compute()

    month = timezone.localdate().replace(day=1)
    assert {
        figure: value
        for (modality, figure), value in figures(blois, month).items()
        if figure.startswith("expertise_")
    } == {
        "expertise_requests_with_studies": 2,
        "expertise_requests_with_other_studies": 1,
        # A request closed with the answer of before the exam/transfer split (issue 17)
        # still reads "a referral or an exam avoided"; the new answers are in
        # tests/test_activity_city.py.
        "expertise_referral_or_exam_avoided": 1,
        # Answered in the same instant: no time to add (tests/test_activity_city.py has one).
        "expertise_answered": 1,
    }


def test_rcp_cases_and_live_reviews_with_their_images(world):
    """The thoracic RCP of Tours gets the oncologist's case with the patient's CT (a study of
    Tours), and the oncologist opens a live review of it with the surgeon."""
    from imaging import review
    from tests.rcp_world import submitted_case

    case = submitted_case(world)
    study = case.studies.get()
    Study.objects.filter(pk=study.pk).update(establishment=world.tours)
    room = review.review_room_create(
        study=study,
        title="Revue du scanner",
        members=[world.surgeon.user],
        by=Actor(user=world.oncologist.user),
    )
    assert list(room.members.all()) == [world.surgeon.user]

    activity_compute()

    mine = figures(world.tours, timezone.localdate().replace(day=1))
    assert {key: value for key, value in mine.items() if "rcp" in key[1] or "review" in key[1]} == {
        ("", "rcp_cases_with_studies"): 1,
        ("CT", "review_rooms"): 1,
        ("CT", "review_room_participants"): 2,
    }


def test_the_beat_runs_the_job_every_night(settings):
    """The schedule names the registered task; run (eagerly), it computes."""
    from celery.schedules import crontab

    from portal.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["imaging-compute-activity"]
    assert isinstance(entry["schedule"], crontab)
    assert entry["task"] in app.tasks
    Study.objects.create(
        study_instance_uid="1.2.826.0.1.3680043.10.1017.99",
        identity=StudyIdentity.UNKNOWN,
        modalities="US",
    )

    app.tasks[entry["task"]].delay().get()

    month = timezone.localdate().replace(day=1)
    assert ActivityMonth.objects.get(establishment=None, month=month, figure="studies").value == 1
    assert not ActivityMonthState.objects.get(month=month).closed


def test_a_prior_the_patient_kept_from_other_establishments_is_no_prior(region):
    """Mme Martin opposed sharing (told by Blois's HL7 feed) before her January CT at Blois:
    Blois could not see the CHU's CT, so its own is no repeat of it."""
    from portal.models import PatientIdentifier

    blois = region["blois"]
    martin = region["studies"][1].patient
    PatientIdentifier.objects.create(patient=martin, establishment=blois, value="B1")
    with time_machine.travel(at(1, 15), tick=False):
        portal_services.sharing_opposition_record(
            patient=martin, by=Actor.system("hl7"), source="hl7", establishment=blois
        )

    activity_compute(now=at(4, 20))

    assert {
        figure: value for (_m, figure), value in figures(blois, JAN).items() if "repeat" in figure
    } == {"repeat_no_prior": 1}


def test_an_operator_computes_the_open_months_now(region):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    with time_machine.travel(at(4, 20), tick=False):
        call_command("activity_compute", stdout=out)

    # In French, as the portal speaks.
    assert "4 mois calculés (de 2026-01 à 2026-04), 3 clos" in out.getvalue()
    assert figures(region["clinic"], MAR)[("CT", "studies")] == 1

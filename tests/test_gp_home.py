"""The GP's working page (issue 16): his patients' new studies with their reports, RCP
decisions and tele-expertise answers, each new or read, the newest first, page by page; a
search over his patients; the study one click away in the viewer."""

import datetime as dt
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from imaging.models import Study, StudyIdentity, StudyReport
from portal.audit import Actor
from portal.home import GP_PAGE_SIZE
from portal.models import AuditEvent, AuditEventId, CareRole
from portal.services import care_relationship_add
from tests.conftest import client_for, make_patient
from tests.permission_matrix import (
    _expertise_request,
    _rcp_case,
    _study_report,
    imaged_study,
)

pytestmark = pytest.mark.django_db


def _page(user, **params):
    response = client_for(user).get(reverse("gp-home"), params)
    assert response.status_code == 200
    return response.content.decode()


def _items(page: str) -> list[tuple[str, str]]:
    """(kind, "1" when new) of each item on the page, in its order."""
    return re.findall(r'data-testid="gp-item" data-kind="([^"]+)" data-unread="([01])"', page)


def _another_gps_patient(world):
    """Louise Dupond, whose GP is world.outsider: never on world.gp's page."""
    patient = make_patient(birth_name="Dupond", first_names="Louise", order=9)
    care_relationship_add(
        patient=patient, professional=world.outsider, role=CareRole.GP, by=Actor.system("tests")
    )
    return patient


def _bare_studies(patient, count: int, *, key: str, reports: bool = False) -> list[Study]:
    """Studies as the index holds them (the page never reads the archive); with ``reports``,
    every other one with its report (an item of its own)."""
    now = timezone.now()
    studies = Study.objects.bulk_create(
        Study(
            study_instance_uid=f"1.2.826.0.1.3680043.10.999.{key}.{n}",
            patient=patient,
            identity=StudyIdentity.MATCHED,
            modalities="CT",
            description=f"Scanner {n}",
            created_at=now - dt.timedelta(minutes=n),
        )
        for n in range(count)
    )
    StudyReport.objects.bulk_create(
        StudyReport(
            study=study,
            kind=StudyReport.Kind.SR,
            title="Compte rendu",
            series_instance_uid=f"{study.study_instance_uid}.1",
            sop_instance_uid=f"{study.study_instance_uid}.1.1",
            created_at=study.created_at,
        )
        for study in (studies[::2] if reports else [])
    )
    return studies


def test_his_page_lists_every_kind_of_item_of_his_patients_only(world):
    decision = _rcp_case(world, "validated")
    report = _study_report(world)
    study = imaged_study(world)["study"]
    answered = _expertise_request(world, "answered")
    stranger = _another_gps_patient(world)
    _bare_studies(stranger, 2, key="stranger", reports=True)
    _bare_studies(world.other_patient, 1, key="other")

    page = _page(world.gp.user)
    kinds = [kind for kind, _new in _items(page)]
    assert set(kinds) == {"rcp-decision", "expertise-report", "study", "study-report"}
    assert all(new == "1" for _kind, new in _items(page))
    assert world.patient.display_name in page
    assert stranger.display_name not in page and world.other_patient.display_name not in page
    for url in (
        reverse("rcp-case", args=[decision.pk]),
        reverse("expertise-request", args=[answered.pk]),
        reverse("study-viewer", args=[study.pk]),
        reverse("study-report-pdf", args=[world.patient.pk, report.pk]),
        reverse("patient-detail", args=[world.patient.pk]),
    ):
        assert url in page

    # Another GP sees his own patient's studies, nothing of world.gp's.
    theirs = _page(world.outsider.user)
    assert {kind for kind, _new in _items(theirs)} == {"study", "study-report"}
    assert world.patient.display_name not in theirs and stranger.display_name in theirs
    # Someone who is nobody's GP has an empty page.
    assert _items(_page(world.oncologist.user)) == []
    # The newest first.
    times = re.findall(r'<time datetime="([^"]+)"', page)
    assert len(times) == len(kinds) and times == sorted(times, reverse=True)


def test_an_item_he_opens_turns_from_new_to_read(world):
    study = imaged_study(world)["study"]
    page = _page(world.gp.user)
    assert _items(page) == [("study", "1")]
    assert 'data-testid="gp-item-status">Nouveau<' in page

    viewer = re.search(r'href="([^"]+)" data-testid="gp-item-viewer"', page).group(1)
    assert viewer == reverse("study-viewer", args=[study.pk])
    response = client_for(world.gp.user).get(viewer)
    assert response.status_code == 200  # one click: the viewer opens on the study

    page = _page(world.gp.user)
    assert _items(page) == [("study", "0")]
    assert 'data-testid="gp-item-status">Lu<' in page
    assert 'data-testid="gp-mark-read"' not in page


def test_mark_all_read_reads_his_whole_list(world):
    _rcp_case(world, "validated")
    imaged_study(world)
    client = client_for(world.gp.user)
    assert {new for _kind, new in _items(_page(world.gp.user))} == {"1"}
    response = client.post(reverse("gp-home-read"))
    assert response.status_code == 302 and response.url == reverse("gp-home")
    assert {new for _kind, new in _items(_page(world.gp.user))} == {"0"}


def test_a_study_with_its_report_links_both(world):
    report = _study_report(world)
    page = _page(world.gp.user)
    pdf = reverse("study-report-pdf", args=[world.patient.pk, report.pk])
    viewer = reverse("study-viewer", args=[report.study_id])
    # The study's item: the viewer, and its report beside it.
    study_item = page[page.index('data-kind="study"') :]
    study_item = study_item[: study_item.index("</li>")]
    assert f'href="{viewer}" data-testid="gp-item-viewer"' in study_item
    assert f'href="{pdf}" data-testid="gp-item-report"' in study_item
    # The report's item opens the report, and the images one click away.
    report_item = page[page.index('data-kind="study-report"') :]
    report_item = report_item[: report_item.index("</li>")]
    assert f'href="{viewer}" data-testid="gp-item-viewer"' in report_item


def test_the_search_finds_only_his_patients_and_narrows_the_list(world):
    imaged_study(world)
    stranger = _another_gps_patient(world)
    _bare_studies(stranger, 1, key="stranger")
    second = make_patient(birth_name="Moreau", first_names="Lucie", order=5)
    care_relationship_add(
        patient=second, professional=world.gp, role=CareRole.GP, by=Actor.system("tests")
    )
    _bare_studies(second, 1, key="second")
    assert len(_items(_page(world.gp.user))) == 2

    # By name: "Dupon" is world.patient's (Dupont) and the stranger's (Dupond).
    page = _page(world.gp.user, q="Dupon")
    found = page[page.index('data-testid="gp-patients"') :]
    assert found.count('data-testid="gp-patient"') == 1
    assert world.patient.display_name in found and stranger.display_name not in found
    assert len(_items(page)) == 1 and second.display_name not in page
    # By birth date and by INS.
    by_date = _page(world.gp.user, q=world.patient.birth_date.strftime("%d/%m/%Y"))
    assert by_date.count('data-testid="gp-patient"') == 2  # same birth date, both his
    by_ins = _page(world.gp.user, q=second.ins_matricule)
    assert by_ins.count('data-testid="gp-patient"') == 1 and second.display_name in by_ins
    # Another GP's patient is not found, and nothing of hers shows.
    page = _page(world.gp.user, q="Dupond Louise")
    assert 'data-testid="gp-patient"' not in page and _items(page) == []
    assert "Aucun de vos patients ne correspond à cette recherche." in page
    # The search is in his audit trail, like the patient list's.
    event = AuditEvent.objects.filter(actor=world.gp.user, object_type="portal.gp_home").latest(
        "occurred_at"
    )
    assert event.event_id == AuditEventId.QUERY and event.query == "Dupond Louise"


def test_the_list_is_paginated_the_newest_first(world):
    studies = _bare_studies(world.patient, GP_PAGE_SIZE + 5, key="many")
    first = _page(world.gp.user)
    assert len(_items(first)) == GP_PAGE_SIZE and 'data-testid="gp-next"' in first
    assert first.index(f"/{studies[0].pk}/") < first.index(f"/{studies[1].pk}/")
    second = _page(world.gp.user, page=2)
    assert len(_items(second)) == 5 and 'data-testid="gp-next"' not in second
    # A page number that is not one shows the first page, never an error.
    assert len(_items(_page(world.gp.user, page="abc"))) == GP_PAGE_SIZE


def test_the_page_costs_the_same_queries_for_3_items_or_30(world, django_assert_max_num_queries):
    _rcp_case(world, "validated")
    _bare_studies(world.patient, 1, key="few")  # and the CT the case was discussed with
    client = client_for(world.gp.user)
    for params in ({}, {"q": "Dupont"}):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(reverse("gp-home"), params).status_code == 200
        few = len(queries)  # read now: the next request resets the connection's log
        assert len(_items(client.get(reverse("gp-home"), params).content.decode())) == 3
        _bare_studies(world.patient, 27, key=f"more-{len(params)}", reports=True)
        page = client.get(reverse("gp-home"), params).content.decode()
        assert len(_items(page)) == GP_PAGE_SIZE
        with django_assert_max_num_queries(few):
            assert client.get(reverse("gp-home"), params).status_code == 200
        Study.objects.filter(study_instance_uid__contains=".more-").delete()

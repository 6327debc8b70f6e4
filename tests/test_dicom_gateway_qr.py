"""The gateway's Query/Retrieve SCP with real peers: dcmtk's findscu, movescu, getscu and
storescp as the establishment's PACS, and an Orthanc PACS querying and retrieving.

The region: Jeanne Dupont is known at Tours (IPP T100001) and at Bourges (B200001), with a
study made at each; Jean-Pierre Durand is known only at Bourges, with a study there. Tours
queries and retrieves with its calling AE; its PACS (storescp) is the only destination it
may move to.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import subprocess

import pydicom
import pytest
import requests
from django.db import connections

from imaging import gateway_query
from imaging.gateway import INSTANCES_TRANSFERRED, QUERY, Gateway
from imaging.models import CallingAETitle, DicomDeclaration, IngestItem, Instance, Study
from imaging.services import ingest_from_establishment
from imaging.validation import UploadedFile
from portal.audit import Actor
from portal.models import AuditEvent, AuditOutcome, PatientIdentifier
from tests.dicom_factory import ct_files
from tests.dicom_peers import (
    StoreSCP,
    require_dcmtk,
    serve_in_thread,
    settle,
    settling,
    stop_in_thread,
    wait_for,
)

pytestmark = [pytest.mark.django_db, pytest.mark.service("dcmtk")]

TOURS_AE = "CHRU_TOURS_PACS"
BOURGES_AE = "CH_BOURGES"
TIMEOUT = 30


class Region:
    """What the tests query: the studies by name, the gateway's port."""


def _ingest(establishment, files):
    results = ingest_from_establishment(
        uploads=[UploadedFile(f"f{index}.dcm", data) for index, data in enumerate(files)],
        establishment=establishment,
        by=Actor.system("tests"),
    )
    assert {result.status for result in results} == {IngestItem.Status.ACCEPTED}, [
        result.reason for result in results
    ]
    return results[0].study


@pytest.fixture
def region(world, tmp_path):
    require_dcmtk("findscu", "movescu", "getscu", "storescp")
    world.bourges.patient_id_issuer = "CH-BOURGES"
    world.bourges.save()
    PatientIdentifier.objects.create(
        patient=world.patient, establishment=world.bourges, value="B200001"
    )
    r = Region()
    r.world = world
    r.tours_study = _ingest(
        world.tours, ct_files(world.patient, key="qr-tours", slices=3, StudyDate="20261005")
    )
    r.bourges_study = _ingest(
        world.bourges,
        ct_files(
            world.patient,
            key="qr-bourges",
            slices=2,
            ipp="B200001",
            issuer="CH-BOURGES",
            study_date=dt.date(2025, 3, 1),
            description="IRM cérébrale",
            Modality="MR",
            InstitutionName="CH de Bourges",
        ),
    )
    r.durand_study = _ingest(
        world.bourges,
        ct_files(world.other_patient, key="qr-durand", slices=1, ipp="B100002", issuer=""),
    )
    r.pacs = StoreSCP(tmp_path / "tours-pacs", ae_title="TOURS_PACS", options=["+xa"])
    tours = DicomDeclaration.objects.create(
        establishment=world.tours,
        pacs_ae_title="TOURS_PACS",
        pacs_host="127.0.0.1",
        pacs_port=r.pacs.port,
    )
    CallingAETitle.objects.create(declaration=tours, ae_title=TOURS_AE)
    bourges = DicomDeclaration.objects.create(
        establishment=world.bourges,
        pacs_ae_title="BOURGES_PACS",
        pacs_host="127.0.0.1",
        pacs_port=r.pacs.port,  # reachable: only the rule may refuse it
    )
    CallingAETitle.objects.create(declaration=bourges, ae_title=BOURGES_AE)
    r.tours_declaration = tours
    connection = connections["default"]
    connection.inc_thread_sharing()
    r.gateway = Gateway(
        ae_title="MIRC", max_associations=10, share_connections={"default": connection}
    )
    r.port = serve_in_thread(r.gateway)
    r.tmp = tmp_path
    yield r
    stop_in_thread(r.port)
    connection.dec_thread_sharing()
    r.pacs.stop()


def _run(command):
    with settling():
        return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)


_counter = iter(range(10**6))


def _findscu(region, keys, *, model="-S", calling=TOURS_AE):
    """findscu's answers as datasets, and its log (the final status is in it)."""
    directory = region.tmp / f"find{next(_counter)}"
    directory.mkdir()
    arguments = [argument for key in keys for argument in ("-k", key)]
    answer = _run(
        ["findscu", "-d", model, "-aet", calling, "-aec", "MIRC", "-to", "20", "-X"]
        + ["-od", str(directory), *arguments, "127.0.0.1", str(region.port)]
    )
    answers = [pydicom.dcmread(path) for path in sorted(directory.glob("rsp*.dcm"))]
    return answers, answer.stdout + answer.stderr


def _events(event_id, **filters):
    return AuditEvent.objects.filter(event_id=event_id, **filters).order_by("pk")


# --- C-FIND -----------------------------------------------------------------------------------


def test_tours_finds_its_patients_studies_of_the_whole_region_under_its_own_ipp(region):
    world = region.world
    answers, log = _findscu(
        region,
        [
            "QueryRetrieveLevel=STUDY",
            "PatientID=T100001",
            "IssuerOfPatientID",
            "PatientName",
            "PatientBirthDate",
            "StudyInstanceUID",
            "StudyDate",
            "ModalitiesInStudy",
            "StudyDescription",
            "NumberOfStudyRelatedInstances",
        ],
    )
    assert "Success" in log, log
    by_uid = {str(a.StudyInstanceUID): a for a in answers}
    assert set(by_uid) == {
        region.tours_study.study_instance_uid,
        region.bourges_study.study_instance_uid,
    }
    bourges = by_uid[region.bourges_study.study_instance_uid]
    # The Bourges study, named by Tours' IPP: Tours' PACS knows its patient by it.
    assert (bourges.PatientID, bourges.IssuerOfPatientID) == ("T100001", "CHRU-TOURS")
    assert str(bourges.PatientName) == "DUPONT^Jeanne Marie"
    assert bourges.PatientBirthDate == "19560312"
    assert bourges.StudyDescription == "IRM cérébrale"
    assert bourges.ModalitiesInStudy == "MR"
    assert bourges.StudyDate == "20250301"
    assert int(bourges.NumberOfStudyRelatedInstances) == 2
    # One query event against the patient, naming the establishment and what was asked.
    (event,) = _events(QUERY, patient=world.patient)
    assert event.detail["establishment"] == world.tours.finess
    assert event.detail["calling_ae"] == TOURS_AE
    assert event.detail["keys"]["PatientID"] == "T100001"
    assert event.detail["matches"] == 2

    # Other keys: a name with a wildcard, a date range, a modality, an accession number.
    answers, _log = _findscu(
        region,
        [
            "QueryRetrieveLevel=STUDY",
            "PatientName=dup*",
            "StudyDate=20250101-20251231",
            "StudyInstanceUID",
        ],
    )
    assert [str(a.StudyInstanceUID) for a in answers] == [region.bourges_study.study_instance_uid]
    answers, _log = _findscu(
        region, ["QueryRetrieveLevel=STUDY", "PatientID=T100001", "ModalitiesInStudy=CT"]
    )
    assert len(answers) == 1
    accession = region.tours_study.accession_number
    answers, _log = _findscu(
        region, ["QueryRetrieveLevel=STUDY", f"AccessionNumber={accession}", "StudyInstanceUID"]
    )
    assert [str(a.StudyInstanceUID) for a in answers] == [region.tours_study.study_instance_uid]


def test_the_lower_levels_and_the_patient_root(region):
    study_uid = region.bourges_study.study_instance_uid
    series, log = _findscu(
        region,
        [
            "QueryRetrieveLevel=SERIES",
            f"StudyInstanceUID={study_uid}",
            "SeriesInstanceUID",
            "Modality",
            "NumberOfSeriesRelatedInstances",
        ],
    )
    assert "Success" in log, log
    (one,) = series
    assert (one.Modality, int(one.NumberOfSeriesRelatedInstances)) == ("MR", 2)
    images, _log = _findscu(
        region,
        [
            "QueryRetrieveLevel=IMAGE",
            f"StudyInstanceUID={study_uid}",
            f"SeriesInstanceUID={one.SeriesInstanceUID}",
            "SOPInstanceUID",
            "SOPClassUID",
            "InstanceNumber",
        ],
    )
    assert {str(i.SOPInstanceUID) for i in images} == set(
        Instance.objects.filter(series__study=region.bourges_study).values_list(
            "sop_instance_uid", flat=True
        )
    )
    patients, _log = _findscu(
        region,
        [
            "QueryRetrieveLevel=PATIENT",
            "PatientName=DUPONT^JEANNE",
            "PatientID",
            "NumberOfPatientRelatedStudies",
        ],
        model="-P",
    )
    (patient,) = patients
    assert (patient.PatientID, int(patient.NumberOfPatientRelatedStudies)) == ("T100001", 2)
    studies, _log = _findscu(
        region,
        ["QueryRetrieveLevel=STUDY", "PatientID=T100001", "StudyInstanceUID"],
        model="-P",
    )
    assert len(studies) == 2


def test_a_query_that_would_list_the_region_or_breaks_the_hierarchy_is_refused(region):
    answers, log = _findscu(region, ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"])
    assert answers == []
    assert "0xc000" in log.lower(), log
    assert "query too broad" in log
    refused = _events(QUERY, patient=None).last()
    assert refused.outcome == AuditOutcome.MINOR_FAILURE
    assert "query too broad" in refused.detail["refused"]
    # A year is not narrow; a wildcard-only name neither.
    for keys in (["StudyDate=20250101-20251231"], ["PatientName=*"], ["PatientID=T*"]):
        answers, log = _findscu(region, ["QueryRetrieveLevel=STUDY", *keys])
        assert answers == [] and "query too broad" in log, (keys, log)
    # SERIES without the study: 0xA900.
    answers, log = _findscu(region, ["QueryRetrieveLevel=SERIES", "SeriesInstanceUID"])
    assert answers == [] and "0xa900" in log.lower(), log
    answers, log = _findscu(region, ["QueryRetrieveLevel=STUDY", "StudyDate=2025-bad"])
    assert answers == [] and "invalid StudyDate" in log, log
    # The gateway keeps serving.
    answers, log = _findscu(region, ["QueryRetrieveLevel=STUDY", "PatientID=T100001"])
    assert len(answers) == 2


def test_a_patient_the_establishment_does_not_know_is_no_match_not_an_error(region):
    world = region.world
    # Durand is known only at Bourges: Tours asks by name and by Bourges' IPP and issuer.
    for keys in (
        ["PatientName=DURAND*"],
        ["PatientID=B100002", "IssuerOfPatientID=CH-BOURGES"],
        ["PatientID=B100002"],
        # Nor does another establishment's IPP name a patient Tours knows.
        ["PatientID=B200001", "IssuerOfPatientID=CH-BOURGES"],
    ):
        answers, log = _findscu(region, ["QueryRetrieveLevel=STUDY", *keys, "StudyInstanceUID"])
        assert answers == [], keys
        assert "Success" in log, log
    assert not _events(QUERY, patient=world.other_patient).exists()
    assert not _events(QUERY, patient=world.patient).exists()
    # Bourges finds him under its own IPP.
    answers, _log = _findscu(
        region,
        ["QueryRetrieveLevel=STUDY", "PatientID=B100002", "IssuerOfPatientID"],
        calling=BOURGES_AE,
    )
    assert [(a.PatientID, a.IssuerOfPatientID) for a in answers] == [("B100002", "CH-BOURGES")]


def test_an_opposed_patient_s_other_studies_are_neither_found_nor_retrievable(region):
    world = region.world
    world.patient.sharing_opposed = True
    world.patient.save()
    answers, _log = _findscu(
        region, ["QueryRetrieveLevel=STUDY", "PatientID=T100001", "StudyInstanceUID"]
    )
    assert [str(a.StudyInstanceUID) for a in answers] == [region.tours_study.study_instance_uid]
    answers, _log = _findscu(
        region,
        [
            "QueryRetrieveLevel=SERIES",
            f"StudyInstanceUID={region.bourges_study.study_instance_uid}",
            "SeriesInstanceUID",
        ],
    )
    assert answers == []
    log = _movescu(region, [f"StudyInstanceUID={region.bourges_study.study_instance_uid}"])
    assert region.pacs.files() == []
    assert "Success" in log, log
    # Bourges, which made it, still finds it; Tours' study is no more Bourges' to see.
    answers, _log = _findscu(
        region,
        ["QueryRetrieveLevel=STUDY", "PatientID=B200001", "StudyInstanceUID"],
        calling=BOURGES_AE,
    )
    assert [str(a.StudyInstanceUID) for a in answers] == [region.bourges_study.study_instance_uid]


def test_beyond_the_limit_the_first_matches_then_cancel(region, settings):
    settings.DICOM_GATEWAY_QUERY_MAX_RESULTS = 1
    answers, log = _findscu(
        region, ["QueryRetrieveLevel=STUDY", "PatientID=T100001", "StudyInstanceUID"]
    )
    assert len(answers) == 1
    assert "Cancel" in log or "0xfe00" in log.lower(), log
    assert _events(QUERY, patient=region.world.patient).last().detail["truncated"] is True


# --- C-MOVE, C-GET ---------------------------------------------------------------------------


def _movescu(region, keys, *, destination="TOURS_PACS", calling=TOURS_AE, level="STUDY"):
    arguments = [argument for key in keys for argument in ("-k", key)]
    answer = _run(
        ["movescu", "-d", "-S", "-aet", calling, "-aec", "MIRC", "-aem", destination]
        + ["-to", "20", "-k", f"QueryRetrieveLevel={level}", *arguments]
        + ["127.0.0.1", str(region.port)]
    )
    return answer.stdout + answer.stderr


def test_tours_moves_a_bourges_study_to_its_own_pacs(region):
    world = region.world
    study = region.bourges_study
    log = _movescu(region, [f"StudyInstanceUID={study.study_instance_uid}"])
    assert "Success" in log, log
    received = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, region.pacs.files())}
    instances = Instance.objects.filter(series__study=study)
    assert set(received) == set(instances.values_list("sop_instance_uid", flat=True))
    from imaging.archive import get_archive

    for instance in instances:
        archived = pydicom.dcmread(
            io.BytesIO(
                get_archive().retrieve_instance(
                    study.study_instance_uid,
                    instance.series.series_instance_uid,
                    instance.sop_instance_uid,
                )
            )
        )
        assert received[instance.sop_instance_uid].PixelData == archived.PixelData
    # Pending answers counted the sub-operations (PS3.4 C.4.2.1.3).
    counts = re.findall(r"(Remaining|Completed|Failed) Suboperations\s*: (\d+)", log)
    assert ("Remaining", "1") in counts and ("Completed", "2") in counts, log
    assert ("Failed", "0") in counts and ("Failed", "1") not in counts, log
    (event,) = _events(INSTANCES_TRANSFERRED, patient=world.patient)
    assert event.detail["destination"] == "TOURS_PACS"
    assert (event.detail["instances"], event.detail["failed"]) == (2, 0)
    assert event.detail["establishment"] == world.tours.finess


def test_a_move_elsewhere_than_the_callers_own_pacs_is_refused(region):
    study_uid = region.tours_study.study_instance_uid
    for destination, reason in (
        ("NOWHERE", "move destination not declared in the region"),
        ("BOURGES_PACS", "move destination of another establishment"),
    ):
        log = _movescu(region, [f"StudyInstanceUID={study_uid}"], destination=destination)
        assert "Refused: MoveDestinationUnknown" in log, log
        refused = _events(INSTANCES_TRANSFERRED, object_id=destination).last()
        assert refused.detail["refused"] == reason
        assert refused.outcome == AuditOutcome.MINOR_FAILURE
    assert region.pacs.files() == []
    # A study of a patient Tours does not know: nothing moves, nothing leaks.
    log = _movescu(region, [f"StudyInstanceUID={region.durand_study.study_instance_uid}"])
    assert region.pacs.files() == []
    # A study-level move without its StudyInstanceUID: 0xA900.
    log = _movescu(region, ["PatientID=T100001"])
    assert "0xa900" in log.lower(), log
    assert region.pacs.files() == []


def test_a_move_to_the_callers_pacs_when_it_is_down_fails_and_is_audited(region):
    region.pacs.stop()
    study = region.tours_study
    log = _movescu(region, [f"StudyInstanceUID={study.study_instance_uid}"])
    # pynetdicom answers a destination it cannot associate with as unknown (0xA801).
    assert "Refused: MoveDestinationUnknown" in log, log
    (event,) = _events(INSTANCES_TRANSFERRED, patient=region.world.patient)
    assert (event.detail["instances"], event.detail["failed"]) == (0, 3)
    assert event.outcome == AuditOutcome.MINOR_FAILURE
    # The gateway keeps serving.
    answers, _log = _findscu(region, ["QueryRetrieveLevel=STUDY", "PatientID=T100001"])
    assert len(answers) == 2


def test_getscu_gets_the_study_back_on_its_association(region):
    study = region.bourges_study
    directory = region.tmp / "got"
    directory.mkdir()
    answer = _run(
        ["getscu", "-v", "-S", "-aet", TOURS_AE, "-aec", "MIRC", "-to", "20"]
        + ["-od", str(directory), "-k", "QueryRetrieveLevel=STUDY"]
        + ["-k", f"StudyInstanceUID={study.study_instance_uid}", "127.0.0.1", str(region.port)]
    )
    log = answer.stdout + answer.stderr
    assert answer.returncode == 0, log
    got = {str(pydicom.dcmread(path).SOPInstanceUID) for path in directory.iterdir()}
    assert got == set(
        Instance.objects.filter(series__study=study).values_list("sop_instance_uid", flat=True)
    )
    (event,) = _events(INSTANCES_TRANSFERRED, patient=region.world.patient)
    assert (event.detail["instances"], event.detail["failed"]) == (2, 0)
    # Durand's study is not Tours' to get.
    other = region.tmp / "other"
    other.mkdir()
    _run(
        ["getscu", "-S", "-aet", TOURS_AE, "-aec", "MIRC", "-to", "20", "-od", str(other)]
        + ["-k", "QueryRetrieveLevel=STUDY"]
        + ["-k", f"StudyInstanceUID={region.durand_study.study_instance_uid}"]
        + ["127.0.0.1", str(region.port)]
    )
    assert list(other.iterdir()) == []


# --- An Orthanc PACS --------------------------------------------------------------------------


def test_an_orthanc_pacs_queries_and_retrieves_through_the_gateway(region, orthanc_pacs):
    orthanc_pacs.reset()
    CallingAETitle.objects.create(
        declaration=region.tours_declaration, ae_title=orthanc_pacs.ae_title
    )
    DicomDeclaration.objects.filter(pk=region.tours_declaration.pk).update(
        pacs_ae_title=orthanc_pacs.ae_title, pacs_port=orthanc_pacs.dicom_port
    )
    orthanc_pacs.declare_modality("mirc", ae_title="MIRC", host="127.0.0.1", port=region.port)
    found = requests.post(
        f"{orthanc_pacs.rest}/modalities/mirc/query",
        json={"Level": "Study", "Query": {"PatientID": "T100001", "StudyInstanceUID": ""}},
        timeout=TIMEOUT,
    )
    assert found.ok, found.text
    query_id = found.json()["ID"]
    answers = requests.get(
        f"{orthanc_pacs.rest}/queries/{query_id}/answers?expand", timeout=TIMEOUT
    ).json()
    uids = {answer["0020,000d"]["Value"] for answer in answers}
    assert uids == {region.tours_study.study_instance_uid, region.bourges_study.study_instance_uid}
    index = next(
        i
        for i, answer in enumerate(answers)
        if answer["0020,000d"]["Value"] == region.bourges_study.study_instance_uid
    )
    moved = requests.post(
        f"{orthanc_pacs.rest}/queries/{query_id}/answers/{index}/retrieve",
        json={"TargetAet": orthanc_pacs.ae_title, "Synchronous": True},
        timeout=TIMEOUT,
    )
    assert moved.ok, moved.text + orthanc_pacs.log()
    wait_for(
        lambda: region.bourges_study.study_instance_uid in orthanc_pacs.study_uids(),
        "the study in Orthanc",
    )
    assert orthanc_pacs.instance_count() == 2

    # The same PACS sends a new study of its patient to the gateway (C-STORE).
    (new,) = ct_files(region.world.patient, key="qr-orthanc", slices=1)
    uploaded = requests.post(f"{orthanc_pacs.rest}/instances", data=new, timeout=TIMEOUT)
    assert uploaded.ok, uploaded.text
    stored = requests.post(
        f"{orthanc_pacs.rest}/modalities/mirc/store",
        json={"Resources": [uploaded.json()["ID"]], "Synchronous": True},
        timeout=TIMEOUT,
    )
    assert stored.ok, stored.text + orthanc_pacs.log()
    # Orthanc keeps its association open a few seconds for the next transfer: the gateway
    # ingests once the answer is sent and ends the association after Orthanc lets go.
    settle()
    new_uid = str(pydicom.dcmread(io.BytesIO(new)).StudyInstanceUID)
    assert Study.objects.get(study_instance_uid=new_uid).patient == region.world.patient


# --- Speed ------------------------------------------------------------------------------------


def test_one_patient_among_many_studies_is_found_in_a_bounded_number_of_queries(
    region, django_assert_max_num_queries
):
    """The answer's cost does not grow with the region: a fixed number of indexed queries
    (the lead's benchmark: one patient among 10,000 studies in under 50 ms)."""
    Study.objects.bulk_create(
        Study(
            study_instance_uid=f"1.2.826.0.1.3680043.10.999.{index}",
            patient=region.world.other_patient,
            establishment=region.world.bourges,
            identity="matched",
            study_date=dt.date(2024, 1, 1),
        )
        for index in range(1000)
    )
    query = gateway_query.parse(
        _identifier(QueryRetrieveLevel="STUDY", PatientID="T100001", StudyInstanceUID=""),
        gateway_query.STUDY_ROOT,
    )
    with django_assert_max_num_queries(4):
        result = gateway_query.find(query, region.world.tours, limit=500, retrieve_ae_title="MIRC")
    assert len(result.answers) == 2


def _identifier(**values):
    from pydicom.dataset import Dataset

    identifier = Dataset()
    for keyword, value in values.items():
        setattr(identifier, keyword, value)
    return identifier

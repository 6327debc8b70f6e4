"""The portal's DICOMweb service: what a viewer gets, in which syntax, and who may ask."""

import datetime as dt
import email.parser
import email.policy
import io

import numpy as np
import pydicom
import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from imaging.archive import get_archive
from imaging.models import ViewerToken
from imaging.services import viewer_token_issue
from portal.audit import Actor
from portal.models import AuditEvent, AuditEventId
from tests.conftest import client_for
from tests.dicom_factory import ct_files, uid
from tests.permission_matrix import imaged_study

pytestmark = pytest.mark.django_db

OCTETS = 'multipart/related; type="application/octet-stream"'
DICOM_PARTS = 'multipart/related; type="application/dicom"'


def parts_of(response) -> list[tuple[str, bytes]]:
    """(content type, body) of each part of a multipart/related answer."""
    body = b"".join(response.streaming_content) if response.streaming else response.content
    raw = f"Content-Type: {response['Content-Type']}\r\n\r\n".encode() + body
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    return [
        (part.get_content_type() + _params(part), part.get_payload(decode=True))
        for part in message.iter_parts()
    ]


def _params(part) -> str:
    syntax = part.get_param("transfer-syntax")
    return f"; transfer-syntax={syntax}" if syntax else ""


@pytest.fixture
def study(world):
    return imaged_study(world)


def test_qido_finds_only_visible_studies_with_filters(world, study):
    client = client_for(world.gp.user)
    url = reverse("dicomweb-studies")
    assert len(client.get(url).json()) == 1
    assert len(client.get(url, {"PatientID": "T100001"}).json()) == 1
    assert client.get(url, {"PatientID": "nobody"}).json() == []
    assert len(client.get(url, {"PatientName": "DUPO*"}).json()) == 1
    assert len(client.get(url, {"StudyDate": "20260101-20261231"}).json()) == 1
    assert client.get(url, {"StudyDate": "19900101-19901231"}).json() == []
    assert len(client.get(url, {"ModalitiesInStudy": "CT"}).json()) == 1
    result = client.get(url).json()[0]
    assert result["00201208"]["Value"] == [2]
    assert result["00081190"]["Value"][0].endswith(
        reverse("dicomweb-study", args=[study["study_uid"]])
    )
    # Every search is audited, with the query.
    assert AuditEvent.objects.filter(
        event_id=AuditEventId.QUERY, actor=world.gp.user, query__contains="PatientID"
    ).exists()


def test_qido_finds_a_new_study_at_once_and_loses_an_ended_patient_at_once(world, study):
    """The visibility rule's SQL is kept between requests: the rows it reads are not."""
    from portal.models import CareRelationship
    from portal.services import care_relationship_end

    client = client_for(world.gp.user)
    url = reverse("dicomweb-studies")
    assert len(client.get(url).json()) == 1
    imaged_study(world, key="second-ct")  # the patient's next CT arrives
    assert len(client.get(url).json()) == 2
    relationship = CareRelationship.objects.get(patient=world.patient, professional=world.gp)
    care_relationship_end(relationship=relationship, by=Actor.system("tests"))
    assert client.get(url).json() == []
    metadata = reverse("dicomweb-series-metadata", args=[study["study_uid"], study["series_uid"]])
    assert client.get(metadata).status_code == 404


def test_metadata_points_at_the_pixels_on_the_portal_never_at_the_archive(world, study):
    metadata = (
        client_for(world.gp.user)
        .get(reverse("dicomweb-study-metadata", args=[study["study_uid"]]))
        .json()
    )
    assert len(metadata) == 2
    for instance in metadata:
        # Pixel Data is only referenced (PS3.18 §10.4.1.1.2): its frames on the portal.
        pixel_data = instance.pop("7FE00010")
        assert set(pixel_data) == {"vr", "BulkDataURI"}
        sop = instance["00080018"]["Value"][0]
        assert pixel_data["BulkDataURI"] == "http://testserver" + reverse(
            "dicomweb-frames", args=[study["study_uid"], study["series_uid"], sop, "1"]
        )
        assert "BulkDataURI" not in str(instance)


def test_an_instance_comes_back_byte_for_byte(world, study):
    response = client_for(world.gp.user).get(
        reverse(
            "dicomweb-instance", args=[study["study_uid"], study["series_uid"], study["sop_uid"]]
        ),
        HTTP_ACCEPT=DICOM_PARTS,
    )
    ((content_type, body),) = parts_of(response)
    assert content_type == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
    assert body == get_archive().retrieve_instance(
        study["study_uid"], study["series_uid"], study["sop_uid"]
    )


def test_a_whole_study_streams_every_instance(world, study):
    response = client_for(world.gp.user).get(
        reverse("dicomweb-study", args=[study["study_uid"]]), HTTP_ACCEPT=DICOM_PARTS
    )
    uids = {
        str(pydicom.dcmread(io.BytesIO(body)).SOPInstanceUID) for _t, body in parts_of(response)
    }
    assert len(uids) == 2 and study["sop_uid"] in uids


def test_native_frames_are_the_pixel_bytes(world, study):
    response = client_for(world.gp.user).get(
        reverse(
            "dicomweb-frames", args=[study["study_uid"], study["series_uid"], study["sop_uid"], "1"]
        ),
        HTTP_ACCEPT=OCTETS,
    )
    ((content_type, body),) = parts_of(response)
    assert content_type == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    stored = get_archive().retrieve_instance(
        study["study_uid"], study["series_uid"], study["sop_uid"]
    )
    assert body == pydicom.dcmread(io.BytesIO(stored)).PixelData


def _compressed_study(world, syntax):
    files = []
    for data in ct_files(world.patient, key=f"compressed-{syntax}", slices=1, size=64):
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.compress(syntax)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        files.append(buffer.getvalue())
    client = client_for(world.oncologist.user)
    from django.core.files.uploadedfile import SimpleUploadedFile

    from imaging.models import IngestBatch
    from imaging.services import ingest_run

    client.post(
        reverse("study-upload", args=[world.patient.pk]),
        {"files": [SimpleUploadedFile("c.dcm", files[0])]},
    )
    ingest_run(batch=IngestBatch.objects.latest("pk"))
    ds = pydicom.dcmread(io.BytesIO(files[0]))
    return ds


@pytest.mark.parametrize(
    "syntax",
    [
        "1.2.840.10008.1.2.5",  # RLE Lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    ],
)
def test_compressed_frames_are_decoded_to_the_same_pixels(world, syntax):
    original = _compressed_study(world, syntax)
    client = client_for(world.oncologist.user)
    url = reverse(
        "dicomweb-frames",
        args=[original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID, "1"],
    )
    ((content_type, body),) = parts_of(client.get(url, HTTP_ACCEPT=OCTETS))
    assert content_type.endswith("transfer-syntax=1.2.840.10008.1.2.1")
    decoded = np.frombuffer(body, dtype="<u2").reshape(64, 64)
    assert np.array_equal(decoded, original.pixel_array)
    # Asked in its own syntax, the frame passes through untouched.
    ((content_type, body),) = parts_of(
        client.get(
            url,
            HTTP_ACCEPT='multipart/related; type="application/octet-stream"; transfer-syntax=*',
        )
    )
    assert content_type.endswith(f"transfer-syntax={syntax}")
    from pydicom.encaps import generate_frames

    assert body == next(generate_frames(original.PixelData, number_of_frames=1))


def test_an_unservable_syntax_is_refused_with_406(world, study):
    response = client_for(world.gp.user).get(
        reverse(
            "dicomweb-frames", args=[study["study_uid"], study["series_uid"], study["sop_uid"], "1"]
        ),
        HTTP_ACCEPT='multipart/related; type="image/jp2"; transfer-syntax=1.2.840.10008.1.2.4.90',
    )
    assert response.status_code == 406


def test_rendered_and_thumbnail_images(world, study):
    client = client_for(world.gp.user)
    for name, args in (
        ("dicomweb-instance-rendered", [study["study_uid"], study["series_uid"], study["sop_uid"]]),
        ("dicomweb-study-thumbnail", [study["study_uid"]]),
    ):
        response = client.get(
            reverse(name, args=args), {"window": "40,400"}, HTTP_ACCEPT="image/png"
        )
        assert response.status_code == 200
        assert response.content[:8] == b"\x89PNG\r\n\x1a\n"
        # JPEG is the default of rendered resources (PS3.18 §8.7.4).
        default = client.get(reverse(name, args=args))
        assert default["Content-Type"] == "image/jpeg"
        assert default.content[:3] == b"\xff\xd8\xff"


def test_access_is_audited_once_per_study_and_window(world, study):
    client = client_for(world.gp.user)
    url = reverse(
        "dicomweb-frames", args=[study["study_uid"], study["series_uid"], study["sop_uid"], "1"]
    )
    for _ in range(5):
        client.get(url, HTTP_ACCEPT=OCTETS)
    events = AuditEvent.objects.filter(
        event_id=AuditEventId.INSTANCES_ACCESSED, actor=world.gp.user
    )
    assert events.count() == 1
    assert events.get().patient == world.patient


def test_stow_stores_for_a_visible_patient_and_refuses_others(world, study):
    mine = ct_files(world.patient, key="stow-mine", slices=1)[0]
    theirs = ct_files(world.other_patient, key="stow-theirs", slices=1, ipp="B100002", issuer="")[0]
    boundary = "xyz"
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
            for part in (mine, theirs)
        )
        + f"--{boundary}--\r\n".encode()
    )
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.oncologist.user)
    client.get(reverse("home"))
    headers = {"HTTP_X_CSRFTOKEN": client.cookies["csrftoken"].value}
    response = client.post(
        reverse("dicomweb-studies"),
        body,
        content_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
        **headers,
    )
    assert response.status_code == 202
    answer = response.json()
    stored = [item["00081155"]["Value"][0] for item in answer["00081199"]["Value"]]
    failed = [item["00081155"]["Value"][0] for item in answer["00081198"]["Value"]]
    assert stored == [uid("stow-mine", "instance", 0)]
    assert failed == [uid("stow-theirs", "instance", 0)]
    with pytest.raises(Exception):  # noqa: B017, PT011 - the refused one is not archived
        get_archive().retrieve_instance(
            uid("stow-theirs", "study"),
            uid("stow-theirs", "series"),
            uid("stow-theirs", "instance", 0),
        )


def test_stow_from_a_browser_session_needs_the_csrf_token(world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.oncologist.user)
    data = ct_files(world.patient, key="stow-csrf", slices=1)[0]
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--b--\r\n"
    response = client.post(
        reverse("dicomweb-studies"),
        body,
        content_type='multipart/related; type="application/dicom"; boundary=b',
    )
    assert response.status_code == 403


def test_revoked_and_expired_tokens_stop_working(world, study):
    token, raw = viewer_token_issue(by=Actor(user=world.gp.user), study=study["study"])
    url = reverse("dicomweb-study-metadata", args=[study["study_uid"]])
    assert Client().get(url, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    assert Client().get(url, {"token": raw}).status_code == 200
    ViewerToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - dt.timedelta(1))
    assert Client().get(url, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401
    token2, raw2 = viewer_token_issue(by=Actor(user=world.gp.user), study=study["study"])
    client_for(world.gp.user).post(reverse("viewer-link-revoke", args=[token2.pk]))
    assert Client().get(url, HTTP_AUTHORIZATION=f"Bearer {raw2}").status_code == 401
    assert Client().get(url, HTTP_AUTHORIZATION="Bearer forged").status_code == 401


def test_a_token_dies_with_its_owners_access(world, study):
    from portal.models import CareRelationship
    from portal.services import care_relationship_end

    _token, raw = viewer_token_issue(by=Actor(user=world.gp.user), study=study["study"])
    url = reverse("dicomweb-study-metadata", args=[study["study_uid"]])
    relationship = CareRelationship.objects.get(patient=world.patient, professional=world.gp)
    care_relationship_end(relationship=relationship, by=Actor.system("tests"))
    assert Client().get(url, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 404


def test_an_unanswering_archive_gives_503(world, study, settings):
    settings.ARCHIVE_URL = "http://127.0.0.1:9/dicom-web"
    settings.ARCHIVE_TIMEOUT = 0.5
    response = client_for(world.gp.user).get(
        reverse("dicomweb-study-series", args=[study["study_uid"]])
    )
    assert response.status_code == 503
    assert response["Retry-After"]


def test_the_viewer_link_page_shows_the_token_once(world, study):
    client = client_for(world.gp.user)
    page = client.post(reverse("viewer-link-create", args=[study["study"].pk]))
    html = page.content.decode()
    token = ViewerToken.objects.get()
    assert "weasis://" in html and token.token_hash not in html
    assert token.expires_at > timezone.now()


def test_reading_ahead_warms_the_whole_series(world, study, settings):
    from imaging.frames import warm_series
    from imaging.models import Instance

    assert warm_series(study["study_uid"], study["series_uid"]) == 2
    # The archive is gone: every frame of the series still comes, from the cache.
    settings.ARCHIVE_URL = "http://127.0.0.1:9/dicom-web"
    settings.ARCHIVE_TIMEOUT = 0.5
    client = client_for(world.gp.user)
    for sop in Instance.objects.filter(series__series_instance_uid=study["series_uid"]):
        response = client.get(
            reverse(
                "dicomweb-frames",
                args=[study["study_uid"], study["series_uid"], sop.sop_instance_uid, "1"],
            ),
            HTTP_ACCEPT=OCTETS,
        )
        assert response.status_code == 200
    settings.ARCHIVE_URL = ""
    assert warm_series(study["study_uid"], study["series_uid"]) == 0  # nothing left to do


def _frames_url(study, frames: str) -> str:
    return reverse(
        "dicomweb-frames",
        args=[study["study_uid"], study["series_uid"], study["sop_uid"], frames],
    )


def test_a_frame_asked_many_times_is_refused_not_multiplied(world, study):
    """A 1 KB URL repeating one frame once built a 210 MB answer."""
    client = client_for(world.gp.user)
    response = client.get(_frames_url(study, ",".join(["1"] * 300)), HTTP_ACCEPT=OCTETS)
    assert response.status_code == 400
    assert "once" in response.json()["error"]


def test_frames_requests_are_capped_in_count_and_bytes(world, study, settings):
    client = client_for(world.gp.user)
    settings.DICOMWEB_MAX_FRAMES_PER_REQUEST = 1
    response = client.get(_frames_url(study, "1,2"), HTTP_ACCEPT=OCTETS)
    assert response.status_code == 413
    assert "at most 1 frames" in response.json()["error"]
    settings.DICOMWEB_MAX_FRAMES_PER_REQUEST = 1000
    settings.DICOMWEB_MAX_ANSWER_BYTES = 1000  # one 32x32 16-bit frame is 2,048 bytes
    response = client.get(_frames_url(study, "1"), HTTP_ACCEPT=OCTETS)
    assert response.status_code == 413
    assert "exceed" in response.json()["error"]


def test_frames_answers_are_streamed_part_by_part(world, study):
    response = client_for(world.gp.user).get(_frames_url(study, "1"), HTTP_ACCEPT=OCTETS)
    assert response.status_code == 200
    assert response.streaming
    ((content_type, frame),) = parts_of(response)
    assert content_type.startswith("application/octet-stream")
    assert len(frame) == 32 * 32 * 2


def test_refused_tokens_are_audited_once_a_minute_per_address_against_their_patient(world, study):
    import time_machine

    token, raw = viewer_token_issue(by=Actor(user=world.gp.user), study=study["study"])
    ViewerToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    url = _frames_url(study, "1")

    def refusals(**filters):
        return AuditEvent.objects.filter(
            event_id=AuditEventId.SECURITY_ALERT, detail__reason__isnull=False, **filters
        ).count()

    with time_machine.travel(dt.datetime(2026, 12, 1, 10, 0, 5, tzinfo=dt.UTC), tick=False):
        for _ in range(50):
            assert Client().get(url, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401
        for _ in range(20):
            assert Client().get(url, HTTP_AUTHORIZATION="Bearer forged").status_code == 401
    assert refusals(patient=world.patient, object_id=str(token.pk)) == 1
    event = AuditEvent.objects.get(
        patient=world.patient, object_id=str(token.pk), detail__reason__isnull=False
    )
    assert event.detail["reason"] == "revoked viewer token"
    assert event.actor == world.gp.user
    assert refusals(object_type="dicomweb") == 1
    with time_machine.travel(dt.datetime(2026, 12, 1, 10, 1, 5, tzinfo=dt.UTC), tick=False):
        assert Client().get(url, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401
    assert refusals(patient=world.patient, object_id=str(token.pk)) == 2

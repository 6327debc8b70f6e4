"""DICOMweb conformance, told by a real client: ``dicomweb-client`` against the running portal.

Every story runs twice (the ``archive`` fixture): with the embedded archive, and with a real
Orthanc behind the portal. The portal answers over real HTTP (pytest-django's
``live_server``), and viewers authenticate as they do in practice: with a viewer token
(``Authorization: Bearer``) or with their portal session cookie, plus the CSRF token when
they store (STOW-RS). What is checked is what PS3.18 asks of an origin server: the
transactions of §10.4 (WADO-RS), §10.5 (STOW-RS) and §10.6 (QIDO-RS), and the media types
of §8.7; and what the portal adds: a caller sees only their patients' studies, and never
learns where the archive is.

``dicomweb-client`` 0.61 sends ``Host`` without the port (``headers['Host'] = self.host``),
so the URLs the portal builds for it name the live server's host but not its port: the
links below are checked by host and path.
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import io
import socket
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from django.conf import settings as django_settings
from django.core.cache import caches
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import pack_bits, unpack_bits

from imaging.archive import get_archive
from imaging.models import IngestItem, Instance, Study, ViewerToken
from imaging.services import (
    ingest_batch_create,
    ingest_run,
    viewer_token_issue,
    viewer_token_revoke,
)
from portal.audit import Actor
from tests.dicom_factory import ct_files, uid

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # Metadata carries Pixel Data as a BulkDataURI, which pydicom's from_json does not fetch.
    pytest.mark.filterwarnings("ignore:No bulk data URI handler:UserWarning"),
]

DICOM_JSON = "application/dicom+json"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
HTTP_TIMEOUT = 30  # seconds for one answer of the portal (Orthanc answers behind it)


# --- The archive behind the portal ------------------------------------------------------------


@pytest.fixture(params=["local", "orthanc"], autouse=True)
def archive(request, settings):
    """The portal in front of the embedded archive, then in front of a real Orthanc.

    ``get_archive()`` is cached per settings values, and the live server's thread reads the
    same settings: overriding ``ARCHIVE_URL`` is enough to switch archives.
    """
    caches["frames"].clear()  # frames are cached by SOPInstanceUID, the same in both runs
    if request.param == "local":
        settings.ARCHIVE_URL = ""
        yield None
    else:
        orthanc = request.getfixturevalue("orthanc")
        orthanc.reset()
        settings.ARCHIVE_URL = orthanc.url
        settings.ARCHIVE_TIMEOUT = 10.0
        yield orthanc
        orthanc.reset()
    caches["frames"].clear()


# --- Studies of the world, ingested through the portal ---------------------------------------


@dataclass(frozen=True)
class Imaged:
    """A study as the portal received it: the exact files, and their UIDs."""

    files: list[bytes]

    def dataset(self, index: int = 0) -> Dataset:
        return pydicom.dcmread(io.BytesIO(self.files[index]))

    @property
    def study_uid(self) -> str:
        return str(self.dataset().StudyInstanceUID)

    @property
    def series_uid(self) -> str:
        return str(self.dataset().SeriesInstanceUID)

    @property
    def sop_uids(self) -> list[str]:
        return [str(self.dataset(n).SOPInstanceUID) for n in range(len(self.files))]

    @property
    def sop_uid(self) -> str:
        return self.sop_uids[0]

    @property
    def record(self) -> Study:
        return Study.objects.get(study_instance_uid=self.study_uid)


def ingested(patient, *, by, files: list[bytes]) -> Imaged:
    """Upload ``files`` for ``patient`` through the portal's ingest, as ``by`` does."""
    batch = ingest_batch_create(
        patient=patient,
        files=[SimpleUploadedFile(f"{n}.dcm", data) for n, data in enumerate(files)],
        by=Actor(user=by),
    )
    ingest_run(batch=batch)
    outcomes = list(batch.items.values_list("status", "reason"))
    assert {status for status, _reason in outcomes} == {IngestItem.Status.ACCEPTED}, outcomes
    return Imaged(files)


def part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture
def thorax_ct(world) -> Imaged:
    """Jeanne Dupont's chest CT at the CHRU de Tours: two slices, 5 October 2026."""
    files = ct_files(world.patient, key="conformance-thorax", slices=2)
    return ingested(world.patient, by=world.oncologist.user, files=files)


@pytest.fixture
def follow_up_ct(world) -> Imaged:
    """Her follow-up CT two months later: one slice."""
    files = ct_files(
        world.patient,
        key="conformance-follow-up",
        slices=1,
        study_date=dt.date(2026, 12, 14),
        description="TDM thorax de contrôle",
    )
    return ingested(world.patient, by=world.oncologist.user, files=files)


@pytest.fixture
def bourges_ct(world) -> Imaged:
    """Another patient's CT at Bourges, which only the outsider follows."""
    files = ct_files(
        world.other_patient, key="conformance-bourges", slices=1, ipp="B100002", issuer=""
    )
    return ingested(world.other_patient, by=world.outsider.user, files=files)


def compressed_ct(world, syntax: str) -> Imaged:
    """A 64x64 slice of Jeanne Dupont compressed losslessly in ``syntax``, then ingested."""
    original = pydicom.dcmread(
        io.BytesIO(ct_files(world.patient, key=f"conformance-{syntax}", slices=1, size=64)[0])
    )
    original.compress(syntax, generate_instance_uid=False)
    return ingested(world.patient, by=world.oncologist.user, files=[part10(original)])


# --- Viewers: dicomweb-client on an authenticated requests session --------------------------


@dataclass
class Viewer:
    """One caller's DICOMweb client, and every HTTP answer it received."""

    client: DICOMwebClient
    session: requests.Session
    answers: list[requests.Response] = field(default_factory=list)

    @property
    def answer(self) -> requests.Response:
        return self.answers[-1]


class Portal:
    """The running portal, and viewers of its DICOMweb service at ``/dicomweb``."""

    def __init__(self, live_server):
        self.url = live_server.url
        self.host = urlparse(self.url).hostname
        self.sessions: list[requests.Session] = []

    def _viewer(self, session: requests.Session) -> Viewer:
        self.sessions.append(session)
        client = DICOMwebClient(url=f"{self.url}/dicomweb", session=session, timeout=HTTP_TIMEOUT)
        # A 503 is reported at once, not retried five times with exponential back-off.
        client.set_http_retry_params(retry=False)
        viewer = Viewer(client, session)
        session.hooks["response"].append(lambda answer, *a, **kw: viewer.answers.append(answer))
        return viewer

    def anonymous(self) -> Viewer:
        return self._viewer(requests.Session())

    def with_token(self, raw: str) -> Viewer:
        """An external viewer launched with a viewer token."""
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {raw}"
        return self._viewer(session)

    def signed_in(self, user, *, csrf: bool = True) -> Viewer:
        """The portal's own viewer in ``user``'s browser: their session cookie and, as the
        portal's pages give it, the CSRF token that lets them store."""
        browser = Client()
        browser.force_login(user)
        session = requests.Session()
        cookie = django_settings.SESSION_COOKIE_NAME
        # No domain: http.cookiejar files a dotless host as "localhost.local", and a cookie
        # set for "localhost" would never be sent back. This session talks to the portal only.
        session.cookies.set(cookie, browser.cookies[cookie].value, path="/")
        if csrf:
            page = session.get(self.url + reverse("home"), timeout=HTTP_TIMEOUT)
            page.raise_for_status()
            session.headers["X-CSRFToken"] = session.cookies[django_settings.CSRF_COOKIE_NAME]
        return self._viewer(session)

    def close(self) -> None:
        for session in self.sessions:
            session.close()


@pytest.fixture
def portal(live_server):
    running = Portal(live_server)
    yield running
    running.close()


def token_for(user, study: Study) -> str:
    _token, raw = viewer_token_issue(by=Actor(user=user), study=study)
    return raw


# --- Reading answers --------------------------------------------------------------------------


def media_type(answer: requests.Response) -> tuple[str, dict[str, str]]:
    """The media type of an answer and its parameters (boundary left out)."""
    main, *parameters = (piece.strip() for piece in answer.headers["Content-Type"].split(";"))
    values = {}
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        values[name.strip().lower()] = value.strip().strip('"')
    values.pop("boundary", None)
    return main.lower(), values


def part_types(answer: requests.Response) -> list[tuple[str, dict[str, str]]]:
    """The media type of each part of a multipart/related answer, with its transfer syntax."""
    raw = f"Content-Type: {answer.headers['Content-Type']}\r\n\r\n".encode() + answer.content
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    types = []
    for part in message.iter_parts():
        syntax = part.get_param("transfer-syntax")
        types.append((part.get_content_type(), {"transfer-syntax": syntax} if syntax else {}))
    return types


def study_uids(results: list[dict]) -> list[str]:
    return [str(Dataset.from_json(result).StudyInstanceUID) for result in results]


def sop_uids(results) -> list[str]:
    return [
        str((Dataset.from_json(r) if isinstance(r, dict) else r).SOPInstanceUID) for r in results
    ]


def links(value) -> list[str]:
    """Every RetrieveURL (0008,1190) and BulkDataURI in a DICOM JSON answer, at any depth."""
    found = []
    if isinstance(value, list):
        for item in value:
            found += links(item)
    elif isinstance(value, dict):
        for tag, element in value.items():
            if not isinstance(element, dict):
                continue
            if "BulkDataURI" in element:
                found.append(element["BulkDataURI"])
            if tag == "00081190":
                found += element.get("Value", [])
            for item in element.get("Value", []) if element.get("vr") == "SQ" else []:
                found += links(item)
    return found


def assert_on_the_portal(portal: Portal, url: str, path: str) -> None:
    parsed = urlparse(url)
    assert (parsed.scheme, parsed.hostname, parsed.path) == ("http", portal.host, path), url


def archive_addresses(archive) -> list[str]:
    """What would tell a caller where the archive is."""
    if archive is None:
        return [str(django_settings.ARCHIVE_ROOT)]
    rest = urlparse(archive.rest)
    return [archive.url, archive.rest, f"{rest.hostname}:{rest.port}", "/dicom-web"]


def refusal(call, *args, **kwargs) -> requests.Response:
    """The HTTP error answer dicomweb-client raised for ``call(*args, **kwargs)``."""
    with pytest.raises(requests.HTTPError) as raised:
        call(*args, **kwargs)
    return raised.value.response


def dicomweb_path(*uids: str, tail: str = "") -> str:
    names = ("studies", "series", "instances")
    return "/dicomweb/" + "/".join(f"{n}/{u}" for n, u in zip(names, uids, strict=False)) + tail


# --- QIDO-RS: searching (PS3.18 §10.6) --------------------------------------------------------


def test_the_gp_finds_their_patients_studies_and_no_one_elses(
    portal, world, thorax_ct, follow_up_ct, bourges_ct
):
    gp = portal.signed_in(world.gp.user, csrf=False)
    search = gp.client.search_for_studies

    found = search()
    assert study_uids(found) == [follow_up_ct.study_uid, thorax_ct.study_uid]  # newest first
    assert media_type(gp.answer) == (DICOM_JSON, {})
    newest = Dataset.from_json(found[0])
    assert newest.PatientID == "T100001"
    assert newest.IssuerOfPatientID == "CHRU-TOURS"
    assert newest.ModalitiesInStudy == "CT"
    assert newest.NumberOfStudyRelatedInstances == 1
    assert_on_the_portal(portal, newest.RetrieveURL, dicomweb_path(follow_up_ct.study_uid))

    both = [follow_up_ct.study_uid, thorax_ct.study_uid]
    assert study_uids(search(search_filters={"PatientID": "T100001"})) == both
    assert study_uids(search(search_filters={"PatientName": "DUPONT*"})) == both
    assert study_uids(search(search_filters={"ModalitiesInStudy": "CT"})) == both
    assert study_uids(search(search_filters={"StudyDate": "20261001-20261031"})) == [
        thorax_ct.study_uid
    ]
    assert study_uids(search(search_filters={"StudyInstanceUID": thorax_ct.study_uid})) == [
        thorax_ct.study_uid
    ]
    # The other patient's study exists, and the GP's searches never find it.
    assert search(search_filters={"PatientID": "B100002"}) == []
    assert search(search_filters={"StudyInstanceUID": bourges_ct.study_uid}) == []

    # Page by page: the outsider's study is not a third page.
    assert study_uids(search(limit=1)) == [follow_up_ct.study_uid]
    assert study_uids(search(limit=1, offset=1)) == [thorax_ct.study_uid]
    assert search(limit=1, offset=2) == []
    # dicomweb-client pages on its own until an empty page.
    assert study_uids(search(limit=1, get_remaining=True)) == both


def test_a_viewer_lists_the_series_and_instances_of_a_study(portal, world, thorax_ct):
    viewer = portal.with_token(token_for(world.gp.user, thorax_ct.record))

    (series,) = viewer.client.search_for_series(thorax_ct.study_uid)
    assert media_type(viewer.answer) == (DICOM_JSON, {})
    series = Dataset.from_json(series)
    assert series.SeriesInstanceUID == thorax_ct.series_uid
    assert series.Modality == "CT"
    assert series.NumberOfSeriesRelatedInstances == 2
    assert (
        viewer.client.search_for_series(thorax_ct.study_uid, search_filters={"Modality": "MR"})
        == []
    )

    instances = viewer.client.search_for_instances(thorax_ct.study_uid)
    assert media_type(viewer.answer) == (DICOM_JSON, {})
    assert sop_uids(instances) == thorax_ct.sop_uids
    assert [Dataset.from_json(i).InstanceNumber for i in instances] == [1, 2]
    in_series = viewer.client.search_for_instances(thorax_ct.study_uid, thorax_ct.series_uid)
    assert sop_uids(in_series) == thorax_ct.sop_uids


def test_a_viewer_narrows_series_and_instances_by_number(portal, world, thorax_ct):
    client = portal.with_token(token_for(world.gp.user, thorax_ct.record)).client
    # SeriesNumber and InstanceNumber are matching attributes every origin server supports
    # (PS3.18 §10.6.1.2.3), whichever archive is behind the portal.
    (series,) = client.search_for_series(thorax_ct.study_uid, search_filters={"SeriesNumber": "1"})
    assert Dataset.from_json(series).SeriesInstanceUID == thorax_ct.series_uid
    second = client.search_for_instances(
        thorax_ct.study_uid, thorax_ct.series_uid, search_filters={"InstanceNumber": "2"}
    )
    assert sop_uids(second) == thorax_ct.sop_uids[1:]


def test_a_study_search_on_a_required_key_does_not_match_everything(portal, world, thorax_ct):
    search = portal.signed_in(world.gp.user, csrf=False).client.search_for_studies
    # StudyID and ReferringPhysicianName are required study matching attributes (PS3.18
    # §10.6.1.2.3): ignoring them would show a viewer looking for one study all the others.
    assert search(search_filters={"StudyID": "NOT-THIS-ONE"}) == []
    assert search(search_filters={"ReferringPhysicianName": "NOBODY^NOT"}) == []


def test_search_results_link_to_the_portal_and_never_to_the_archive(
    portal, world, thorax_ct, archive
):
    viewer = portal.with_token(token_for(world.gp.user, thorax_ct.record))
    study, series = thorax_ct.study_uid, thorax_ct.series_uid

    series_results = viewer.client.search_for_series(study)
    series_text = viewer.answer.text
    instance_results = viewer.client.search_for_instances(study)
    instance_text = viewer.answer.text
    for address in archive_addresses(archive):
        assert address not in series_text + instance_text

    # PS3.18 Tables 10.6.3-4 and 10.6.3-5 require a Retrieve URL (0008,1190) in each series
    # and instance result: the portal's own, never the archive's.
    ((url,),) = [links(result) for result in series_results]
    assert_on_the_portal(portal, url, dicomweb_path(study, series))
    for result, sop in zip(instance_results, thorax_ct.sop_uids, strict=True):
        (url,) = links(result)
        assert_on_the_portal(portal, url, dicomweb_path(study, series, sop))


# --- WADO-RS: metadata (PS3.18 §10.4.1.1.2) ---------------------------------------------------


def test_metadata_describes_each_instance_without_pixels_or_archive_addresses(
    portal, world, thorax_ct, archive
):
    viewer = portal.with_token(token_for(world.gp.user, thorax_ct.record))
    study, series, sop = thorax_ct.study_uid, thorax_ct.series_uid, thorax_ct.sop_uid

    for call, args, expected in (
        (viewer.client.retrieve_study_metadata, [study], thorax_ct.sop_uids),
        (viewer.client.retrieve_series_metadata, [study, series], thorax_ct.sop_uids),
        (viewer.client.retrieve_instance_metadata, [study, series, sop], [sop]),
    ):
        answer = call(*args)
        if isinstance(answer, dict):  # retrieve_instance_metadata unwraps the one dataset
            answer = [answer]
        assert media_type(viewer.answer) == (DICOM_JSON, {})
        assert sorted(sop_uids(answer)) == sorted(expected)
        for instance in answer:
            # Pixel Data is bulk data: a BulkDataURI on the portal, never the bytes inline.
            assert set(instance["7FE00010"]) == {"vr", "BulkDataURI"}
            for url in links(instance):
                assert urlparse(url).hostname == portal.host, url
        for address in archive_addresses(archive):
            assert address not in viewer.answer.text

    # The attributes are those of the file the portal received.
    described = Dataset.from_json(viewer.client.retrieve_instance_metadata(study, series, sop))
    stored = thorax_ct.dataset(0)
    for keyword in (
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "StudyDate",
        "StudyDescription",
        "Modality",
        "Rows",
        "Columns",
        "BitsAllocated",
        "WindowCenter",
    ):
        assert described[keyword].value == stored[keyword].value, keyword


# --- WADO-RS: instances, series, studies (PS3.18 §10.4) ---------------------------------------


def test_an_instance_its_series_and_its_study_come_back_as_stored(portal, world, thorax_ct):
    viewer = portal.with_token(token_for(world.gp.user, thorax_ct.record))
    study, series, sop = thorax_ct.study_uid, thorax_ct.series_uid, thorax_ct.sop_uid
    stored = {sop: thorax_ct.dataset(n) for n, sop in enumerate(thorax_ct.sop_uids)}

    # dicomweb-client asks for an instance with ("application/dicom", "*"): as stored.
    instance = viewer.client.retrieve_instance(study, series, sop)
    assert media_type(viewer.answer) == ("multipart/related", {"type": "application/dicom"})
    assert part_types(viewer.answer) == [("application/dicom", {"transfer-syntax": EXPLICIT_LE})]
    assert instance == stored[sop]
    assert instance.PixelData == stored[sop].PixelData
    assert instance.file_meta.TransferSyntaxUID == EXPLICIT_LE

    for retrieved in (
        viewer.client.retrieve_series(study, series),
        viewer.client.retrieve_study(study),
    ):
        assert media_type(viewer.answer) == ("multipart/related", {"type": "application/dicom"})
        assert (
            part_types(viewer.answer)
            == [("application/dicom", {"transfer-syntax": EXPLICIT_LE})] * 2
        )
        assert sorted(sop_uids(retrieved)) == sorted(stored)
        for instance in retrieved:
            assert instance == stored[str(instance.SOPInstanceUID)]


def test_an_instance_asked_in_explicit_vr_little_endian_is_served(portal, world, thorax_ct):
    viewer = portal.with_token(token_for(world.gp.user, thorax_ct.record))
    # Explicit VR Little Endian is the default every origin server must serve (PS3.18
    # §8.7.3.4), here the very syntax this instance is stored in.
    instance = viewer.client.retrieve_instance(
        thorax_ct.study_uid,
        thorax_ct.series_uid,
        thorax_ct.sop_uid,
        media_types=(("application/dicom", EXPLICIT_LE),),
    )
    assert instance == thorax_ct.dataset(0)


def test_a_compressed_instance_asked_without_a_syntax_comes_in_the_default_one(portal, world):
    jpeg_2000 = compressed_ct(world, JPEG_2000_LOSSLESS)
    viewer = portal.signed_in(world.gp.user, csrf=False)
    # Without a transfer-syntax parameter the answer is in Explicit VR Little Endian (PS3.18
    # §8.7.3.4: every origin server converts lossless compressed pixel data).
    instance = viewer.client.retrieve_instance(
        jpeg_2000.study_uid,
        jpeg_2000.series_uid,
        jpeg_2000.sop_uid,
        media_types=("application/dicom",),
    )
    assert instance.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert np.array_equal(instance.pixel_array, jpeg_2000.dataset().pixel_array)


# --- WADO-RS: frames (PS3.18 §10.4.1.1.3, media types §8.7.3) ---------------------------------


def test_native_frames_are_the_stored_pixel_bytes(portal, world, thorax_ct):
    viewer = portal.with_token(token_for(world.gp.user, thorax_ct.record))
    study, series = thorax_ct.study_uid, thorax_ct.series_uid

    for n, sop in enumerate(thorax_ct.sop_uids):
        frames = viewer.client.retrieve_instance_frames(
            study, series, sop, [1], media_types=(("application/octet-stream", EXPLICIT_LE),)
        )
        assert frames == [thorax_ct.dataset(n).PixelData]
        assert media_type(viewer.answer) == (
            "multipart/related",
            {"type": "application/octet-stream", "transfer-syntax": EXPLICIT_LE},
        )
        assert part_types(viewer.answer) == [
            ("application/octet-stream", {"transfer-syntax": EXPLICIT_LE})
        ]
    # A frame beyond the last of an instance that exists is a bad request (PS3.18 Table
    # 8.6.3-1, as Orthanc answers it), not a missing resource nor a server error.
    beyond = refusal(viewer.client.retrieve_instance_frames, study, series, thorax_ct.sop_uid, [2])
    assert beyond.status_code == 400
    assert "beyond the last frame" in beyond.json()["error"]
    for frames in ([1, 2], [3]):
        answer = viewer.session.get(
            portal.url
            + dicomweb_path(study, series, thorax_ct.sop_uid, tail="/frames/")
            + ",".join(map(str, frames)),
            headers={"Accept": 'multipart/related; type="application/octet-stream"'},
            timeout=HTTP_TIMEOUT,
        )
        assert answer.status_code == 400, frames
    rendered = viewer.session.get(
        portal.url + dicomweb_path(study, series, thorax_ct.sop_uid, tail="/frames/2/rendered"),
        headers={"Accept": "image/png"},
        timeout=HTTP_TIMEOUT,
    )
    assert rendered.status_code == 400
    # An instance that is not there is still not found.
    missing = refusal(viewer.client.retrieve_instance_frames, study, series, "1.2.3.4", [1])
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("syntax", "frame_media_type"),
    [(JPEG_2000_LOSSLESS, "image/jp2"), (RLE_LOSSLESS, "image/dicom-rle")],
    ids=["jpeg-2000", "rle"],
)
def test_compressed_frames_come_decoded_or_as_stored(portal, world, syntax, frame_media_type):
    compressed = compressed_ct(world, syntax)
    viewer = portal.signed_in(world.gp.user, csrf=False)
    stored = compressed.dataset()
    frame = [compressed.study_uid, compressed.series_uid, compressed.sop_uid, [1]]

    # A viewer without a decoder asks for native pixels: the portal decodes.
    (native,) = viewer.client.retrieve_instance_frames(
        *frame, media_types=(("application/octet-stream", EXPLICIT_LE),)
    )
    assert media_type(viewer.answer) == (
        "multipart/related",
        {"type": "application/octet-stream", "transfer-syntax": EXPLICIT_LE},
    )
    decoded = np.frombuffer(native, dtype="<u2").reshape(64, 64)
    assert np.array_equal(decoded, stored.pixel_array)

    # A viewer that decodes takes the frame as stored, with any syntax...
    as_stored = next(generate_frames(stored.PixelData, number_of_frames=1))
    assert viewer.client.retrieve_instance_frames(
        *frame, media_types=(("application/octet-stream", "*"),)
    ) == [as_stored]
    assert media_type(viewer.answer)[1]["transfer-syntax"] == syntax

    # ...or naming the media type PS3.18 §8.7.3 gives frames in that syntax.
    # RLE frames are "image/dicom-rle" in PS3.18 and dicomweb-client (older editions said
    # "image/x-dicom-rle", still accepted).
    assert viewer.client.retrieve_instance_frames(
        *frame, media_types=((frame_media_type, syntax),)
    ) == [as_stored]
    assert media_type(viewer.answer) == (
        "multipart/related",
        {"type": frame_media_type, "transfer-syntax": syntax},
    )
    assert part_types(viewer.answer) == [(frame_media_type, {"transfer-syntax": syntax})]


# --- WADO-RS: rendered resources (PS3.18 §10.4.1.1.4, §8.7.4) --------------------------------


def test_rendered_images_and_thumbnails_are_png(portal, world, thorax_ct):
    viewer = portal.with_token(token_for(world.gp.user, thorax_ct.record))
    study, series, sop = thorax_ct.study_uid, thorax_ct.series_uid, thorax_ct.sop_uid

    rendered = viewer.client.retrieve_instance_rendered(
        study, series, sop, media_types=("image/png",), params={"window": "40,400"}
    )
    assert rendered.startswith(PNG_SIGNATURE)
    assert media_type(viewer.answer) == ("image/png", {})
    frame = viewer.client.retrieve_instance_frames_rendered(
        study, series, sop, [1], media_types=("image/png",)
    )
    assert frame.startswith(PNG_SIGNATURE)

    # dicomweb-client 0.61 has no thumbnail call: the same session asks for them.
    for path in (
        dicomweb_path(study, tail="/thumbnail"),
        dicomweb_path(study, series, tail="/thumbnail"),
        dicomweb_path(study, series, sop, tail="/thumbnail"),
    ):
        thumbnail = viewer.session.get(
            portal.url + path, headers={"Accept": "image/png"}, timeout=HTTP_TIMEOUT
        )
        assert thumbnail.status_code == 200, path
        assert media_type(thumbnail) == ("image/png", {})
        assert thumbnail.content.startswith(PNG_SIGNATURE)


def test_a_viewer_asking_for_a_jpeg_rendering_gets_a_jpeg(portal, world, thorax_ct):
    viewer = portal.with_token(token_for(world.gp.user, thorax_ct.record))
    # image/jpeg is the default rendered media type of single-frame images, which every
    # origin server supports (PS3.18 §8.7.4).
    rendered = viewer.client.retrieve_instance_rendered(
        thorax_ct.study_uid, thorax_ct.series_uid, thorax_ct.sop_uid, media_types=("image/jpeg",)
    )
    assert media_type(viewer.answer) == ("image/jpeg", {})
    assert rendered.startswith(JPEG_SIGNATURE)


# --- STOW-RS (PS3.18 §10.5) -------------------------------------------------------------------


def new_image(patient, key: str, **identity) -> Dataset:
    return pydicom.dcmread(io.BytesIO(ct_files(patient, key=key, slices=1, **identity)[0]))


def test_the_oncologist_stores_a_new_image_from_the_portal(portal, world):
    image = new_image(world.patient, "conformance-stow")
    study, series, sop = image.StudyInstanceUID, image.SeriesInstanceUID, image.SOPInstanceUID

    # A browser session stores only with the CSRF token the portal's pages hold.
    forged = portal.signed_in(world.oncologist.user, csrf=False)
    assert refusal(forged.client.store_instances, [image]).status_code == 403
    assert not Instance.objects.filter(sop_instance_uid=sop).exists()

    oncologist = portal.signed_in(world.oncologist.user)
    answer = oncologist.client.store_instances([image])
    assert oncologist.answer.status_code == 200
    assert media_type(oncologist.answer) == (DICOM_JSON, {})
    assert "FailedSOPSequence" not in answer
    (stored,) = answer.ReferencedSOPSequence
    assert stored.ReferencedSOPInstanceUID == sop
    assert_on_the_portal(portal, stored.RetrieveURL, dicomweb_path(study, series, sop))

    # The patient's GP finds it and gets it back as it was sent.
    gp = portal.signed_in(world.gp.user, csrf=False)
    assert study_uids(gp.client.search_for_studies(search_filters={"StudyInstanceUID": study})) == [
        study
    ]
    assert gp.client.retrieve_instance(study, series, sop) == image
    assert Study.objects.get(study_instance_uid=study).patient == world.patient


def test_stow_for_a_patient_the_caller_may_not_see_is_refused(portal, world, thorax_ct):
    theirs = new_image(world.other_patient, "conformance-stow-theirs", ipp="B100002", issuer="")
    viewer = portal.with_token(token_for(world.gp.user, thorax_ct.record))

    refused = refusal(viewer.client.store_instances, [theirs])
    assert refused.status_code == 409  # none stored (PS3.18 §10.5.3)
    assert media_type(refused) == (DICOM_JSON, {})
    answer = Dataset.from_json(refused.json())
    assert "ReferencedSOPSequence" not in answer
    (failed,) = answer.FailedSOPSequence
    assert failed.ReferencedSOPInstanceUID == theirs.SOPInstanceUID
    assert failed.FailureReason == 0x0124  # refused: not authorized

    # Nothing reached the archive or the portal's index.
    assert get_archive().search_instances(str(theirs.StudyInstanceUID)) == []
    assert not Instance.objects.filter(sop_instance_uid=theirs.SOPInstanceUID).exists()


def test_stow_to_a_study_refuses_instances_of_another_study(portal, world, thorax_ct):
    stray = new_image(world.patient, "conformance-stray")
    oncologist = portal.signed_in(world.oncologist.user)

    refused = refusal(
        oncologist.client.store_instances, [stray], study_instance_uid=thorax_ct.study_uid
    )
    assert refused.status_code == 409
    (failed,) = Dataset.from_json(refused.json()).FailedSOPSequence
    assert failed.ReferencedSOPInstanceUID == stray.SOPInstanceUID
    # An instance of another study is refused before anything is stored: it is neither in
    # the archive nor in the index.
    assert get_archive().search_instances(str(stray.StudyInstanceUID)) == []
    assert not Instance.objects.filter(sop_instance_uid=stray.SOPInstanceUID).exists()


# --- Who may ask ------------------------------------------------------------------------------


def test_the_outsider_cannot_tell_the_study_exists(portal, world, thorax_ct, bourges_ct):
    outsider = portal.signed_in(world.outsider.user, csrf=False)
    client = outsider.client
    assert study_uids(client.search_for_studies()) == [bourges_ct.study_uid]
    assert client.search_for_studies(search_filters={"PatientID": "T100001"}) == []

    series, sop = thorax_ct.series_uid, thorax_ct.sop_uid
    unknown = "1.2.826.0.1.3680043.8.498.1"
    for call, *args in (
        (client.retrieve_study_metadata,),
        (client.search_for_series,),
        (client.search_for_instances,),
        (client.retrieve_study,),
        (client.retrieve_series_metadata, series),
        (client.retrieve_instance, series, sop),
        (client.retrieve_instance_frames, series, sop, [1]),
        (client.retrieve_instance_rendered, series, sop, ("image/png",)),
    ):
        hidden = refusal(call, thorax_ct.study_uid, *args)
        missing = refusal(call, unknown, *args)
        assert hidden.status_code == missing.status_code == 404, call.__name__
        assert hidden.json() == missing.json(), call.__name__


def test_an_anonymous_client_is_asked_to_authenticate(portal, world, thorax_ct):
    anonymous = portal.anonymous().client
    image = new_image(world.patient, "conformance-anonymous")
    for call, *args in (
        (anonymous.search_for_studies,),
        (anonymous.retrieve_study_metadata, thorax_ct.study_uid),
        (anonymous.retrieve_instance, thorax_ct.study_uid, thorax_ct.series_uid, thorax_ct.sop_uid),
        (anonymous.store_instances, [image]),
    ):
        answer = refusal(call, *args)
        assert answer.status_code == 401, call.__name__
        assert answer.headers["WWW-Authenticate"].startswith("Bearer"), call.__name__
    assert not Instance.objects.filter(sop_instance_uid=image.SOPInstanceUID).exists()


def test_a_viewer_token_opens_one_study_until_it_expires_or_is_revoked(
    portal, world, thorax_ct, follow_up_ct
):
    expiring, expiring_raw = viewer_token_issue(
        by=Actor(user=world.gp.user), study=thorax_ct.record
    )
    revoked, revoked_raw = viewer_token_issue(by=Actor(user=world.gp.user), study=thorax_ct.record)
    viewers = [portal.with_token(expiring_raw), portal.with_token(revoked_raw)]

    # The token opens its study, and no other of the same patient.
    client = viewers[0].client
    assert study_uids(client.search_for_studies()) == [thorax_ct.study_uid]
    other = follow_up_ct
    assert client.search_for_studies(search_filters={"StudyInstanceUID": other.study_uid}) == []
    for call, *args in (
        (client.retrieve_study_metadata,),
        (client.search_for_series,),
        (client.retrieve_study,),
        (client.retrieve_instance, other.series_uid, other.sop_uid),
        (client.retrieve_instance_frames, other.series_uid, other.sop_uid, [1]),
    ):
        assert refusal(call, other.study_uid, *args).status_code == 404, call.__name__
    for viewer in viewers:
        assert len(viewer.client.retrieve_study_metadata(thorax_ct.study_uid)) == 2

    # Expired or revoked, it opens nothing, like a forged one.
    ViewerToken.objects.filter(pk=expiring.pk).update(
        expires_at=timezone.now() - dt.timedelta(minutes=1)
    )
    viewer_token_revoke(token=revoked, by=Actor(user=world.gp.user))
    for viewer in [*viewers, portal.with_token("forged")]:
        for call, *args in (
            (viewer.client.search_for_studies,),
            (viewer.client.retrieve_study_metadata, thorax_ct.study_uid),
        ):
            assert refusal(call, *args).status_code == 401, call.__name__


# --- When the archive fails -------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_archive_answers_503_without_saying_where_it_is(
    portal, world, thorax_ct, settings
):
    viewer = portal.with_token(token_for(world.gp.user, thorax_ct.record))
    port = closed_port()
    settings.ARCHIVE_URL = f"http://127.0.0.1:{port}/regional-pacs/dicom-web"
    settings.ARCHIVE_TIMEOUT = 1.0

    # The study list answers from the portal's index; the images need the archive.
    assert study_uids(viewer.client.search_for_studies()) == [thorax_ct.study_uid]
    refused = refusal(viewer.client.search_for_series, thorax_ct.study_uid)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"]
    # The 503 body never names the archive (its address stays in the portal's logs).
    assert "regional-pacs" not in refused.text
    assert f"127.0.0.1:{port}" not in refused.text


# --- Issue 13: points found with dicomweb-client and side by side with Orthanc ---------------

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
REPORT_SERIES = uid("conformance-report", "series")
REPORT_SOP = uid("conformance-report", "instance")


def report_of(imaged: Imaged) -> bytes:
    """A Basic Text SR in the study of ``imaged``, in a series of its own (the report)."""
    ds = imaged.dataset(0)
    for keyword in [element.keyword for element in ds if element.tag.group in (0x0028, 0x7FE0)]:
        delattr(ds, keyword)
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = REPORT_SOP
    ds.SeriesInstanceUID = REPORT_SERIES
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator = "18748-4", "LN"
    concept.CodeMeaning = "Compte rendu d'imagerie"
    ds.ConceptNameCodeSequence = [concept]
    text = Dataset()
    text.RelationshipType, text.ValueType = "CONTAINS", "TEXT"
    text.TextValue = "Pas de lésion suspecte."
    ds.ContentSequence = [text]
    ds.file_meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return part10(ds)


@pytest.fixture
def reported_ct(world) -> Imaged:
    """A three-slice CT with its structured report in a second series."""
    slices = ct_files(world.patient, key="conformance-reported", slices=3)
    imaged = Imaged(slices)
    ingested(world.patient, by=world.oncologist.user, files=[*slices, report_of(imaged)])
    return imaged


def test_study_counts_agree_with_the_series_search_report_included(portal, world, reported_ct):
    client = portal.with_token(token_for(world.gp.user, reported_ct.record)).client

    (study,) = client.search_for_studies(search_filters={"StudyInstanceUID": reported_ct.study_uid})
    series = [Dataset.from_json(item) for item in client.search_for_series(reported_ct.study_uid)]
    study = Dataset.from_json(study)

    assert sorted(s.Modality for s in series) == ["CT", "SR"]
    assert study.NumberOfStudyRelatedSeries == len(series) == 2
    assert study.NumberOfStudyRelatedInstances == sum(
        s.NumberOfSeriesRelatedInstances for s in series
    )
    assert study.NumberOfStudyRelatedInstances == 4
    assert sorted(study.ModalitiesInStudy) == ["CT", "SR"]
    # The dossier still reads "CT, 1 series": its counts are not the QIDO-RS ones.
    assert (reported_ct.record.series_count, reported_ct.record.modalities) == (1, "CT")


def test_instance_and_series_searches_are_paged_with_limit_and_offset(portal, world, reported_ct):
    client = portal.with_token(token_for(world.gp.user, reported_ct.record)).client
    study, ct_series = reported_ct.study_uid, reported_ct.series_uid
    everything = sop_uids(client.search_for_instances(study))
    assert len(everything) == 4

    assert sop_uids(client.search_for_instances(study, limit=2)) == everything[:2]
    assert sop_uids(client.search_for_instances(study, offset=2)) == everything[2:]
    assert sop_uids(client.search_for_instances(study, limit=1, offset=1)) == everything[1:2]
    assert sop_uids(client.search_for_instances(study, offset=10)) == []
    in_series = client.search_for_instances(study, ct_series, limit=2, offset=1)
    assert sop_uids(in_series) == reported_ct.sop_uids[1:3]
    (second,) = client.search_for_series(study, limit=1, offset=1)
    assert [s["0020000E"]["Value"][0] for s in client.search_for_series(study)][1] == (
        second["0020000E"]["Value"][0]
    )


def test_the_pixel_data_bulk_data_uri_gives_the_stored_pixels(portal, world, reported_ct, archive):
    viewer = portal.with_token(token_for(world.gp.user, reported_ct.record))
    metadata = viewer.client.retrieve_study_metadata(reported_ct.study_uid)

    by_sop = {Dataset.from_json(m).SOPInstanceUID: m for m in metadata}
    report = by_sop[REPORT_SOP]
    assert "7FE00010" not in report  # a report has no pixels to point at
    for n, sop in enumerate(reported_ct.sop_uids):
        pixel_data = by_sop[sop]["7FE00010"]
        assert pixel_data["vr"] == "OW"  # 16-bit CT
        uri = pixel_data["BulkDataURI"]
        assert_on_the_portal(
            portal,
            uri,
            dicomweb_path(reported_ct.study_uid, reported_ct.series_uid, sop) + "/frames/1",
        )
        for address in archive_addresses(archive):
            assert address not in uri
        # dicomweb-client sends Host without the port: the path is asked of the live server.
        bulk = viewer.client.retrieve_bulkdata(portal.url + urlparse(uri).path)
        assert bulk == [reported_ct.dataset(n).PixelData]
    # The URI is no way around the access check: another caller's token does not open it.
    outsider = portal.signed_in(world.outsider.user, csrf=False)
    path = urlparse(by_sop[reported_ct.sop_uid]["7FE00010"]["BulkDataURI"]).path
    assert refusal(outsider.client.retrieve_bulkdata, portal.url + path).status_code == 404


def test_a_series_is_rendered_image_by_image(portal, world, reported_ct, settings):
    viewer = portal.with_token(token_for(world.gp.user, reported_ct.record))
    study, series = reported_ct.study_uid, reported_ct.series_uid

    rendered = viewer.client.retrieve_series_rendered(study, series, media_types=("image/png",))
    # dicomweb-client hands back the body: one PNG part per slice, in instance order.
    assert media_type(viewer.answer) == ("multipart/related", {"type": "image/png"})
    assert [kind for kind, _ in part_types(viewer.answer)] == ["image/png"] * 3
    assert rendered.count(PNG_SIGNATURE) == 3
    jpeg = viewer.session.get(
        portal.url + dicomweb_path(study, series, tail="/rendered"), timeout=HTTP_TIMEOUT
    )
    assert jpeg.status_code == 200
    assert [kind for kind, _ in part_types(jpeg)] == ["image/jpeg"] * 3
    # The report's series has nothing to render.
    report = viewer.session.get(
        portal.url + dicomweb_path(study, REPORT_SERIES, tail="/rendered"), timeout=HTTP_TIMEOUT
    )
    assert report.status_code == 404
    # A series longer than a frames request may be is not rendered in one answer.
    settings.DICOMWEB_MAX_FRAMES_PER_REQUEST = 2
    too_long = viewer.session.get(
        portal.url + dicomweb_path(study, series, tail="/rendered"), timeout=HTTP_TIMEOUT
    )
    assert too_long.status_code == 413


SINGLE_BIT_SC = "1.2.840.10008.5.1.4.1.1.7.1"  # Multi-frame Single Bit Secondary Capture


def bitmap(world, *, frames: int = 2, size: int = 16) -> tuple[Dataset, np.ndarray]:
    """A 1-bit mask of Jeanne Dupont (Bits Allocated 1), ``frames`` frames, and its pixels."""
    ds = pydicom.dcmread(io.BytesIO(ct_files(world.patient, key="conformance-bitmap", slices=1)[0]))
    for keyword in [element.keyword for element in ds if element.tag.group in (0x0028, 0x7FE0)]:
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SINGLE_BIT_SC
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid("conformance-bitmap", "sop")
    ds.Modality = "OT"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = ds.PixelRepresentation = 0
    ds.NumberOfFrames = frames
    pixels = (np.indices((frames, size, size)).sum(axis=0) % 3 == 0).astype(np.uint8)
    ds.add_new(0x7FE00010, "OB", pack_bits(pixels))
    return ds, pixels


def test_one_bit_frames_come_bit_packed_as_stored(portal, world):
    ds, pixels = bitmap(world)
    imaged = ingested(world.patient, by=world.oncologist.user, files=[part10(ds)])
    viewer = portal.with_token(token_for(world.gp.user, imaged.record))
    frame_bytes = 16 * 16 // 8  # 32 bytes a frame, one bit a pixel (PS3.5 §8.1.1)
    instance = [imaged.study_uid, imaged.series_uid, imaged.sop_uid]

    for syntax in (EXPLICIT_LE, "*"):
        frames = viewer.client.retrieve_instance_frames(
            *instance, [1, 2], media_types=(("application/octet-stream", syntax),)
        )
        assert [len(frame) for frame in frames] == [frame_bytes, frame_bytes], syntax
        assert b"".join(frames) == ds.PixelData, syntax
        for number, frame in enumerate(frames):
            unpacked = unpack_bits(frame)[: 16 * 16].reshape(16, 16)
            assert np.array_equal(unpacked, pixels[number]), (syntax, number)
    # The Pixel Data as the metadata points at it: the same packed bytes.
    metadata = viewer.client.retrieve_instance_metadata(*instance)
    assert metadata["7FE00010"]["vr"] == "OB"
    bulk = viewer.client.retrieve_bulkdata(
        portal.url + urlparse(metadata["7FE00010"]["BulkDataURI"]).path
    )
    assert b"".join(bulk) == ds.PixelData


def big_endian_ct(world) -> tuple[Imaged, np.ndarray]:
    """A slice of Jeanne Dupont in Explicit VR Big Endian, as an old modality sends it."""
    ds = pydicom.dcmread(
        io.BytesIO(ct_files(world.patient, key="conformance-big-endian", slices=1, size=64)[0])
    )
    pixels = ds.pixel_array.copy()
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder(">")).tobytes()
    ds.file_meta.TransferSyntaxUID = EXPLICIT_BE
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, implicit_vr=False, little_endian=False, force_encoding=True)
    return ingested(world.patient, by=world.oncologist.user, files=[buffer.getvalue()]), pixels


def test_a_big_endian_instance_is_served_converted_or_as_stored(portal, world):
    imaged, pixels = big_endian_ct(world)
    viewer = portal.signed_in(world.gp.user, csrf=False)
    instance = [imaged.study_uid, imaged.series_uid, imaged.sop_uid]

    # The default syntax: converted to Explicit VR Little Endian, the same pixels.
    converted = viewer.client.retrieve_instance(*instance, media_types=("application/dicom",))
    assert converted.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert np.array_equal(converted.pixel_array, pixels)
    # As stored, byte for byte.
    viewer.client.retrieve_instance(*instance, media_types=(("application/dicom", "*"),))
    ((_type, parameters),) = part_types(viewer.answer)
    assert parameters == {"transfer-syntax": EXPLICIT_BE}
    # Frames: decoded to little endian for a viewer without a big-endian reader...
    (frame,) = viewer.client.retrieve_instance_frames(
        *instance, [1], media_types=(("application/octet-stream", EXPLICIT_LE),)
    )
    assert np.array_equal(np.frombuffer(frame, dtype="<u2").reshape(64, 64), pixels)
    # ...and as stored for one that asks for any syntax.
    (frame,) = viewer.client.retrieve_instance_frames(
        *instance, [1], media_types=(("application/octet-stream", "*"),)
    )
    assert media_type(viewer.answer)[1]["transfer-syntax"] == EXPLICIT_BE
    assert frame == imaged.dataset().PixelData
    rendered = viewer.client.retrieve_instance_rendered(*instance, media_types=("image/png",))
    assert rendered.startswith(PNG_SIGNATURE)


def test_one_bit_frames_decoded_from_another_syntax_stay_bit_packed(portal, world):
    ds, pixels = bitmap(world, frames=1)
    # Deflated Explicit VR Little Endian (PS3.5 A.5): the frames must be decoded to serve them.
    ds.file_meta.TransferSyntaxUID = DEFLATED_LE
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    imaged = ingested(world.patient, by=world.oncologist.user, files=[buffer.getvalue()])
    viewer = portal.signed_in(world.gp.user, csrf=False)

    (frame,) = viewer.client.retrieve_instance_frames(
        imaged.study_uid,
        imaged.series_uid,
        imaged.sop_uid,
        [1],
        media_types=(("application/octet-stream", EXPLICIT_LE),),
    )
    assert len(frame) == 16 * 16 // 8
    assert np.array_equal(unpack_bits(frame).reshape(16, 16), pixels[0])


def test_one_bit_frames_not_on_a_byte_boundary_are_packed_each_from_a_byte(portal, world):
    # 10x10 pixels: 100 bits a frame, so frame 2 starts in the middle of a byte.
    ds, pixels = bitmap(world, frames=3, size=10)
    imaged = ingested(world.patient, by=world.oncologist.user, files=[part10(ds)])
    viewer = portal.signed_in(world.gp.user, csrf=False)
    instance = [imaged.study_uid, imaged.series_uid, imaged.sop_uid]

    frames = viewer.client.retrieve_instance_frames(
        *instance, [2, 3], media_types=(("application/octet-stream", "*"),)
    )
    assert [len(frame) for frame in frames] == [13, 13]  # 100 bits, padded to 13 bytes
    for frame, expected in zip(frames, pixels[1:], strict=True):
        assert np.array_equal(unpack_bits(frame)[:100].reshape(10, 10), expected)
    beyond = refusal(viewer.client.retrieve_instance_frames, *instance, [4])
    assert beyond.status_code == 400


def test_the_portal_answers_as_orthanc_itself_does(portal, world, reported_ct, archive):
    """Side by side with the archive's own DICOMweb (the Orthanc run): the same study
    counts, the same 400 for a frame past the last, a rendered series for both."""
    if archive is None:
        pytest.skip("a comparison with Orthanc's own answers")
    viewer = portal.with_token(token_for(world.gp.user, reported_ct.record))
    direct = DICOMwebClient(url=archive.url, timeout=HTTP_TIMEOUT)
    direct.set_http_retry_params(retry=False)
    study, series, sop = reported_ct.study_uid, reported_ct.series_uid, reported_ct.sop_uid
    counts = ("00201206", "00201208", "00080061")

    (ours,) = viewer.client.search_for_studies(search_filters={"StudyInstanceUID": study})
    (theirs,) = direct.search_for_studies(
        search_filters={"StudyInstanceUID": study}, fields=["00201206", "00201208", "00080061"]
    )
    assert {tag: ours[tag]["Value"] for tag in counts} == {
        tag: sorted(theirs[tag]["Value"]) if tag == "00080061" else theirs[tag]["Value"]
        for tag in counts
    }
    # Orthanc pages in its own order (the portal's is by instance number): the sizes agree.
    for limit, offset in ((2, 1), (10, 3), (1, 4)):
        ours = viewer.client.search_for_instances(study, limit=limit, offset=offset)
        theirs = direct.search_for_instances(study, limit=limit, offset=offset)
        assert len(ours) == len(theirs), (limit, offset)
    ours = refusal(viewer.client.retrieve_instance_frames, study, series, sop, [2])
    theirs = refusal(direct.retrieve_instance_frames, study, series, sop, [2])
    assert ours.status_code == theirs.status_code == 400
    viewer.client.retrieve_series_rendered(study, series)
    direct.retrieve_series_rendered(study, series)
    assert "7FE00010" in viewer.client.retrieve_instance_metadata(study, series, sop)
    assert "7FE00010" in direct.retrieve_instance_metadata(study, series, sop)

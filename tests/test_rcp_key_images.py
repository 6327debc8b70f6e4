"""Key images of an RCP case: marked in the viewer, rendered server-side, listed, removed.

The thoracic board discusses world.patient's CT (tests/rcp_world.py). The surgeon marks the
image he shows; the stored PNG is what the minutes print (rcp/pdf.py reads it).
"""

import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from imaging import services as imaging_services
from imaging.archive import ArchiveUnavailable
from imaging.models import Instance, Study
from portal.audit import Actor
from portal.models import AuditAction, AuditEvent, AuditEventId, AuditOutcome
from rcp import key_images
from rcp import services as rcp_services
from rcp.key_image_render import _Canvas, plane_of, render_key_image, world_to_pixel
from rcp.models import Case, KeyImage
from tests.conftest import client_for
from tests.dicom_factory import ct_files, uid
from tests.permission_matrix import imaged_study
from tests.rcp_world import case_on_agenda, open_with_quorum, rcp_world

LUNG = {"ww": 1500, "wc": -600}
MEDIASTINUM = {"ww": 350, "wc": 50}
YELLOW = (255, 230, 0)


@pytest.fixture
def board(world):
    """The thoracic board with world.patient's case on the agenda, its CT attached."""
    rcp_world(world)
    case = case_on_agenda(world)
    ct = imaged_study(world)
    return SimpleNamespace(world=world, case=case, ct=ct)


def _view(ct, voi=MEDIASTINUM, **changes):
    return {
        "study": ct["study_uid"],
        "series": ct["series_uid"],
        "index": 0,
        "voi": dict(voi),
        "zoom": 1,
        "pan": [0, 0],
        "rotation": 0,
        "flipH": False,
        "flipV": False,
        "pointer": None,
        **changes,
    }


def _request(ct, voi=MEDIASTINUM, **changes):
    return {
        "study": ct["study_uid"],
        "series": ct["series_uid"],
        "sop": ct["sop_uid"],
        "frame": 1,
        "view": _view(ct, voi),
        "annotations": [],
        "caption": "Série 1 · image 1 / 2",
        **changes,
    }


def _post(user, case, body, *, raw=None):
    """As the viewer posts it (in English, so that the messages can be read by the tests)."""
    data = raw if raw is not None else json.dumps(body)
    return client_for(user).post(
        reverse("rcp-case-key-image-add", args=[case.pk]),
        data,
        content_type="application/json",
        HTTP_ACCEPT_LANGUAGE="en",
    )


def _png(image: KeyImage) -> Image.Image:
    with image.rendering.open("rb") as stream:
        picture = Image.open(io.BytesIO(stream.read()))
        picture.load()
    return picture


def _mean(picture: Image.Image) -> float:
    return float(np.asarray(picture.convert("L"), dtype=np.float64).mean())


def _key_image_updates(case):
    return AuditEvent.objects.filter(
        event_id=AuditEventId.PATIENT_RECORD,
        action=AuditAction.UPDATE,
        object_id=str(case.pk),
        detail__op__in=["add", "remove"],
    )


def _stored_renderings() -> list[str]:
    try:
        years = default_storage.listdir("rcp/key-images")[0]
    except FileNotFoundError:
        return []
    found = []
    for year in years:
        for month in default_storage.listdir(f"rcp/key-images/{year}")[0]:
            found += default_storage.listdir(f"rcp/key-images/{year}/{month}")[1]
    return found


def _mark(board, user=None, **changes) -> KeyImage:
    """A key image marked through the service (setup for the removal stories)."""
    body = _request(board.ct, **changes)
    return key_images.key_image_add(
        case=board.case, by=Actor(user=user or board.world.surgeon.user), **body
    )


# --- Marking an image ------------------------------------------------------------------------


def test_the_surgeon_marks_the_image_he_shows_as_a_key_image(board):
    surgeon = board.world.surgeon.user
    response = _post(surgeon, board.case, _request(board.ct))

    assert response.status_code == 201, response.content
    image = KeyImage.objects.get(case=board.case)
    assert response.json()["id"] == image.pk
    assert (image.study_uid, image.series_uid, image.sop_uid, image.frame) == (
        board.ct["study_uid"],
        board.ct["series_uid"],
        board.ct["sop_uid"],
        1,
    )
    assert image.created_by == surgeon
    assert image.caption == "Série 1 · image 1 / 2"
    # The view in the review protocol's form, without the laser pointer.
    assert image.view_state["v"] == 1
    assert image.view_state["view"]["voi"] == MEDIASTINUM
    assert "pointer" not in image.view_state["view"]
    assert image.view_state["annotations"] == []
    # A PNG Pillow reads, enlarged from the 32-pixel test CT to be legible in the minutes.
    picture = _png(image)
    assert picture.format == "PNG"
    assert picture.size == (512, 512)
    # Audited on the patient's record, as an update of the case.
    event = _key_image_updates(board.case).get()
    assert event.actor == surgeon
    assert event.patient == board.world.patient
    assert event.outcome == AuditOutcome.SUCCESS
    assert event.detail["op"] == "add"


def test_the_rendering_follows_the_window_of_the_viewer(board):
    surgeon = board.world.surgeon.user
    assert _post(surgeon, board.case, _request(board.ct, voi=LUNG)).status_code == 201
    assert _post(surgeon, board.case, _request(board.ct, voi=MEDIASTINUM)).status_code == 201

    lung, mediastinum = [_png(i) for i in KeyImage.objects.filter(case=board.case).order_by("pk")]
    # The test CT is a ramp from -1024 to 2045 HU: most of it is above the lung window
    # (white), a third of it below the mediastinal window (black).
    assert _mean(lung) > _mean(mediastinum) + 20
    # Nothing of the CT is below the lung window (-1350 HU); a third is below -125 HU.
    black = [(np.asarray(p.convert("L")) < 8).mean() for p in (lung, mediastinum)]
    assert black[0] < 0.01 < 0.2 < black[1]


@pytest.fixture
def ct_with_geometry(board):
    """A second CT of the patient, with its patient geometry, attached to the case."""
    world = board.world
    files = ct_files(
        world.patient,
        key="key-image-geometry",
        slices=1,
        size=64,
        ImagePositionPatient=[-32.0, -32.0, 10.0],
        ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
        PixelSpacing=[1.0, 1.0],
    )
    batch = imaging_services.ingest_batch_create(
        patient=world.patient,
        files=[SimpleUploadedFile("geometry.dcm", files[0])],
        by=Actor(user=world.oncologist.user),
    )
    imaging_services.ingest_run(batch=batch)
    study = Study.objects.get(study_instance_uid=uid("key-image-geometry", "study"))
    board.case.studies.add(study)
    instance = Instance.objects.get(series__study=study)
    return {
        "study_uid": study.study_instance_uid,
        "series_uid": instance.series.series_instance_uid,
        "sop_uid": instance.sop_instance_uid,
    }


def test_a_length_measured_on_the_image_is_drawn_on_the_rendering(board, ct_with_geometry):
    ct = ct_with_geometry
    length = {
        "uid": "0b7e2c1a-5d1f-4a57-9d5e-1f2a3b4c5d6e",
        "tool": "Length",
        "study": ct["study_uid"],
        "series": ct["series_uid"],
        "sop": ct["sop_uid"],
        "frame": 1,
        # From pixel (4, 4) to pixel (54, 4): 50 mm along the first row.
        "points": [[-28.0, -28.0, 10.0], [22.0, -28.0, 10.0]],
        "text": "",
    }
    response = _post(
        board.world.surgeon.user, board.case, _request(ct, voi=LUNG, annotations=[length])
    )

    assert response.status_code == 201, response.content
    assert response.json()["annotationsDrawn"] == 1
    image = KeyImage.objects.get(case=board.case)
    assert image.view_state["annotations"] == [length]
    pixels = np.asarray(_png(image).convert("RGB"))
    # 64 px shown at 512: the line runs along row 4 × 8 + 4, from column 36 to 436.
    line = pixels[36, 60:420]
    assert (line == YELLOW).all(axis=1).mean() > 0.9
    assert not (pixels[300:, :] == YELLOW).all(axis=2).any()  # nothing drawn elsewhere


def test_without_geometry_the_window_only_is_rendered(board):
    """The test CT has no Image Position / Orientation: its measurements cannot be placed."""
    length = {
        "uid": "l1",
        "tool": "Length",
        "study": board.ct["study_uid"],
        "series": board.ct["series_uid"],
        "sop": board.ct["sop_uid"],
        "frame": 1,
        "points": [[1.0, 1.0, 0.0], [20.0, 20.0, 0.0]],
    }
    response = _post(board.world.surgeon.user, board.case, _request(board.ct, annotations=[length]))

    assert response.status_code == 201
    assert response.json()["annotationsDrawn"] is None
    image = KeyImage.objects.get(case=board.case)
    assert image.view_state["annotations"] == [length]  # the reference keeps them
    assert not (np.asarray(_png(image).convert("RGB")) == YELLOW).all(axis=2).any()


# --- Refused requests: 400, nothing stored ---------------------------------------------------


def _other_study(world):
    """Another CT of the patient, visible to the board's members but not attached."""
    return imaged_study(world, key="not-attached")


BAD_REQUESTS = {
    # name: (the request, what the message says)
    "unknown SOP instance": (
        lambda b: _request(b.ct, sop="1.2.3.4.5.6.7"),
        "This image is not in the series of the study.",
    ),
    "series of another study": (
        lambda b: _request(
            b.ct,
            series=_other_study(b.world)["series_uid"],
            view=_view(b.ct, series=_other_study(b.world)["series_uid"]),
        ),
        "This image is not in the series of the study.",
    ),
    "study not attached to the case": (
        lambda b: _request(_other_study(b.world)),
        "This study is not attached to the case.",
    ),
    "frame 0": (lambda b: _request(b.ct, frame=0), "(frame): 0 is less than the minimum of 1"),
    "a frame the image does not have": (
        lambda b: _request(b.ct, frame=2),
        "Frame 2 does not exist: the image has 1.",
    ),
    "a view of another series": (
        lambda b: _request(b.ct, view=_view(b.ct, series="1.2.826.0.1.3680043.99")),
        "The view shows another series than the image marked.",
    ),
    "a UID that is not one": (
        lambda b: _request(b.ct, sop="1.2.abc"),
        "(sop): not in the expected format",
    ),
    "a window of width 0": (
        lambda b: _request(b.ct, voi={"ww": 0, "wc": 40}),
        "(view/voi/ww)",
    ),
    "a rotation of 45°": (
        lambda b: _request(b.ct, view=_view(b.ct, rotation=45)),
        "(view/rotation): 45 is not one of [0, 90, 180, 270]",
    ),
    "an unknown field": (
        lambda b: {**_request(b.ct), "script": "alert(1)"},
        "('script' was unexpected)",
    ),
    "a measurement of another image": (
        lambda b: _request(
            b.ct,
            annotations=[
                {
                    "uid": "a1",
                    "tool": "Length",
                    "study": b.ct["study_uid"],
                    "series": b.ct["series_uid"],
                    "sop": "1.2.3.4",
                    "frame": 1,
                    "points": [[0, 0, 0], [1, 1, 0]],
                }
            ],
        ),
        "A measurement belongs to another image than the one marked.",
    ),
    "an unknown tool": (
        lambda b: _request(
            b.ct,
            annotations=[
                {
                    "uid": "a1",
                    "tool": "Freehand",
                    "study": b.ct["study_uid"],
                    "series": b.ct["series_uid"],
                    "sop": b.ct["sop_uid"],
                    "points": [[0, 0, 0]],
                }
            ],
        ),
        "(annotations/0/tool): 'Freehand' is not one of",
    ),
    "a caption too long": (
        lambda b: _request(b.ct, caption="x" * 201),
        "(caption): longer than 200 characters",
    ),
    "a list instead of an object": (
        lambda b: [_request(b.ct)],
        "The request must be a JSON object.",
    ),
}

RAW_REQUESTS = {
    "malformed JSON": (b'{"study": "1.2", ', "The request is not valid JSON."),
    "NaN in the window": (
        b'{"view": {"voi": {"ww": NaN, "wc": 40}}}',
        "The request is not valid JSON.",
    ),
    "not UTF-8": (b"\xff\xfe{}", "The request is not valid JSON."),
    "an oversize request": (
        json.dumps({"caption": "x", "annotations": [{"text": "y" * 200}] * 200}).encode(),
        "The request is too large (at most 32 KiB).",
    ),
}


def _assert_refused(board, response, status=400):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]
    assert not KeyImage.objects.filter(case=board.case).exists()
    assert not _key_image_updates(board.case).exists()
    assert _stored_renderings() == []


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_a_bad_request_is_refused_with_a_clear_message(board, name):
    build, message = BAD_REQUESTS[name]
    response = _post(board.world.surgeon.user, board.case, build(board))
    _assert_refused(board, response)
    assert message in response.json()["error"]


@pytest.mark.parametrize("name", sorted(RAW_REQUESTS))
def test_a_request_that_is_not_a_key_image_is_refused(board, name):
    body, message = RAW_REQUESTS[name]
    response = _post(board.world.surgeon.user, board.case, None, raw=body)
    _assert_refused(board, response)
    assert response.json()["error"] == message


def test_an_oversize_request_is_refused_before_it_is_read(board):
    body = json.dumps({"caption": "y" * (40 * 1024)})
    response = _post(board.world.surgeon.user, board.case, None, raw=body)
    _assert_refused(board, response)
    assert "too large" in response.json()["error"]


def test_a_form_post_is_not_a_key_image(board):
    response = client_for(board.world.surgeon.user).post(
        reverse("rcp-case-key-image-add", args=[board.case.pk]),
        {"study": board.ct["study_uid"], "sop": board.ct["sop_uid"], "frame": 1},
    )
    _assert_refused(board, response)


def test_an_unavailable_archive_is_a_503_not_a_500(board, monkeypatch):
    class Down:
        def retrieve_instance(self, *args):
            raise ArchiveUnavailable("archive timeout")

    monkeypatch.setattr(key_images, "get_archive", lambda: Down())
    response = _post(board.world.surgeon.user, board.case, _request(board.ct))
    _assert_refused(board, response, status=503)


# --- Who may mark and remove -----------------------------------------------------------------


def test_outsiders_get_404_and_nothing_is_stored(board):
    """A member of another committee, and the patient's GP while the decision is not
    validated, do not see the case: the same 404 as a case that does not exist."""
    for outsider in (board.world.outsider.user, board.world.gp.user):
        refusals = AuditEvent.objects.filter(event_id=AuditEventId.SECURITY_ALERT).count()
        response = _post(outsider, board.case, _request(board.ct))
        assert response.status_code == 404
        assert AuditEvent.objects.filter(event_id=AuditEventId.SECURITY_ALERT).count() == (
            refusals + 1
        )
    assert not KeyImage.objects.exists()
    assert _stored_renderings() == []


def test_the_author_removes_a_key_image_and_its_rendering(
    board, django_capture_on_commit_callbacks
):
    image = _mark(board)
    name = image.rendering.name
    assert default_storage.exists(name)
    url = reverse("rcp-case-key-image-remove", args=[board.case.pk, image.pk])

    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(board.world.surgeon.user).post(url)

    assert response.status_code == 302
    assert not KeyImage.objects.filter(pk=image.pk).exists()
    assert not default_storage.exists(name)
    assert _key_image_updates(board.case).filter(detail__op="remove").count() == 1


def test_the_coordinator_removes_anyones_key_image(board):
    image = _mark(board)
    response = client_for(board.world.coordinator.user).post(
        reverse("rcp-case-key-image-remove", args=[board.case.pk, image.pk]),
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert not KeyImage.objects.filter(pk=image.pk).exists()
    # htmx gets the refreshed block.
    assert b'data-testid="no-key-images"' in response.content


def test_another_member_cannot_remove_the_surgeons_key_image(board):
    image = _mark(board)
    radiotherapist = board.world.radiotherapist.user
    response = client_for(radiotherapist).post(
        reverse("rcp-case-key-image-remove", args=[board.case.pk, image.pk]),
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert b'role="alert"' in response.content
    assert KeyImage.objects.filter(pk=image.pk).exists()
    assert default_storage.exists(image.rendering.name)
    assert not _key_image_updates(board.case).filter(detail__op="remove").exists()


def test_a_key_image_of_another_case_is_404(board):
    image = _mark(board)
    other = case_on_agenda(board.world)
    url = reverse("rcp-case-key-image-remove", args=[other.pk, image.pk])
    assert client_for(board.world.surgeon.user).post(url).status_code == 404
    assert (
        client_for(board.world.surgeon.user)
        .get(reverse("rcp-case-key-image", args=[other.pk, image.pk]))
        .status_code
        == 404
    )
    assert KeyImage.objects.filter(pk=image.pk).exists()


def test_a_validated_decision_locks_the_key_images(board):
    world = board.world
    image = _mark(board)
    draft = rcp_services.decision_save(
        case=board.case, revision=None, by=Actor(user=world.surgeon.user), proposal="Lobectomie."
    )
    # Validated in its meeting: the session open, with its quorum.
    open_with_quorum(world, board.case.session)
    rcp_services.decision_validate(
        case=board.case, revision=draft.revision, by=Actor(user=world.oncologist.user)
    )
    board.case.refresh_from_db()
    assert board.case.state == Case.State.VALIDATED
    before = _key_image_updates(board.case).count()

    response = _post(world.surgeon.user, board.case, _request(board.ct, voi=LUNG))
    assert response.status_code == 409
    assert "validated" in response.json()["error"]
    for user in (world.surgeon.user, world.coordinator.user):
        client_for(user).post(reverse("rcp-case-key-image-remove", args=[board.case.pk, image.pk]))
    assert list(KeyImage.objects.filter(case=board.case)) == [image]
    assert _key_image_updates(board.case).count() == before
    # The patient's GP now sees the case and its key images, and cannot add one: he only reads
    # the case, so any other method is refused him like an outsider's (rcp.access).
    assert _post(world.gp.user, board.case, _request(board.ct)).status_code == 404
    listing = client_for(world.gp.user).get(reverse("rcp-case-key-images", args=[board.case.pk]))
    assert listing.status_code == 200
    assert b'data-testid="key-image-item"' in listing.content
    assert b"key-image-remove" not in listing.content


# --- Pages -------------------------------------------------------------------------------------


def test_the_case_page_lists_the_key_images_with_their_thumbnails(board):
    mine = _mark(board)
    theirs = _mark(board, user=board.world.radiotherapist.user, voi=LUNG)
    surgeon = client_for(board.world.surgeon.user)

    page = surgeon.get(reverse("rcp-case", args=[board.case.pk])).content.decode()
    assert reverse("rcp-case-key-images", args=[board.case.pk]) in page  # loads itself

    block = surgeon.get(reverse("rcp-case-key-images", args=[board.case.pk])).content.decode()
    assert block.count('data-testid="key-image-item"') == 2
    assert block.count('src="data:image/png;base64,') == 2  # one audited request shows all
    # He may remove his own, not the radiotherapist's.
    assert reverse("rcp-case-key-image-remove", args=[board.case.pk, mine.pk]) in block
    assert reverse("rcp-case-key-image-remove", args=[board.case.pk, theirs.pk]) not in block

    full = surgeon.get(reverse("rcp-case-key-image", args=[board.case.pk, mine.pk]))
    assert full["Content-Type"] == "image/png"
    assert "no-store" in full["Cache-Control"]
    assert Image.open(io.BytesIO(full.content)).size == (512, 512)


def _viewer_config(html: str) -> dict:
    start = html.index('<script id="viewer-config-1" type="application/json">')
    start = html.index(">", start) + 1
    return json.loads(html[start : html.index("</script>", start)])


def test_the_live_session_gives_the_viewer_where_to_post_key_images(board):
    surgeon = client_for(board.world.surgeon.user)
    response = surgeon.get(
        reverse("rcp-session-live", args=[board.case.session_id]) + f"?dossier={board.case.pk}"
    )
    html = response.content.decode()
    config = _viewer_config(html)
    assert config["keyImages"]["url"] == reverse("rcp-case-key-image-add", args=[board.case.pk])
    assert config["keyImages"]["csrf"]
    assert config["labels"]["keyImage"]
    assert reverse("rcp-case-key-images", args=[board.case.pk]) in html
    # The token of the page is the one the endpoint accepts.
    csrf_client = client_for(board.world.surgeon.user)
    csrf_client.handler.enforce_csrf_checks = True
    page = csrf_client.get(
        reverse("rcp-session-live", args=[board.case.session_id]) + f"?dossier={board.case.pk}"
    )
    token = _viewer_config(page.content.decode())["keyImages"]["csrf"]
    url = reverse("rcp-case-key-image-add", args=[board.case.pk])
    body = json.dumps(_request(board.ct))
    refused = csrf_client.post(url, body, content_type="application/json")
    assert refused.status_code == 403
    accepted = csrf_client.post(url, body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 201


# --- The rendering itself ----------------------------------------------------------------------


def _dataset(**geometry):
    from pydicom import dcmread

    data = ct_files(None, key="plane", slices=1, size=16, **geometry)[0]
    return data, dcmread(io.BytesIO(data))


def test_world_points_map_to_pixels_through_the_image_plane():
    """PS3.3 C.7.6.2.1.1: columns along the first direction of Image Orientation, spaced by
    PixelSpacing[1]; rows along the second, spaced by PixelSpacing[0]."""
    _data, ds = _dataset(
        ImagePositionPatient=[100.0, 50.0, -20.0],
        ImageOrientationPatient=[0, 1, 0, 0, 0, -1],  # a sagittal image
        PixelSpacing=[0.5, 0.8],
    )
    plane = plane_of(ds)
    assert world_to_pixel([100.0, 50.0, -20.0], plane) == (0.0, 0.0)
    column, row = world_to_pixel([100.0, 50.0 + 8.0, -20.0 - 5.0], plane)
    assert (round(column, 6), round(row, 6)) == (10.0, 10.0)
    _data, flat = _dataset()
    assert plane_of(flat) is None


def test_flips_and_rotations_move_the_drawing_with_the_image():
    canvas = _Canvas(Image.new("L", (512, 256)), {"zoom": 1, "rotation": 90})
    assert canvas.image.size == (256, 512)
    # The top-left pixel ends top-right once turned clockwise.
    x, y = canvas.place(0, 0)
    assert (round(x), round(y)) == (255, 0)
    flipped = _Canvas(Image.new("L", (512, 512)), {"zoom": 1, "flipH": True})
    assert tuple(round(v) for v in flipped.place(0, 0)) == (511, 0)


def test_a_zoomed_view_is_rendered_as_the_area_shown():
    data = ct_files(
        None,
        key="zoom",
        slices=1,
        size=64,
        ImagePositionPatient=[0.0, 0.0, 0.0],
        ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
        PixelSpacing=[1.0, 1.0],
    )[0]
    view = {"voi": LUNG, "zoom": 2, "pan": [16, 16], "rotation": 0}
    result = render_key_image(data, 1, view, [])
    picture = Image.open(io.BytesIO(result["png"]))
    assert picture.size == (512, 512)
    # Zoom 2 panned to the top-left quarter: the ramp's darkest rows only.
    whole = Image.open(io.BytesIO(render_key_image(data, 1, {**view, "zoom": 1}, [])["png"]))
    assert _mean(picture) < _mean(whole)


def test_a_colour_frame_of_a_cine_loop_keeps_its_colours():
    """A JPEG (YBR) ultrasound loop: only the frame asked is shown, in its own colours."""
    import datetime as dt

    from pydicom import dcmread
    from pydicom import uid as syntaxes
    from pydicom.pixels import pixel_array

    from demo import synthetic

    patient = synthetic.PatientIdentity(
        patient_id="T1",
        issuer="CHRU-TOURS",
        family_name="TEST",
        given_names="Anne",
        sex="F",
        birth_date=dt.date(1990, 1, 1),
    )
    study = synthetic.StudySpec(
        study_date=dt.date(2026, 1, 5),
        institution_name="CHRU de Tours",
        description="Échographie",
        study_instance_uid="1.2.826.0.1.3680043.10.1",
    )
    loop = synthetic.us_multiframe(
        patient=patient, study=study, frames=4, rows=120, columns=160, photometric="RGB", seed=3
    )
    data = synthetic.to_bytes(synthetic.with_transfer_syntax(loop, syntaxes.JPEGBaseline8Bit))
    expected = pixel_array(dcmread(io.BytesIO(data)), index=2).reshape(-1, 3).mean(axis=0)

    result = render_key_image(data, 3, {"voi": LUNG, "zoom": 1}, [])

    assert result["frames"] == 4
    shown = Image.open(io.BytesIO(result["png"])).convert("RGB")
    shown = shown.resize((160, 120), Image.Resampling.BILINEAR)
    assert np.allclose(np.asarray(shown, dtype=float).reshape(-1, 3).mean(axis=0), expected, atol=1)
    assert render_key_image(data, 5, {"voi": LUNG, "zoom": 1}, [])["png"] is None


def test_a_measurement_far_off_the_image_is_not_drawn():
    data = ct_files(
        None,
        key="far",
        slices=1,
        size=64,
        ImagePositionPatient=[0.0, 0.0, 0.0],
        ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
        PixelSpacing=[1.0, 1.0],
    )[0]
    far = {
        "tool": "EllipticalROI",
        "points": [[-1e7, 0, 0], [1e7, 0, 0], [0, -1e7, 0], [0, 1e7, 0]],
    }
    near = {"tool": "Length", "points": [[5.0, 5.0, 0.0], [30.0, 5.0, 0.0]]}
    result = render_key_image(data, 1, {"voi": LUNG, "zoom": 1}, [far, near])
    assert result["burned"] == 1

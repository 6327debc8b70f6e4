"""A viewer asks the portal for frames: it gets pydicom's pixels, whatever the transfer syntax.

Images of Jeanne Dupont, written in every transfer syntax this machine can encode (native
little and big endian, deflate, RLE, JPEG baseline and lossless, JPEG-LS, JPEG 2000), are
imported through the upload form and fetched by her GP's viewer through the portal's
DICOMweb service as native little-endian frames (PS3.18 8.7.3, ``application/octet-stream``).
Each frame must be, pixel for pixel, what pydicom decodes from the same file: the portal's
sandboxed decoder is pydicom with the same plugins, so it must add no error, lossy syntax or
not. Lossless ones must also give back the very pixels that were encoded.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from django.core.cache import caches
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from pydicom.encaps import generate_frames
from pydicom.uid import UID

from demo import synthetic
from imaging.models import IngestBatch, IngestItem, StudyIdentity
from tests.conftest import client_for
from tests.test_dicomweb import parts_of

pytestmark = pytest.mark.django_db

NATIVE_FRAMES = 'multipart/related; type="application/octet-stream"'
STORED_FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
EXPLICIT_LE = "1.2.840.10008.1.2.1"
SYNTAXES = [
    UID(syntax)
    for syntax in synthetic.LOSSLESS_TRANSFER_SYNTAXES + synthetic.LOSSY_TRANSFER_SYNTAXES
    if synthetic.can_encode(syntax)
]
# Small images, one of each kind a viewer meets; the generator is called with the patient
# and the study, the rest is fixed here.
KINDS = {
    "CT, signed 16 bits": lambda **study: synthetic.ct_series(
        **study, slices=1, rows=32, columns=32
    )[0],
    "MR, unsigned 12 bits": lambda **study: synthetic.mr_series(
        **study, slices=1, rows=32, columns=32
    )[0],
    "DX, 12 bits": lambda **study: synthetic.xr_image(**study, rows=48, columns=40),
    "US, grey, 5 frames": lambda **study: synthetic.us_multiframe(
        **study, frames=5, rows=32, columns=40
    ),
    "US, colour, 5 frames": lambda **study: synthetic.us_multiframe(
        **study, frames=5, rows=32, columns=40, photometric="RGB"
    ),
}


@pytest.fixture(autouse=True)
def _cold_frame_cache():
    # The frame cache outlives a test (it is keyed by SOP Instance UID, and the synthetic
    # UIDs are stable): every test starts cold.
    caches["frames"].clear()
    yield
    caches["frames"].clear()


@pytest.fixture
def capture(django_capture_on_commit_callbacks):
    return django_capture_on_commit_callbacks


def identity_of(world) -> synthetic.PatientIdentity:
    """Jeanne Dupont as the Tours CHRU's modalities write her (IPP T100001)."""
    patient = world.patient
    return synthetic.PatientIdentity(
        patient_id="T100001",
        issuer=world.tours.patient_id_issuer,
        family_name=patient.birth_name.upper(),
        given_names=patient.first_names,
        sex={"I": "O"}.get(patient.sex, patient.sex),
        birth_date=patient.birth_date,
    )


def import_in_every_syntax(world, capture, kind: str, syntaxes=SYNTAXES) -> dict[UID, bytes]:
    """One image of ``kind`` in each of ``syntaxes``, imported for Jeanne Dupont."""
    source = KINDS[kind](
        patient=identity_of(world),
        study=synthetic.StudySpec(
            study_date=world.patient.birth_date.replace(year=2026),
            institution_name="CHRU de Tours",
            description=f"Décodage {kind}",
        ),
    )
    files = {
        syntax: synthetic.to_bytes(synthetic.with_transfer_syntax(source, syntax))
        for syntax in syntaxes
    }
    with capture(execute=True):
        response = client_for(world.oncologist.user).post(
            reverse("study-upload", args=[world.patient.pk]),
            {"files": [SimpleUploadedFile(f"{s.name}.dcm", data) for s, data in files.items()]},
        )
    assert response.status_code == 302
    for item in IngestBatch.objects.latest("pk").items.select_related("study"):
        assert item.status == IngestItem.Status.ACCEPTED, (item.name, item.reason)
        assert (item.study.patient, item.study.identity) == (world.patient, StudyIdentity.MATCHED)
    return files


def frames_url(ds, numbers) -> str:
    frame_list = ",".join(str(n) for n in numbers)
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    return reverse("dicomweb-frames", args=[*uids, frame_list])


def pydicom_frames(ds) -> np.ndarray:
    """pydicom's decoding, frame first: (frames, rows, columns[, samples])."""
    array = ds.pixel_array  # its defaults, as the portal's decoder: YBR comes back as RGB
    return array if int(ds.get("NumberOfFrames", 1) or 1) > 1 else array[np.newaxis]


def as_served(body: bytes, like: np.ndarray) -> np.ndarray:
    """A native little-endian frame (PS3.5 8.1.1), read as the pixels of ``like``."""
    assert len(body) == like.nbytes, f"{len(body)} bytes for a frame of {like.nbytes}"
    return np.frombuffer(body, dtype=like.dtype.newbyteorder("<")).reshape(like.shape)


def fetch(client, url, accept) -> list[tuple[str, bytes]]:
    response = client.get(url, HTTP_ACCEPT=accept)
    assert response.status_code == 200, response.content[:300]
    return parts_of(response)


@pytest.mark.parametrize("kind", list(KINDS))
def test_frames_are_pydicoms_pixels_in_every_transfer_syntax(world, capture, kind):
    files = import_in_every_syntax(world, capture, kind)
    original = pydicom_frames(pydicom.dcmread(io.BytesIO(files[UID(EXPLICIT_LE)])))
    viewer = client_for(world.gp.user)
    wrong = []
    for syntax, data in files.items():
        ds = pydicom.dcmread(io.BytesIO(data))
        expected = pydicom_frames(ds)
        count = len(expected)
        every = list(range(1, count + 1))
        picked = every[::2]  # 1,3,5 of a loop; frame 1 of a single image
        # Cold, a few frames in the order asked; then all of them; then all again, warm.
        first = fetch(viewer, frames_url(ds, picked), NATIVE_FRAMES)
        cold = fetch(viewer, frames_url(ds, every), NATIVE_FRAMES)
        warm = fetch(viewer, frames_url(ds, every), NATIVE_FRAMES)
        assert [t for t, _body in cold] == [
            f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
        ] * count
        assert [body for _t, body in first] == [cold[n - 1][1] for n in picked], syntax.name
        assert warm == cold, f"{syntax.name}: the cache answers other bytes"
        served = np.stack([as_served(body, expected[0]) for _t, body in cold])
        if not np.array_equal(served, expected):
            worst = np.abs(served.astype(np.int64) - expected.astype(np.int64)).max()
            wrong.append(f"{syntax.name}: up to {worst} grey levels from pydicom's decoding")
        elif syntax in synthetic.LOSSLESS_TRANSFER_SYNTAXES and not np.array_equal(
            served, original
        ):
            wrong.append(f"{syntax.name}: lossless, yet not the pixels that were encoded")
        if syntax.is_encapsulated:
            # Asked in any syntax, the frames are the stored ones, untouched (PS3.5 A.4).
            stored = fetch(viewer, frames_url(ds, every), STORED_FRAMES)
            assert {t.split("; ")[1] for t, _body in stored} == {f"transfer-syntax={syntax}"}
            assert [body for _t, body in stored] == list(
                generate_frames(ds.PixelData, number_of_frames=count)
            ), syntax.name
    assert not wrong, f"{kind}:\n" + "\n".join(wrong)


def test_warm_frames_come_from_the_cache_even_when_the_archive_is_gone(world, capture, settings):
    jpeg_baseline, rle_lossless = UID("1.2.840.10008.1.2.4.50"), UID("1.2.840.10008.1.2.5")
    files = import_in_every_syntax(
        world, capture, "US, colour, 5 frames", syntaxes=[jpeg_baseline, rle_lossless]
    )
    viewer = client_for(world.gp.user)
    jpeg = pydicom.dcmread(io.BytesIO(files[jpeg_baseline]))
    rle = pydicom.dcmread(io.BytesIO(files[rle_lossless]))
    decoded = fetch(viewer, frames_url(jpeg, [1, 3, 5]), NATIVE_FRAMES)
    passed_through = fetch(viewer, frames_url(rle, [2, 4]), STORED_FRAMES)

    settings.ARCHIVE_URL = "http://127.0.0.1:9/dicom-web"  # discard port: nothing answers
    settings.ARCHIVE_TIMEOUT = 0.5
    assert fetch(viewer, frames_url(jpeg, [1, 3, 5]), NATIVE_FRAMES) == decoded
    assert fetch(viewer, frames_url(rle, [2, 4]), STORED_FRAMES) == passed_through
    # A frame never asked for is not in the cache: the archive is really gone.
    cold = viewer.get(frames_url(jpeg, [2]), HTTP_ACCEPT=NATIVE_FRAMES)
    assert cold.status_code == 503


def test_a_colour_jpeg_renders_in_its_own_colours(world):
    """pydicom gives RGB for YBR data already: the rendering must not convert it twice."""
    import io

    import numpy as np
    from PIL import Image
    from pydicom import dcmread

    from imaging.render import render_png

    source = KINDS["US, colour, 5 frames"](
        patient=identity_of(world),
        study=synthetic.StudySpec(
            study_date=world.patient.birth_date.replace(year=2026),
            institution_name="CHRU de Tours",
            description="Échographie couleur",
        ),
    )
    data = synthetic.to_bytes(synthetic.with_transfer_syntax(source, UID("1.2.840.10008.1.2.4.50")))
    expected = dcmread(io.BytesIO(data)).pixel_array[0].astype(float)
    shown = np.asarray(Image.open(io.BytesIO(render_png(data, frame=1))).convert("RGB"))
    assert np.abs(shown.astype(float) - expected).mean() < 2

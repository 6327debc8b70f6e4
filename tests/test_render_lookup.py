"""Rendered images (PS3.18 §10.4.1.1.3) are computed per distinct stored value and looked up:
the same pixels, bit for bit, as windowing every pixel (PS3.3 C.11.1, C.11.2)."""

import datetime as dt
import io

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from demo import synthetic
from imaging import render

PATIENT = synthetic.PatientIdentity(
    patient_id="T1", issuer="CHRU-TOURS", family_name="DUPONT", given_names="Jeanne",
    sex="F", birth_date=dt.date(1956, 3, 12),
)  # fmt: skip
SPEC = synthetic.StudySpec(
    study_date=dt.date(2026, 1, 15), institution_name="CHRU de Tours", description="Bilan"
)


def _every_pixel(ds, pixels, window):
    """The direct computation, pixel by pixel: what a radiologist's workstation shows."""
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    center = width = None
    if window is not None:
        center, width = window
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        values = apply_voi_lut(values, ds, index=0).astype(np.float64)
    if center is not None:
        low, high = center - width / 2, center + width / 2
    else:
        low, high = float(np.percentile(values, 0.5)), float(np.percentile(values, 99.5))
    if high <= low:
        high = low + 1
    scaled = np.clip((values - low) / (high - low), 0, 1) * 255
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        scaled = 255 - scaled
    return scaled.astype(np.uint8)


def _images():
    for modality, kwargs in (("CT", {"slices": 2}), ("MR", {}), ("DX", {})):
        ds = synthetic.study(patient=PATIENT, spec=SPEC, modality=modality, **kwargs)[0]
        yield modality, pydicom.dcmread(io.BytesIO(synthetic.to_bytes(ds)))


@pytest.mark.parametrize("window", [None, (40.0, 400.0), (-600.0, 1500.0)])
def test_a_rendered_image_is_the_same_as_windowing_every_pixel(window):
    for modality, ds in _images():
        pixels = ds.pixel_array
        variants = [ds]
        stretched = pydicom.Dataset()
        stretched.update(ds)
        for keyword in ("WindowCenter", "WindowWidth"):
            if keyword in stretched:
                delattr(stretched, keyword)  # no window: the 0.5-99.5 % stretch
        inverted = pydicom.Dataset()
        inverted.update(stretched)
        inverted.PhotometricInterpretation = "MONOCHROME1"
        variants += [stretched, inverted]
        for variant in variants:
            expected = _every_pixel(variant, pixels, window)
            assert np.array_equal(render._monochrome_to_8bit(variant, pixels, window), expected), (
                modality
            )


def test_the_stretch_matches_numpy_percentile_for_any_histogram():
    rng = np.random.default_rng(13)
    for _trial in range(500):
        pixels = rng.integers(-1024, 3000, int(rng.integers(1, 3000))).astype(np.int16)
        lowest = int(pixels.min())
        counts = np.bincount(pixels.astype(np.int64) - lowest)
        values = (np.arange(lowest, lowest + len(counts)) * rng.choice([1.0, -0.5])).astype(float)
        for q in (0.5, 99.5):
            expected = float(np.percentile(values[pixels.astype(np.int64) - lowest], q))
            assert render._percentile(values, counts, q) == expected

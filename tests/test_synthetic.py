"""Synthetic DICOM as the demo seeding, the archive tests and the viewer will meet it.

What a radiologist would check on the images (air, lung, bone, soft tissue in Hounsfield
units; slices in order), what an archive relies on (stable UIDs, one study per exam, patient
attributes identical on every instance) and what a decoder must survive (every transfer
syntax written to a Part 10 file, read back by pydicom and decoded). Expected values come
from the DICOM attributes of the files, never from the generator's internals.
"""

import datetime as dt
import io
import math

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_rescale, get_encoder
from pydicom.uid import (
    JPEG2000,
    BasicTextSRStorage,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    EncapsulatedPDFStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSNearLossless,
    MRImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from demo import synthetic

INS_NIR_TEST_OID = "1.2.250.1.213.1.4.10"
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"


@pytest.fixture(scope="module")
def jeanne() -> synthetic.PatientIdentity:
    """A patient of the Tours CHRU with a qualified (test) INS and an accented name."""
    return synthetic.PatientIdentity(
        patient_id="T200001",
        issuer="CHRU-TOURS",
        family_name="LEFÈVRE",
        given_names="Jeanne Marie",
        sex="F",
        birth_date=dt.date(1961, 3, 14),
        ins="261033726100160",
        ins_oid=INS_NIR_TEST_OID,
    )


@pytest.fixture(scope="module")
def chest_ct_exam() -> synthetic.StudySpec:
    return synthetic.StudySpec(
        study_date=dt.date(2025, 6, 2),
        institution_name="CHRU de Tours",
        description="TDM thoracique",
        accession_number="A2025060201",
        referring_physician="MARTIN^Éloïse",
    )


@pytest.fixture(scope="module")
def small_ct(jeanne, chest_ct_exam) -> list[pydicom.Dataset]:
    """Eight 128x128 slices through the middle of the thorax (2.8 mm pixels)."""
    return synthetic.ct_series(
        patient=jeanne, study=chest_ct_exam, slices=8, rows=128, columns=128, seed=7
    )


@pytest.fixture(scope="module")
def images(jeanne, chest_ct_exam, small_ct) -> dict[str, pydicom.Dataset]:
    """One small image of each kind, for the transfer syntax round trips."""
    return {
        "CT": small_ct[4],
        "MR": synthetic.mr_series(
            patient=jeanne, study=chest_ct_exam, slices=3, rows=64, columns=64
        )[1],
        "DX": synthetic.xr_image(patient=jeanne, study=chest_ct_exam, rows=160, columns=133),
        "US": synthetic.us_multiframe(
            patient=jeanne, study=chest_ct_exam, frames=3, rows=60, columns=80
        ),
        "US-RGB": synthetic.us_multiframe(
            patient=jeanne,
            study=chest_ct_exam,
            frames=3,
            rows=60,
            columns=80,
            photometric="RGB",
        ),
    }


def read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def hounsfield(ds: pydicom.Dataset) -> np.ndarray:
    return apply_rescale(ds.pixel_array, ds)


def patch(ds: pydicom.Dataset, values: np.ndarray, x: float, y: float, half: float = 5.0):
    """The values within ``half`` mm of patient point (x, y), located from the Image Plane
    attributes (axial slices: rows run posterior, columns towards the patient's left)."""
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    x0, y0 = float(ds.ImagePositionPatient[0]), float(ds.ImagePositionPatient[1])
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    c0 = max(0, math.floor((x - half - x0) / column_spacing))
    c1 = math.ceil((x + half - x0) / column_spacing) + 1
    r0 = max(0, math.floor((y - half - y0) / row_spacing))
    r1 = math.ceil((y + half - y0) / row_spacing) + 1
    return values[r0:r1, c0:c1]


# --- CT: what the radiologist sees --------------------------------------------------------------


def test_ct_hounsfield_units_are_those_of_a_chest(small_ct):
    middle = small_ct[len(small_ct) // 2]
    hu = hounsfield(middle)
    # Air in front of the chest, inside the reconstruction circle.
    assert abs(np.median(patch(middle, hu, 0.0, -165.0)) - (-1000)) < 30
    # The right lung (patient's right is negative x), in the middle of its field.
    assert -950 < np.median(patch(middle, hu, -62.0, 15.0)) < -700
    # The heart, left of the midline: blood and myocardium, no contrast agent.
    assert -100 < np.median(patch(middle, hu, 20.0, 0.0)) < 100
    # The vertebral body, posterior midline; a slice may fall on a disc, not all of them.
    vertebral = [np.median(patch(ds, hounsfield(ds), 0.0, 69.0, half=4.0)) for ds in small_ct]
    assert max(vertebral) > 300
    assert sum(value > 300 for value in vertebral) >= len(small_ct) // 2
    # Cortical bone reaches the top of the stated range, nothing beyond the scanner's.
    assert 1000 < hu.max() <= 3071


def test_ct_pixels_are_signed_with_padding_outside_the_field_of_view(small_ct):
    ds = small_ct[0]
    assert ds.PixelRepresentation == 1
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, 16, 15)
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept), ds.RescaleType) == (1, -1024, "HU")
    pixels = ds.pixel_array
    assert pixels[0, 0] == ds.PixelPaddingValue == -2000
    assert ds.SmallestImagePixelValue == pixels.min()
    assert ds.LargestImagePixelValue == pixels.max()


def test_ct_slices_are_contiguous_and_ordered_head_to_feet(small_ct):
    z = [float(ds.ImagePositionPatient[2]) for ds in small_ct]
    thickness = float(small_ct[0].SliceThickness)
    assert thickness == 1.25
    assert np.allclose(np.diff(z), -thickness)
    assert [float(ds.SliceLocation) for ds in small_ct] == z
    assert [ds.InstanceNumber for ds in small_ct] == list(range(1, 9))
    assert len({ds.SOPInstanceUID for ds in small_ct}) == 8
    assert len({ds.SeriesInstanceUID for ds in small_ct}) == 1
    assert len({ds.FrameOfReferenceUID for ds in small_ct}) == 1
    first = small_ct[0]
    assert first.SOPClassUID == CTImageStorage
    assert first.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert first.Manufacturer == "MIRC synthetic"
    assert float(first.PixelSpacing[0]) * first.Columns == pytest.approx(360.0)
    assert (float(first.WindowCenter[0]), float(first.WindowWidth[0])) == (50, 350)
    assert first.KVP == 120


def test_full_default_ct_is_generated(jeanne, chest_ct_exam):
    series = synthetic.ct_series(patient=jeanne, study=chest_ct_exam)
    assert len(series) == 300
    first, middle, last = series[0], series[150], series[-1]
    assert first.pixel_array.shape == last.pixel_array.shape == (512, 512)
    assert float(first.PixelSpacing[0]) == pytest.approx(0.703125)
    span = float(first.ImagePositionPatient[2]) - float(last.ImagePositionPatient[2])
    assert span == pytest.approx(299 * 1.25)

    def lung_pixels(ds):
        hu = hounsfield(ds)
        return int(((hu > -950) & (hu < -700)).sum())

    # The series starts above the apices and ends below the bases.
    assert lung_pixels(middle) > 20 * max(lung_pixels(first), lung_pixels(last), 1)
    assert read(synthetic.to_bytes(middle)).pixel_array.shape == (512, 512)


# --- Identity, determinism, studies --------------------------------------------------------------


def test_same_seed_gives_the_same_bytes_and_another_seed_other_uids(jeanne, chest_ct_exam):
    def generate(seed):
        return synthetic.ct_series(
            patient=jeanne, study=chest_ct_exam, slices=2, rows=32, columns=32, seed=seed
        )

    first, again, other = generate(3), generate(3), generate(4)
    assert [synthetic.to_bytes(ds) for ds in first] == [synthetic.to_bytes(ds) for ds in again]
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert getattr(first[0], keyword) != getattr(other[0], keyword)
    assert not np.array_equal(first[0].pixel_array, other[0].pixel_array)


@pytest.mark.parametrize(
    "make",
    [
        lambda p, s: synthetic.mr_series(patient=p, study=s, slices=2, rows=32, columns=32),
        lambda p, s: synthetic.xr_image(patient=p, study=s, rows=64, columns=53, modality="CR"),
        lambda p, s: synthetic.us_multiframe(patient=p, study=s, frames=2, rows=32, columns=40),
        lambda p, s: synthetic.sr_report(patient=p, study=s, text="RAS", author="DUPONT^Jean"),
        lambda p, s: synthetic.encapsulated_pdf(patient=p, study=s, pdf_bytes=PDF, title="CR"),
    ],
    ids=["MR", "CR", "US", "SR", "PDF"],
)
def test_every_generator_is_reproducible(jeanne, chest_ct_exam, make):
    def encoded():
        made = make(jeanne, chest_ct_exam)
        return [synthetic.to_bytes(ds) for ds in (made if isinstance(made, list) else [made])]

    assert encoded() == encoded()


@pytest.mark.parametrize("modality", ["CT", "MR", "DX", "CR", "US"])
def test_a_study_shares_its_uid_and_the_patient_attributes(jeanne, chest_ct_exam, modality):
    size = {"CT": {"slices": 3, "rows": 32, "columns": 32}, "MR": {"slices": 3, "rows": 32}}
    size.update({kind: {"rows": 64, "columns": 53} for kind in ("DX", "CR")})
    size["US"] = {"frames": 2, "rows": 32, "columns": 40}
    instances = synthetic.study(
        patient=jeanne, spec=chest_ct_exam, modality=modality, seed=11, **size[modality]
    )
    report = synthetic.sr_report(
        patient=jeanne,
        study=chest_ct_exam,
        text="Examen sans particularité.",
        author="DUPONT^Jean",
        referenced_series=instances,
    )
    document = synthetic.encapsulated_pdf(
        patient=jeanne,
        study=chest_ct_exam,
        pdf_bytes=PDF,
        title="Compte rendu",
        seed=11,
    )
    everything = [*instances, report, document]
    assert {ds.StudyInstanceUID for ds in everything} == {instances[0].StudyInstanceUID}
    assert {ds.Modality for ds in instances} == {modality}
    for ds in everything:
        written = read(synthetic.to_bytes(ds))
        assert written.SpecificCharacterSet == "ISO_IR 192"
        assert str(written.PatientName) == "LEFÈVRE^Jeanne Marie"
        assert written.PatientID == "T200001"
        assert written.IssuerOfPatientID == "CHRU-TOURS"
        assert written.PatientBirthDate == "19610314"
        assert written.PatientSex == "F"
        assert written.PatientAge == "064Y"
        assert written.AccessionNumber == "A2025060201"
        assert written.InstitutionName == "CHRU de Tours"
        assert str(written.ReferringPhysicianName) == "MARTIN^Éloïse"
        (ins,) = written.OtherPatientIDsSequence
        assert (ins.PatientID, ins.IssuerOfPatientID) == ("261033726100160", INS_NIR_TEST_OID)
        assert ins.TypeOfPatientID == "TEXT"


def test_an_explicit_study_uid_is_kept(jeanne, chest_ct_exam):
    spec = synthetic.StudySpec(
        study_date=chest_ct_exam.study_date,
        institution_name="CH de Blois",
        description="Radio thorax",
        study_instance_uid="1.2.826.0.1.3680043.8.498.1234",
    )
    (image,) = synthetic.study(patient=jeanne, spec=spec, modality="DX", rows=64, columns=53)
    assert image.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.1234"


def test_identities_are_checked():
    base = {
        "patient_id": "O300002",
        "issuer": "CHR-ORLEANS",
        "family_name": "NGUYEN",
        "given_names": "Minh",
        "birth_date": dt.date(1990, 1, 1),
    }
    assert synthetic.PatientIdentity(**base, sex="O").sex == "O"
    with pytest.raises(ValueError, match="sex"):
        synthetic.PatientIdentity(**base, sex="X")
    with pytest.raises(ValueError, match="ins"):
        synthetic.PatientIdentity(**base, sex="M", ins="190017500100142")
    with pytest.raises(ValueError, match="delimiter"):
        synthetic.PatientIdentity(**{**base, "family_name": "NGUYEN^X"}, sex="M")


def test_accented_names_survive_every_native_encoding(chest_ct_exam):
    patient = synthetic.PatientIdentity(
        patient_id="B400003",
        issuer="CH-BOURGES",
        family_name="DE LA FOSSE-ŒUVRÉ",
        given_names="Anaïs Hélène",
        sex="F",
        birth_date=dt.date(2024, 12, 20),
    )
    (image,) = synthetic.study(
        patient=patient, spec=chest_ct_exam, modality="US", frames=1, rows=16, columns=16
    )
    for syntax in (
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        ExplicitVRBigEndian,
    ):
        data = synthetic.to_bytes(synthetic.with_transfer_syntax(image, syntax))
        written = read(data)
        assert str(written.PatientName) == "DE LA FOSSE-ŒUVRÉ^Anaïs Hélène"
        assert written.PatientAge == "005M"
        if syntax != DeflatedExplicitVRLittleEndian:
            assert "ŒUVRÉ".encode() in data  # UTF-8 on the wire, as ISO_IR 192 says


# --- Other modalities ---------------------------------------------------------------------------


def test_mr_is_a_brain_feet_to_head(jeanne, chest_ct_exam):
    series = synthetic.mr_series(patient=jeanne, study=chest_ct_exam, slices=6)
    z = [float(ds.ImagePositionPatient[2]) for ds in series]
    assert np.allclose(np.diff(z), float(series[0].SpacingBetweenSlices))
    assert float(series[0].SliceThickness) < float(series[0].SpacingBetweenSlices)
    ds = series[3]
    assert ds.SOPClassUID == MRImageStorage
    assert (ds.Rows, ds.Columns, ds.BitsStored, ds.PixelRepresentation) == (256, 256, 12, 0)
    pixels = ds.pixel_array
    assert pixels.max() <= 4095
    assert np.median(pixels[:20, :20]) < 100  # air: only noise
    brain = np.median(pixels[118:138, 118:138])
    assert 400 < brain < 1500
    assert pixels.max() > 1.5 * brain  # CSF is bright on T2


@pytest.mark.parametrize(
    ("modality", "sop_class"),
    [("DX", DigitalXRayImageStorageForPresentation), ("CR", ComputedRadiographyImageStorage)],
)
def test_chest_radiograph(jeanne, chest_ct_exam, modality, sop_class):
    ds = synthetic.xr_image(
        patient=jeanne, study=chest_ct_exam, modality=modality, rows=512, columns=425
    )
    assert ds.SOPClassUID == sop_class
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, 12, 11)
    pixels = ds.pixel_array
    assert pixels.max() <= 4095
    assert ds.PatientOrientation == ["L", "F"]
    # Patient's right lung on the viewer's left: darker than the mediastinum and the abdomen.
    rows, columns = pixels.shape
    right_lung = np.median(pixels[int(rows * 0.4), int(columns * 0.22) : int(columns * 0.3)])
    abdomen = np.median(pixels[int(rows * 0.9), int(columns * 0.3) : int(columns * 0.4)])
    background = np.median(pixels[int(rows * 0.05), :20])
    assert background < right_lung < abdomen


def test_ultrasound_loop(jeanne, chest_ct_exam):
    grey = synthetic.us_multiframe(patient=jeanne, study=chest_ct_exam, frames=4)
    colour = synthetic.us_multiframe(
        patient=jeanne, study=chest_ct_exam, frames=4, photometric="RGB"
    )
    assert grey.SOPClassUID == colour.SOPClassUID == UltrasoundMultiFrameImageStorage
    assert grey.pixel_array.shape == (4, 480, 640)
    assert colour.pixel_array.shape == (4, 480, 640, 3)
    assert colour.PlanarConfiguration == 0
    assert (grey.NumberOfFrames, float(grey.FrameTime), grey.CineRate) == (4, 40.0, 25)
    assert grey.FrameIncrementPointer == pydicom.tag.Tag("FrameTime")
    assert not np.array_equal(grey.pixel_array[0], grey.pixel_array[1])  # it moves
    red, blue = colour.pixel_array[..., 0], colour.pixel_array[..., 2]
    assert ((red.astype(int) - blue) > 150).any()  # colour Doppler flow


def test_report_holds_its_text_and_references(jeanne, chest_ct_exam, small_ct):
    text = "Nodule de 10 mm du lobe supérieur droit."
    report = synthetic.sr_report(
        patient=jeanne,
        study=chest_ct_exam,
        text=text,
        conclusion="Contrôle à 3 mois.",
        author="DUPONT^Jean",
        referenced_series=[small_ct],
    )
    written = read(synthetic.to_bytes(report))
    assert written.SOPClassUID == BasicTextSRStorage
    assert written.StudyInstanceUID == small_ct[0].StudyInstanceUID

    def texts(items):
        for item in items:
            if item.ValueType == "TEXT":
                yield item.TextValue
            yield from texts(item.get("ContentSequence", []))

    assert list(texts(written.ContentSequence)) == [text, "Contrôle à 3 mois."]
    (evidence,) = written.CurrentRequestedProcedureEvidenceSequence
    (series,) = evidence.ReferencedSeriesSequence
    referenced = [item.ReferencedSOPInstanceUID for item in series.ReferencedSOPSequence]
    assert referenced == [ds.SOPInstanceUID for ds in small_ct]


def test_pdf_is_encapsulated_byte_for_byte(jeanne, chest_ct_exam):
    odd = PDF + b"%"  # odd length: padded on writing, the length attribute says where it ends
    document = synthetic.encapsulated_pdf(
        patient=jeanne, study=chest_ct_exam, pdf_bytes=odd, title="Compte rendu RCP"
    )
    written = read(synthetic.to_bytes(document))
    assert written.SOPClassUID == EncapsulatedPDFStorage
    assert written.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert written.EncapsulatedDocument.startswith(b"%PDF")
    assert written.EncapsulatedDocumentLength == len(odd)
    assert written.EncapsulatedDocument[: written.EncapsulatedDocumentLength] == odd
    with pytest.raises(ValueError, match="PDF"):
        synthetic.encapsulated_pdf(
            patient=jeanne, study=chest_ct_exam, pdf_bytes=b"<html>", title="x"
        )


# --- Transfer syntaxes --------------------------------------------------------------------------

KINDS = ["CT", "MR", "DX", "US", "US-RGB"]


@pytest.mark.parametrize("syntax", synthetic.LOSSLESS_TRANSFER_SYNTAXES, ids=lambda u: u.name)
@pytest.mark.parametrize("kind", KINDS)
def test_lossless_round_trip_keeps_every_pixel(images, kind, syntax):
    if not synthetic.can_encode(syntax):
        pytest.skip(f"no encoder for {syntax.name} here (dcmcjpeg from DCMTK for SV1)")
    original = images[kind]
    copy = synthetic.with_transfer_syntax(original, syntax)
    data = synthetic.to_bytes(copy)
    assert data[128:132] == b"DICM"
    written = read(data)
    assert written.file_meta.TransferSyntaxUID == syntax
    assert written.file_meta.MediaStorageSOPInstanceUID == written.SOPInstanceUID
    assert written.SOPInstanceUID not in (original.SOPInstanceUID, "")
    assert written.SOPInstanceUID == synthetic.with_transfer_syntax(original, syntax).SOPInstanceUID
    assert written.LossyImageCompression == "00"
    assert written.PhotometricInterpretation == original.PhotometricInterpretation
    decoded, reference = written.pixel_array, original.pixel_array
    # Same kind and size; pydicom leaves big endian data in a big endian ('>i2') array.
    assert (decoded.dtype.kind, decoded.dtype.itemsize) == (
        reference.dtype.kind,
        reference.dtype.itemsize,
    )
    assert np.array_equal(decoded, reference)


@pytest.mark.parametrize("syntax", synthetic.LOSSY_TRANSFER_SYNTAXES, ids=lambda u: u.name)
@pytest.mark.parametrize("kind", KINDS)
def test_lossy_round_trip_stays_close(images, kind, syntax):
    original = images[kind]
    written = read(synthetic.to_bytes(synthetic.with_transfer_syntax(original, syntax)))
    assert written.file_meta.TransferSyntaxUID == syntax
    assert written.LossyImageCompression == "01"
    assert written.LossyImageCompressionMethod
    decoded = written.pixel_array.astype(np.int64)
    if syntax == JPEGBaseline8Bit:
        reference = synthetic.to_8bit(original).pixel_array.astype(np.int64)
        assert written.BitsStored == 8
        colour = original.SamplesPerPixel == 3
        assert written.PhotometricInterpretation == ("YBR_FULL_422" if colour else "MONOCHROME2")
        # Chroma is subsampled 2:1, so colour edges move more than grey levels.
        assert np.abs(decoded - reference).mean() < (8 if colour else 3)
        return
    reference = original.pixel_array.astype(np.int64)
    error = np.abs(decoded - reference)
    if syntax == JPEGLSNearLossless:
        assert error.max() <= synthetic.JLS_NEAR_LOSSLESS_ERROR
    elif syntax == JPEG2000:
        value_range = float(reference.max() - reference.min())
        target = max(1.0, synthetic.J2K_RELATIVE_RMS_ERROR * value_range)
        assert math.sqrt((error.astype(float) ** 2).mean()) < 3 * target
    assert error.any()  # lossy indeed, the comparison above is not vacuous


def test_jpeg_baseline_ct_keeps_hounsfield_units_through_the_rescale(small_ct):
    original = small_ct[4]
    written = read(synthetic.to_bytes(synthetic.with_transfer_syntax(original, JPEGBaseline8Bit)))
    assert (written.BitsAllocated, written.BitsStored, written.PixelRepresentation) == (8, 8, 0)
    assert written.ImageType[0] == "DERIVED"
    inside = original.pixel_array != original.PixelPaddingValue
    error = np.abs(hounsfield(written) - hounsfield(original))[inside]
    step = float(written.RescaleSlope)  # HU per grey level of the 8-bit copy
    assert np.median(error) < 2 * step


def test_a_compressed_copy_can_be_transcoded_again(images):
    compressed = synthetic.with_transfer_syntax(images["US-RGB"], JPEGBaseline8Bit)
    back = synthetic.with_transfer_syntax(compressed, ExplicitVRLittleEndian)
    assert back.PhotometricInterpretation == "RGB"
    assert back.LossyImageCompression == "01"  # once lossy, always lossy
    assert np.array_equal(read(synthetic.to_bytes(back)).pixel_array, compressed.pixel_array)


def test_transcoding_leaves_the_original_untouched(images):
    original = images["CT"]
    before = synthetic.to_bytes(original)
    synthetic.with_transfer_syntax(original, JPEG2000)
    synthetic.with_transfer_syntax(original, JPEGBaseline8Bit)
    assert synthetic.to_bytes(original) == before


def test_jpeg_lossless_sv1_says_why_it_is_missing(images, monkeypatch):
    try:
        in_pydicom = get_encoder(JPEGLosslessSV1).is_available
    except NotImplementedError:
        in_pydicom = False
    if in_pydicom:
        pytest.skip("pydicom encodes JPEG Lossless SV1 now: nothing can be missing")
    monkeypatch.setenv("PATH", "")  # a machine without DCMTK
    assert not synthetic.can_encode(JPEGLosslessSV1)
    with pytest.raises(NotImplementedError, match="JPEG Lossless SV1.*no encoder.*dcmcjpeg"):
        synthetic.with_transfer_syntax(images["CT"], JPEGLosslessSV1)


def test_documents_cannot_be_compressed_and_unknown_syntaxes_are_refused(jeanne, chest_ct_exam):
    report = synthetic.sr_report(patient=jeanne, study=chest_ct_exam, text="RAS", author="X^Y")
    with pytest.raises(ValueError, match="Pixel Data"):
        synthetic.with_transfer_syntax(report, JPEG2000)
    with pytest.raises(ValueError, match="not a transfer syntax"):
        synthetic.with_transfer_syntax(report, CTImageStorage)
    with pytest.raises(NotImplementedError):
        synthetic.with_transfer_syntax(report, "1.2.840.10008.1.2.4.201")  # HTJ2K


def test_to_bytes_refuses_a_file_meta_that_lies(images):
    native = synthetic.with_transfer_syntax(images["MR"], ExplicitVRLittleEndian)
    native.file_meta.TransferSyntaxUID = JPEG2000
    with pytest.raises(ValueError, match="encapsulated"):
        synthetic.to_bytes(native)
    compressed = synthetic.with_transfer_syntax(images["MR"], JPEG2000)
    compressed.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with pytest.raises(ValueError, match="native"):
        synthetic.to_bytes(compressed)

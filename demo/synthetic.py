"""Synthetic DICOM data: realistic enough to look at, reproducible, and free of real patients.

Used by the demo seeding, the test suite (ingest, archive contract tests, frame decoding across
transfer syntaxes) and the benchmarks. Every object is built from analytic phantoms with numpy:
nothing here ever comes from a real examination.

Determinism: a generator called twice with the same arguments returns the same UIDs and, once
written with :func:`to_bytes`, the same bytes. UIDs are derived with
:func:`pydicom.uid.generate_uid` from a fixed root and a hash of the identity, study, series,
seed and instance (PS3.5 section 9 and Annex B); dates and times come from the study, never
from the clock. Pixel data depend only on the seed and the matrix size.

Conventions: patient coordinates (PS3.3 C.7.6.2.1.1) in millimetres, x towards the patient's
left, y posterior, z towards the head. CT slices are ordered head to feet (z decreasing), MR
slices feet to head (z increasing), so viewers meet both orders.
"""

import copy
import dataclasses
import datetime as dt
import hashlib
import io
import math
import pickle
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_encoder
from pydicom.uid import (
    JPEG2000,
    PYDICOM_IMPLEMENTATION_UID,
    PYDICOM_ROOT_UID,
    UID,
    BasicTextSRStorage,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    EncapsulatedPDFStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    MRImageStorage,
    RLELossless,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

__all__ = [
    "JLS_NEAR_LOSSLESS_ERROR",
    "LOSSLESS_TRANSFER_SYNTAXES",
    "LOSSY_TRANSFER_SYNTAXES",
    "PatientIdentity",
    "StudySpec",
    "can_encode",
    "ct_series",
    "encapsulated_pdf",
    "mr_series",
    "sr_report",
    "study",
    "study_instance_uid",
    "to_8bit",
    "to_bytes",
    "us_multiframe",
    "with_transfer_syntax",
    "xr_image",
]

# pydicom's root is open to any user of the library; a hash of the entropy follows it.
UID_ROOT = PYDICOM_ROOT_UID
MANUFACTURER = "MIRC synthetic"
MODEL_NAME = "Phantom"
SOFTWARE_VERSION = "mirc-synthetic 1"
IMPLEMENTATION_VERSION_NAME = "MIRC_SYNTH_1"
UTF8 = "ISO_IR 192"
PARIS = ZoneInfo("Europe/Paris")

# Lossy settings of with_transfer_syntax(); tests derive their tolerances from them.
JLS_NEAR_LOSSLESS_ERROR = 2  # JPEG-LS NEAR parameter: the maximum absolute error per sample
# JPEG 2000 lossy targets an RMS error of this fraction of the image's stored value range
# (at least one grey level). openjpeg's PSNR is relative to 2**BitsStored - 1, whatever range
# the data use, so one fixed PSNR would mean near-lossless 8-bit and ruined 16-bit images.
J2K_RELATIVE_RMS_ERROR = 0.001
JPEG_QUALITY = 90

LOSSLESS_TRANSFER_SYNTAXES = (
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    RLELossless,
    JPEGLosslessSV1,  # only where an encoder is installed: see can_encode()
    JPEGLSLossless,
    JPEG2000Lossless,
)
LOSSY_TRANSFER_SYNTAXES = (JPEGBaseline8Bit, JPEGLSNearLossless, JPEG2000)
_LOSSY_METHOD = {
    JPEGBaseline8Bit: "ISO_10918_1",
    JPEGLSNearLossless: "ISO_14495_1",
    JPEG2000: "ISO_15444_1",
}
_NO_JPEG_LOSSLESS_ENCODER = (
    "JPEG Lossless SV1 (1.2.840.10008.1.2.4.70) cannot be written here: pydicom "
    f"{pydicom.__version__} has no encoder for it (its encoders cover RLE Lossless, JPEG-LS "
    "and JPEG 2000 only), Pillow writes only lossy DCT JPEG, pylibjpeg-libjpeg only decodes, "
    "and DCMTK's dcmcjpeg is not on the PATH (Debian package dcmtk)."
)


# --- Identity and study ------------------------------------------------------------------------


@dataclass(frozen=True)
class PatientIdentity:
    """Who the synthetic images belong to (PS3.3 C.7.1.1 Patient Module).

    ``ins``/``ins_oid`` go to the Other Patient IDs Sequence (0010,1002); demo data must use
    the test OIDs 1.2.250.1.213.1.4.10 (NIR) and 1.2.250.1.213.1.4.11 (NIA).
    """

    patient_id: str
    issuer: str
    family_name: str
    given_names: str
    sex: str
    birth_date: dt.date
    ins: str = ""
    ins_oid: str = ""

    def __post_init__(self):
        if self.sex not in ("F", "M", "O"):
            raise ValueError(f"sex must be 'F', 'M' or 'O', not {self.sex!r}")
        if not self.patient_id or len(self.patient_id) > 64 or "\\" in self.patient_id:
            raise ValueError(f"invalid PatientID (LO, 1 to 64 characters): {self.patient_id!r}")
        if not self.family_name:
            raise ValueError("family_name is required")
        for part in (self.family_name, self.given_names):
            if any(delimiter in part for delimiter in "^=\\"):
                raise ValueError(f"PN component delimiters are not allowed in {part!r}")
        if bool(self.ins) != bool(self.ins_oid):
            raise ValueError("ins and ins_oid go together")

    @property
    def dicom_name(self) -> str:
        """PN value (PS3.5 6.2.1): ``FAMILY^Given1 Given2``."""
        return f"{self.family_name}^{self.given_names}" if self.given_names else self.family_name


@dataclass(frozen=True)
class StudySpec:
    """The study the instances belong to (PS3.3 C.7.2.1 General Study Module)."""

    study_date: dt.date
    institution_name: str
    description: str
    accession_number: str = ""
    referring_physician: str = ""
    study_instance_uid: str = ""


def _uid(*parts: object) -> UID:
    # generate_uid() concatenates entropy sources with no separator (["ab", "c"] and
    # ["a", "bc"] collide), so join them ourselves with one that never occurs in the parts.
    return generate_uid(prefix=UID_ROOT, entropy_srcs=["\x1f".join(str(p) for p in parts)])


def study_instance_uid(*, patient: PatientIdentity, spec: StudySpec, seed: int = 0) -> str:
    """The StudyInstanceUID the generators use when ``spec.study_instance_uid`` is empty."""
    if spec.study_instance_uid:
        return spec.study_instance_uid
    return _uid(
        "study",
        patient.issuer,
        patient.patient_id,
        spec.study_date.isoformat(),
        spec.institution_name,
        spec.description,
        spec.accession_number,
        seed,
    )


def _digest(*parts: object) -> int:
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


@dataclass(frozen=True)
class _Context:
    """What every instance of one series shares: resolved UIDs and acquisition times."""

    patient: PatientIdentity
    spec: StudySpec
    study_uid: str
    study_time: dt.time

    @classmethod
    def make(cls, patient: PatientIdentity, spec: StudySpec, seed: int) -> "_Context":
        study_uid = study_instance_uid(patient=patient, spec=spec, seed=seed)
        minutes = 8 * 60 + _digest("time", study_uid) % (9 * 60)  # 08:00 to 16:59
        return cls(patient, spec, study_uid, dt.time(minutes // 60, minutes % 60))

    def at(self, minutes: float) -> dt.datetime:
        """A local (Europe/Paris) moment ``minutes`` after the study started."""
        start = dt.datetime.combine(self.spec.study_date, self.study_time, tzinfo=PARIS)
        return start + dt.timedelta(minutes=minutes)


def _da(day: dt.date) -> str:
    return day.strftime("%Y%m%d")


def _tm(moment: dt.datetime) -> str:
    text = moment.strftime("%H%M%S")
    return f"{text}.{moment.microsecond:06d}" if moment.microsecond else text


def _dt(moment: dt.datetime) -> str:
    return _da(moment.date()) + _tm(moment)


def _tz_offset(moment: dt.datetime) -> str:
    """TimezoneOffsetFromUTC (0008,0201): ``+0100`` in winter, ``+0200`` in summer."""
    minutes = int(moment.utcoffset().total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def _ds(value: float) -> str:
    """A DS value (at most 16 characters) with a stable textual form."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _age(birth: dt.date, day: dt.date) -> str:
    """PatientAge (0010,1010), AS: ``045Y``, ``011M``, ``020D``."""
    months = (day.year - birth.year) * 12 + day.month - birth.month - (day.day < birth.day)
    if months >= 24:
        return f"{min(months // 12, 999):03d}Y"
    if months >= 1:
        return f"{months:03d}M"
    return f"{max((day - birth).days, 0):03d}D"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> FileMetaDataset:
    """File Meta Information (PS3.10 section 7.1)."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def _base(
    *,
    ctx: _Context,
    sop_class_uid: str,
    sop_instance_uid: str,
    modality: str,
    series_uid: str,
    series_number: int,
    series_description: str,
    series_time: dt.datetime,
    content_time: dt.datetime,
    instance_number: int,
) -> Dataset:
    """The modules every IOD here shares.

    SOP Common (PS3.3 C.12.1), Patient (C.7.1.1), General Study (C.7.2.1), Patient Study
    (C.7.2.2), General Series (C.7.3.1) and General Equipment (C.7.5.1).
    """
    patient, spec = ctx.patient, ctx.spec
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class_uid, sop_instance_uid, ExplicitVRLittleEndian)
    # SOP Common
    ds.SpecificCharacterSet = UTF8
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = _da(content_time.date())
    ds.InstanceCreationTime = _tm(content_time)
    ds.TimezoneOffsetFromUTC = _tz_offset(content_time)
    # Patient
    ds.PatientName = patient.dicom_name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = patient.issuer
    ds.PatientBirthDate = _da(patient.birth_date)
    ds.PatientSex = patient.sex
    if patient.ins:
        other = Dataset()
        other.PatientID = patient.ins
        other.IssuerOfPatientID = patient.ins_oid
        other.TypeOfPatientID = "TEXT"
        qualifiers = Dataset()
        qualifiers.UniversalEntityID = patient.ins_oid
        qualifiers.UniversalEntityIDType = "ISO"
        other.IssuerOfPatientIDQualifiersSequence = [qualifiers]
        ds.OtherPatientIDsSequence = [other]
    # General Study and Patient Study
    ds.StudyInstanceUID = ctx.study_uid
    ds.StudyDate = _da(spec.study_date)
    ds.StudyTime = _tm(ctx.at(0))
    ds.StudyID = (spec.accession_number or f"{_digest(ctx.study_uid) % 10**8:08d}")[:16]
    ds.AccessionNumber = spec.accession_number
    ds.ReferringPhysicianName = spec.referring_physician
    ds.StudyDescription = spec.description
    ds.PatientAge = _age(patient.birth_date, spec.study_date)
    # General Series
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.SeriesDate = _da(series_time.date())
    ds.SeriesTime = _tm(series_time)
    # General Equipment
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL_NAME
    ds.SoftwareVersions = SOFTWARE_VERSION
    ds.InstitutionName = spec.institution_name
    ds.StationName = "MIRC-SYNTH"
    # General Image / document numbering
    ds.InstanceNumber = instance_number
    ds.ContentDate = _da(content_time.date())
    ds.ContentTime = _tm(content_time)
    return ds


def _image_pixel(
    ds: Dataset,
    *,
    rows: int,
    columns: int,
    bits_stored: int,
    signed: bool = False,
    photometric: str = "MONOCHROME2",
    bits_allocated: int = 16,
) -> None:
    """Image Pixel Module (PS3.3 C.7.6.3) description of the native pixel data."""
    ds.SamplesPerPixel = 3 if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422") else 1
    ds.PhotometricInterpretation = photometric
    if ds.SamplesPerPixel > 1:
        ds.PlanarConfiguration = 0
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0


def _set_pixel_data(ds: Dataset, array: np.ndarray, *, big_endian: bool = False) -> None:
    """Native (uncompressed) Pixel Data (PS3.5 section 8.1.1): OB for 8 bits, OW above."""
    if ds.BitsAllocated <= 8:
        ds.PixelData = np.ascontiguousarray(array, dtype=np.uint8).tobytes()
        ds["PixelData"].VR = "OB"
    else:
        kind = "i" if ds.PixelRepresentation else "u"
        dtype = np.dtype(f"{'>' if big_endian else '<'}{kind}{ds.BitsAllocated // 8}")
        ds.PixelData = np.ascontiguousarray(array, dtype=dtype).tobytes()
        ds["PixelData"].VR = "OW"
    ds["PixelData"].is_undefined_length = False
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            del ds[keyword]


def _stamper(template: Dataset):
    """A factory of independent deep copies of a series template, one per instance.

    A pickle round trip copies a pydicom dataset about four times faster than
    copy.deepcopy(); the bytes are made here from our own template and never stored.
    """
    blob = pickle.dumps(template, protocol=pickle.HIGHEST_PROTOCOL)
    return lambda: pickle.loads(blob)  # noqa: S301


class _NoiseBank:
    """Gaussian noise for many slices at the cost of four: each slice reads a window at a
    random offset of a field twice its size. Drawing a full field per slice would take
    more time than painting the anatomy."""

    def __init__(self, rng: np.random.Generator, rows: int, columns: int):
        self.rows, self.columns = rows, columns
        self.field = rng.standard_normal((2 * rows, 2 * columns), dtype=np.float32)

    def window(self, rng: np.random.Generator) -> np.ndarray:
        r, c = rng.integers(0, self.rows + 1), rng.integers(0, self.columns + 1)
        sign = 1.0 if rng.random() < 0.5 else -1.0
        return sign * self.field[r : r + self.rows, c : c + self.columns]


# --- Geometry helpers (vectorised over a bounding box, never per pixel) -------------------------


def _smoothstep(edge0: float, edge1: float, x: float) -> float:
    t = min(max((x - edge0) / (edge1 - edge0), 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


def _span(axis: np.ndarray, low: float, high: float) -> tuple[int, int]:
    """Index range of the sorted pixel-centre coordinates ``axis`` within [low, high]."""
    return int(np.searchsorted(axis, low, "left")), int(np.searchsorted(axis, high, "right"))


class _Axis:
    """Pixel-centre coordinates (mm) of a regular grid centred on 0."""

    def __init__(self, count: int, spacing: float):
        self.count, self.spacing = count, spacing
        self.first = -(count - 1) / 2 * spacing
        self.values = (self.first + np.arange(count) * spacing).astype(np.float32)

    def span(self, low: float, high: float) -> tuple[int, int]:
        """Index range of the pixel centres within [low, high] (arithmetic, no search)."""
        start = math.ceil((low - self.first) / self.spacing)
        stop = math.floor((high - self.first) / self.spacing) + 1
        return max(start, 0), min(stop, self.count)


class _Canvas:
    """A float32 image over two axes: ``x`` (columns) and ``y`` (rows), in mm."""

    def __init__(self, image: np.ndarray, x: _Axis, y: _Axis):
        self.image, self.x, self.y = image, x, y
        self.xs, self.ys = x.values, y.values

    def ellipse(self, cx, cy, ax, ay, *, angle: float = 0.0):
        """Bounding box and mask of an ellipse (semi-axes ax, ay; rotated by angle radians)."""
        if ax <= 0 or ay <= 0:
            return None
        extent = max(ax, ay) if angle else None
        ex, ey = (extent, extent) if extent else (ax, ay)
        c0, c1 = self.x.span(cx - ex, cx + ex)
        r0, r1 = self.y.span(cy - ey, cy + ey)
        if c0 >= c1 or r0 >= r1:
            return None
        dx = (self.xs[c0:c1] - cx)[None, :]
        dy = (self.ys[r0:r1] - cy)[:, None]
        if angle:
            cos, sin = math.cos(angle), math.sin(angle)
            u = (dx * cos + dy * sin) / ax
            v = (-dx * sin + dy * cos) / ay
            mask = u * u + v * v <= 1.0
        else:
            # Half-width of each row: one broadcast comparison instead of a full quadratic.
            half = ax * np.sqrt(np.clip(1.0 - (dy / ay) ** 2, 0.0, None))
            mask = np.abs(dx) <= half
        return (slice(r0, r1), slice(c0, c1)), mask

    def paint(self, shape, value) -> None:
        if shape is None:
            return
        box, mask = shape
        region = self.image[box]
        if np.ndim(value):
            region[mask] = np.broadcast_to(value, region.shape)[mask]
        else:
            region[mask] = value

    def fill_ellipse(self, cx, cy, ax, ay, value, *, angle: float = 0.0):
        shape = self.ellipse(cx, cy, ax, ay, angle=angle)
        self.paint(shape, value)
        return shape

    def capsule(self, a, b, radius, edge):
        """Bounding box and soft weight (1 inside, 0 outside) of a 2D capsule from a to b."""
        c0, c1 = self.x.span(min(a[0], b[0]) - radius - edge, max(a[0], b[0]) + radius + edge)
        r0, r1 = self.y.span(min(a[1], b[1]) - radius - edge, max(a[1], b[1]) + radius + edge)
        if c0 >= c1 or r0 >= r1:
            return None
        return (slice(r0, r1), slice(c0, c1)), _capsule_weight(
            self.xs[c0:c1][None, :] - a[0], self.ys[r0:r1][:, None] - a[1], a, b, radius, edge
        )


def _capsule_weight(px, py, a, b, radius, edge):
    """Soft weight of a capsule at offsets (px, py) from its end a."""
    vx, vy = b[0] - a[0], b[1] - a[1]
    length2 = vx * vx + vy * vy
    if length2 > 1e-9:
        t = np.clip((px * vx + py * vy) / length2, 0.0, 1.0)
        px = px - t * vx
        py = py - t * vy
    distance = np.sqrt(px * px + py * py)
    return np.clip((radius - distance) / edge + 0.5, 0.0, 1.0)


# --- CT: thorax phantom ------------------------------------------------------------------------


class _Thorax:
    """An analytic adult thorax in Hounsfield units, lying supine on the table (HFS).

    Each slice is computed from smooth functions of z, so neighbouring slices differ
    slightly as in a real acquisition: neck and shoulders above the apices, lungs with a
    gravity gradient and a pulmonary vessel tree, heart, aorta, trachea and bronchi,
    vertebrae with discs, sternum, ribs, liver domes below the bases, and one nodule.
    """

    TABLE_TOP = 125.0  # y of the table top: the patient's back rests on it
    AIR, FAT, SKIN, MUSCLE, SOFT, LIVER, BLOOD = -1000.0, -100.0, 25.0, 45.0, 38.0, 58.0, 48.0
    HEART = 42.0  # myocardium and blood look alike without contrast
    NODULE, VESSEL, PERICARDIAL_FAT, MEDIASTINAL_FAT = 30.0, 40.0, -95.0, -90.0
    CORTICAL, CANCELLOUS, DISC, CANAL = 1050.0, 420.0, 85.0, 25.0
    NOISE_SD = 10.0

    def __init__(self, rng: np.random.Generator):
        self.size = float(rng.uniform(0.94, 1.06))
        self.length = 280.0 * self.size  # apex to costophrenic recess
        self.rib_phase = float(rng.uniform(0.0, 2.0 * math.pi))
        self.disc_phase = float(rng.uniform(0.0, 27.0))
        self._vessels = self._vessel_tree(rng)
        side = -1.0 if rng.random() < 0.6 else 1.0  # right lung more often, as in life
        u = float(rng.uniform(0.3, 0.42))  # upper lobe
        g = self.geometry(self.z_of(u))
        self.nodule = (
            side * 0.5 * g["ai"] + float(rng.uniform(-8.0, 8.0)),
            g["lung_y"] + float(rng.uniform(-10.0, 10.0)),
            self.z_of(u),
            float(rng.uniform(4.5, 6.0)),  # radius: a nodule of about 1 cm
            float(rng.uniform(0.0, 2.0 * math.pi)),
        )

    def u_of(self, z: float) -> float:
        """0 at the lung apices, 1 at the costophrenic recesses."""
        return (self.length / 2 - z) / self.length

    def z_of(self, u: float) -> float:
        return self.length / 2 - u * self.length

    def geometry(self, z: float) -> dict:
        s, u = self.size, self.u_of(z)
        thorax = _smoothstep(-0.35, -0.05, u)  # neck (0) to thorax (1)
        a = s * (70.0 + 80.0 * thorax)
        b = s * (70.0 + 25.0 * thorax + 18.0 * math.sin(math.pi * min(max(u, 0.0), 1.0)))
        cy = self.TABLE_TOP - b - 1.0
        ai, bi = a - 26.0 * s, b - 26.0 * s
        rv = 17.0 * s * (0.75 + 0.25 * _smoothstep(-0.3, 0.3, u))
        yv = cy + b - 55.0 * s
        return {
            "u": u,
            "a": a,
            "b": b,
            "cy": cy,
            "ai": ai,
            "bi": bi,
            "lung_y": cy + 0.04 * bi,
            "rv": rv,
            "yv": yv,
        }

    def _vessel_tree(self, rng: np.random.Generator) -> np.ndarray:
        """Pulmonary vessels as 3D segments (x0, y0, z0, x1, y1, z1, radius), from each hilum."""
        zh = self.z_of(0.48)
        g = self.geometry(zh)
        segments: list[tuple[float, ...]] = []

        def grow(start, direction, length, radius, depth):
            end = start + direction * length
            segments.append((*start, *end, radius))
            if depth == 4:
                return
            for _ in range(2):
                turn = rng.normal(0.0, 0.45, 3)
                child = direction + turn
                child /= np.linalg.norm(child)
                grow(end, child, length * 0.8, radius * 0.7, depth + 1)

        for side in (-1.0, 1.0):
            hilum = np.array([side * 0.2 * g["ai"], g["lung_y"], zh])
            for elevation in (62.0, 45.0, 28.0, 10.0, -8.0, -25.0, -42.0, -58.0, -70.0):
                el = math.radians(elevation + rng.normal(0.0, 8.0))
                az = math.radians(rng.uniform(-60.0, 60.0))
                direction = np.array(
                    [side * math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
                )
                grow(hilum, direction, 40.0 * self.size, 4.5, 0)
        return np.array(segments, dtype=np.float64)

    def slice_hu(self, canvas: _Canvas, z: float, thickness: float) -> None:
        """Paint the slice at ``z`` (mm) into ``canvas`` (pre-filled with air and the table)."""
        g = self.geometry(z)
        u, s, cy, a, b, ai, bi = g["u"], self.size, g["cy"], g["a"], g["b"], g["ai"], g["bi"]
        ys = canvas.ys
        # Body wall: skin, subcutaneous fat, muscle, then the thoracic cavity.
        canvas.fill_ellipse(0.0, cy, a, b, self.SKIN)
        canvas.fill_ellipse(0.0, cy, a - 2.0 * s, b - 2.0 * s, self.FAT)
        canvas.fill_ellipse(0.0, cy, a - 14.0 * s, b - 14.0 * s, self.MUSCLE)
        canvas.fill_ellipse(0.0, cy, ai, bi, self.SOFT)
        liver = _smoothstep(0.68, 0.98, u)
        if liver > 0:
            canvas.fill_ellipse(
                -0.2 * ai, cy + 0.05 * bi, 0.75 * ai * liver, 0.85 * bi * liver, self.LIVER
            )
        fat = _smoothstep(0.0, 0.15, u) * (1.0 - _smoothstep(0.65, 0.85, u))
        if fat > 0:
            canvas.fill_ellipse(
                0.0, cy - 0.45 * bi, 0.2 * ai * fat, 0.35 * bi * fat, self.MEDIASTINAL_FAT
            )
        # Lungs, denser posteriorly (gravity), minus the diaphragmatic domes at the bases.
        lungs = np.zeros(canvas.image.shape, dtype=bool)
        grow = math.sqrt(_smoothstep(-0.02, 0.22, u))
        for side, dome_start in ((-1.0, 0.70), (1.0, 0.74)):
            shape = canvas.ellipse(side * 0.5 * ai, g["lung_y"], 0.44 * ai * grow, 0.8 * bi * grow)
            if shape is None:
                continue
            box, mask = shape
            dome = _smoothstep(dome_start, dome_start + 0.3, u)
            if dome > 0:
                # The dome rises under the lung, leaving the deep posterior recess last.
                lb = 0.8 * bi * grow
                dx = (canvas.xs[box[1]] - side * 0.5 * ai)[None, :] / (0.46 * ai * dome)
                dy = (ys[box[0]] - g["lung_y"] + 0.12 * lb)[:, None] / (1.05 * lb * dome)
                mask = mask & (dx * dx + dy * dy > 1.0)
            gradient = (-860.0 + 45.0 * (ys[box[0]] - g["lung_y"]) / (0.8 * bi))[:, None]
            canvas.paint((box, mask), gradient)
            lungs[box] |= mask
        if lungs.any():
            self._paint_vessels_and_nodule(canvas, lungs, z, thickness)
        self._paint_mediastinum(canvas, g)
        self._paint_skeleton(canvas, g, z)

    def _paint_vessels_and_nodule(self, canvas, lungs, z, thickness) -> None:
        xs = canvas.xs
        seg = self._vessels
        low, high = z - thickness / 2, z + thickness / 2
        zmin, zmax = np.minimum(seg[:, 2], seg[:, 5]), np.maximum(seg[:, 2], seg[:, 5])
        edge = max(0.6, float(xs[1] - xs[0]))
        for x0, y0, z0, x1, y1, z1, radius in seg[(zmax >= low) & (zmin <= high)]:
            # The part of the segment inside the slab, projected onto the slice.
            dz = z1 - z0
            if abs(dz) < 1e-6:
                t0, t1 = 0.0, 1.0
            else:
                t0, t1 = sorted(((low - z0) / dz, (high - z0) / dz))
                t0, t1 = max(t0, 0.0), min(t1, 1.0)
            a = (x0 + t0 * (x1 - x0), y0 + t0 * (y1 - y0))
            b = (x0 + t1 * (x1 - x0), y0 + t1 * (y1 - y0))
            shape = canvas.capsule(a, b, radius, edge)
            if shape is not None:
                # Blending box by box: where two vessels overlap the result tends to the
                # vessel value anyway, and no full-image pass is needed.
                box, weight = shape
                weight *= lungs[box]
                region = canvas.image[box]
                region += weight * (self.VESSEL - region)
        nx, ny, nz, radius, phase = self.nodule
        if abs(z - nz) < radius:
            r = math.sqrt(radius * radius - (z - nz) ** 2)
            c0, c1 = canvas.x.span(nx - 1.3 * r - edge, nx + 1.3 * r + edge)
            r0, r1 = canvas.y.span(ny - 1.3 * r - edge, ny + 1.3 * r + edge)
            dx = xs[c0:c1][None, :] - nx
            dy = canvas.ys[r0:r1][:, None] - ny
            lobulated = r * (1.0 + 0.15 * np.sin(5.0 * np.arctan2(dy, dx) + phase))
            w = np.clip((lobulated - np.hypot(dx, dy)) / edge + 0.5, 0.0, 1.0)
            region = canvas.image[r0:r1, c0:c1]
            region += w * (self.NODULE - region)

    def _paint_mediastinum(self, canvas, g) -> None:
        u, s, cy, ai, bi, yv = g["u"], self.size, g["cy"], g["ai"], g["bi"], g["yv"]
        heart = math.sqrt(max(0.0, 1.0 - ((u - 0.66) / 0.28) ** 2))
        if heart > 0.05:
            hx, hy, hax, hay = 0.17 * ai, cy - 0.12 * bi, 0.36 * ai * heart, 0.46 * bi * heart
            canvas.fill_ellipse(hx, hy, hax * 1.12, hay * 1.12, self.PERICARDIAL_FAT, angle=0.5)
            canvas.fill_ellipse(hx, hy, hax, hay, self.HEART, angle=0.5)
        ascending = (-0.06 * ai, cy - 0.25 * bi)
        descending = (26.0 * s, yv - 14.0 * s)
        if 0.27 <= u <= 0.62:
            canvas.fill_ellipse(*ascending, 14.0 * s, 14.0 * s, self.BLOOD)
        if 0.22 <= u < 0.27:
            mx, my = (ascending[0] + descending[0]) / 2, (ascending[1] + descending[1]) / 2
            half = math.hypot(descending[0] - ascending[0], descending[1] - ascending[1]) / 2
            angle = math.atan2(descending[1] - ascending[1], descending[0] - ascending[0])
            canvas.fill_ellipse(mx, my, half + 12.0 * s, 12.0 * s, self.BLOOD, angle=angle)
        if u >= 0.25:
            canvas.fill_ellipse(*descending, 12.0 * s, 12.0 * s, self.BLOOD)
        airway_y = yv - 42.0 * s
        if u < 0.4:
            canvas.fill_ellipse(0.0, airway_y, 9.0 * s, 9.0 * s, self.AIR + 10.0)
        elif u < 0.5:
            offset = (4.0 + 160.0 * (u - 0.38)) * s
            for side in (-1.0, 1.0):
                canvas.fill_ellipse(side * offset, airway_y, 6.5 * s, 6.5 * s, self.AIR + 10.0)

    def _paint_skeleton(self, canvas, g, z) -> None:
        u, s, cy, a, b, yv, rv = g["u"], self.size, g["cy"], g["a"], g["b"], g["yv"], g["rv"]
        # Vertebra: body (or disc), canal, arch, spinous and transverse processes.
        if (z + self.disc_phase) % 27.0 < 5.0:
            canvas.fill_ellipse(0.0, yv, rv, rv, self.DISC)
        else:
            canvas.fill_ellipse(0.0, yv, rv, rv, self.CORTICAL)
            canvas.fill_ellipse(0.0, yv, rv - 2.0, rv - 2.0, self.CANCELLOUS)
        canal_y = yv + rv + 8.0 * s
        canvas.fill_ellipse(0.0, canal_y + 16.0 * s, 4.0 * s, 10.0 * s, 900.0)
        for side in (-1.0, 1.0):
            canvas.fill_ellipse(side * 20.0 * s, canal_y, 12.0 * s, 4.0 * s, 850.0)
        arch = canvas.ellipse(0.0, canal_y + 1.0, 12.0 * s, 12.0 * s)
        if arch is not None:
            box, mask = arch
            posterior = (canvas.ys[box[0]] >= canal_y - 2.0)[:, None]
            canvas.paint((box, mask & posterior), 900.0)
        canvas.fill_ellipse(0.0, canal_y, 7.5 * s, 7.5 * s, self.CANAL)
        # Sternum, in the anterior chest wall.
        if 0.05 <= u <= 0.78:
            sy = cy - b + 20.0 * s
            canvas.fill_ellipse(0.0, sy, 13.0 * s, 6.0 * s, 1000.0)
            canvas.fill_ellipse(0.0, sy, 11.0 * s, 4.0 * s, 450.0)
        # Ribs: oblique, so their cross-sections slide along the wall from slice to slice.
        if -0.02 <= u <= 1.05:
            shift = math.radians(6.0) * math.sin(2.0 * math.pi * z / 26.0 + self.rib_phase)
            ra, rb = a - 20.0 * s, b - 20.0 * s
            arcs = ((115.0, 248.0), (-68.0, 65.0))
            for start, stop in arcs:
                for theta in np.radians(np.linspace(start, stop, 7)) + shift:
                    x, y = ra * math.cos(theta), cy + rb * math.sin(theta)
                    tangent = math.atan2(rb * math.cos(theta), -ra * math.sin(theta))
                    canvas.fill_ellipse(x, y, 6.5 * s, 4.0 * s, 950.0, angle=tangent)
                    canvas.fill_ellipse(x, y, 5.0 * s, 2.5 * s, self.CANCELLOUS, angle=tangent)


def _ct_table(canvas: _Canvas) -> None:
    """The patient table under the body: carbon skins around a foam core."""
    top = _Thorax.TABLE_TOP
    c0, c1 = canvas.x.span(-165.0, 165.0)
    for start, stop, value in ((1.0, 4.0, 150.0), (4.0, 22.0, -650.0), (22.0, 25.0, 150.0)):
        r0, r1 = canvas.y.span(top + start, top + stop)
        canvas.image[r0:r1, c0:c1] = value


def ct_series(
    *,
    patient: PatientIdentity,
    study: StudySpec,
    slices: int = 300,
    rows: int = 512,
    columns: int = 512,
    slice_thickness: float = 1.25,
    body_part: str = "CHEST",
    seed: int = 0,
    series_number: int = 1,
    description: str = "Thorax sans injection",
) -> list[Dataset]:
    """A non-contrast chest CT series: CT Image IOD (PS3.3 A.3), CT Image Storage.

    Modules: Patient, General Study, General Series, Frame of Reference (C.7.4.1), General
    Equipment, General Image (C.7.6.1), Image Plane (C.7.6.2), Image Pixel (C.7.6.3), CT Image
    (C.8.2.1), VOI LUT (C.11.2), SOP Common. Explicit VR Little Endian, uncompressed.

    Stored values are signed 16 bit, HU = stored - 1024 (Rescale Slope 1, Intercept -1024,
    Rescale Type HU); pixels outside the circular reconstruction field of view hold the
    Pixel Padding Value -2000. The field of view is 360 mm whatever the matrix, so a small
    matrix shows the same anatomy with larger pixels. The series is centred on the middle of
    the thorax; slices are contiguous (spacing = thickness), ordered head to feet. The first
    window (mediastinum, 50/350) is the default, the second the lung window (-600/1500).
    """
    if slices < 1 or rows < 8 or columns < 8 or slice_thickness <= 0:
        raise ValueError("slices >= 1, rows and columns >= 8 and a positive thickness required")
    ctx = _Context.make(patient, study, seed)
    rng = np.random.default_rng([seed, 0xC7])
    phantom = _Thorax(rng)

    fov = 360.0
    spacing = fov / max(rows, columns)
    x_axis, y_axis = _Axis(columns, spacing), _Axis(rows, spacing)
    xs, ys = x_axis.values, y_axis.values
    outside_fov = (xs[None, :] ** 2 + ys[:, None] ** 2) > (fov / 2) ** 2
    background = _Canvas(np.full((rows, columns), _Thorax.AIR, np.float32), x_axis, y_axis)
    _ct_table(background)

    series_uid = _uid("series", ctx.study_uid, "CT", series_number, description, seed)
    frame_uid = _uid("frame-of-reference", ctx.study_uid, series_uid)
    series_time = ctx.at(2 + series_number)
    template = _base(
        ctx=ctx,
        sop_class_uid=CTImageStorage,
        sop_instance_uid="1.2",  # replaced per slice
        modality="CT",
        series_uid=series_uid,
        series_number=series_number,
        series_description=description,
        series_time=series_time,
        content_time=series_time,
        instance_number=1,
    )
    template.BodyPartExamined = body_part
    template.PatientPosition = "HFS"
    template.FrameOfReferenceUID = frame_uid
    template.PositionReferenceIndicator = ""
    template.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    template.AcquisitionNumber = 1
    template.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    template.PixelSpacing = [_ds(spacing), _ds(spacing)]
    template.SliceThickness = _ds(slice_thickness)
    template.SpacingBetweenSlices = _ds(slice_thickness)
    _image_pixel(template, rows=rows, columns=columns, bits_stored=16, signed=True)
    template.add_new("PixelPaddingValue", "SS", -2000)
    template.RescaleIntercept = "-1024"
    template.RescaleSlope = "1"
    template.RescaleType = "HU"
    template.WindowCenter = ["50", "-600"]
    template.WindowWidth = ["350", "1500"]
    template.WindowCenterWidthExplanation = ["MEDIASTIN", "POUMON"]
    template.KVP = "120"
    template.XRayTubeCurrent = 180
    template.ExposureTime = 500
    template.Exposure = 90
    template.ConvolutionKernel = "MIRC_SOFT"
    template.ReconstructionDiameter = _ds(fov)
    template.DataCollectionDiameter = "500"
    template.GantryDetectorTilt = "0"
    template.TableHeight = "160"
    template.RotationDirection = "CW"
    template.ScanOptions = "HELICAL MODE"
    template.SpiralPitchFactor = 0.984
    template.CTDIvol = 5.2
    template.LossyImageCompression = "00"
    template.BurnedInAnnotation = "NO"

    noise = _NoiseBank(np.random.default_rng([seed, 0xC7]), rows, columns)
    stamp = _stamper(template)
    first_z = (slices - 1) / 2 * slice_thickness
    x0, y0 = x_axis.first, y_axis.first
    datasets = []
    for index in range(slices):
        z = first_z - index * slice_thickness
        canvas = _Canvas(background.image.copy(), x_axis, y_axis)
        phantom.slice_hu(canvas, z, slice_thickness)
        hu = canvas.image
        hu += noise.window(np.random.default_rng([seed, 0xC7, index])) * phantom.NOISE_SD
        np.clip(hu, -1024.0, 3071.0, out=hu)
        stored = np.rint(hu).astype(np.int16) + np.int16(1024)
        stored[outside_fov] = -2000

        ds = stamp()
        instance_uid = _uid("instance", series_uid, index + 1)
        ds.SOPInstanceUID = instance_uid
        ds.file_meta.MediaStorageSOPInstanceUID = instance_uid
        ds.InstanceNumber = index + 1
        acquired = series_time + dt.timedelta(milliseconds=40 * index)
        ds.AcquisitionDate = ds.ContentDate = _da(acquired.date())
        ds.AcquisitionTime = ds.ContentTime = _tm(acquired)
        ds.ImagePositionPatient = [_ds(x0), _ds(y0), _ds(z)]
        ds.SliceLocation = _ds(z)
        ds.add_new("SmallestImagePixelValue", "SS", int(stored.min()))
        ds.add_new("LargestImagePixelValue", "SS", int(stored.max()))
        _set_pixel_data(ds, stored)
        datasets.append(ds)
    return datasets


# --- MR: brain phantom -------------------------------------------------------------------------


class _Head:
    """An axial T2-weighted head: scalp, skull, CSF, folded cortex, white matter, ventricles,
    deep grey nuclei, and the orbits on the lowest slices. Signal in arbitrary units."""

    SCALP, BONE, DIPLOE, CSF, GREY, WHITE, DEEP = 1000.0, 60.0, 320.0, 1900.0, 1200.0, 680.0, 980.0

    def __init__(self, rng: np.random.Generator):
        self.size = float(rng.uniform(0.95, 1.05))
        self.phases = rng.uniform(0.0, 2.0 * math.pi, 3)

    def slice_signal(self, canvas: _Canvas, z: float) -> None:
        s = self.size
        cover = 1.0 - (z / (95.0 * s)) ** 2
        if cover <= 0:
            return
        scale = math.sqrt(cover)
        a, b = 72.0 * s * scale, 92.0 * s * scale
        orbits = z < -30.0
        if orbits:  # the face in front of the skull base, with the eyes in it
            face_y = -0.8 * b
            canvas.fill_ellipse(0.0, face_y, 0.75 * a, 0.45 * b, self.SCALP)
        for inset, value in ((0.0, self.SCALP), (5.0, self.BONE), (7.0, self.DIPLOE)):
            canvas.fill_ellipse(0.0, 0.0, a - inset, b - inset, value)
        canvas.fill_ellipse(0.0, 0.0, a - 9.0, b - 9.0, self.BONE)
        brain = canvas.ellipse(0.0, 0.0, a - 11.0, b - 11.0)
        if brain is None:
            return
        canvas.paint(brain, self.CSF)
        box, mask = brain
        ab, bb = a - 13.0, b - 13.0
        if ab <= 4 or bb <= 4:
            return
        dx = canvas.xs[box[1]][None, :]
        dy = canvas.ys[box[0]][:, None]
        rho = np.sqrt((dx / ab) ** 2 + (dy / bb) ** 2)
        theta = np.arctan2(dy, dx)
        p = self.phases
        folds = np.sin(9.0 * theta + 0.05 * z + p[0])
        depth = 7.0 + 3.5 * folds + 1.5 * np.sin(17.0 * theta - 0.08 * z + p[1])
        white_edge = 1.0 - depth / ((ab + bb) / 2)
        region = canvas.image[box]
        cortex = mask & (rho <= 1.0)
        region[cortex] = self.GREY
        region[cortex & (rho <= white_edge)] = self.WHITE
        sulci = cortex & (rho > white_edge) & (folds > 0.93)
        region[sulci] = self.CSF
        fissure = cortex & (np.abs(dx) < 1.2) & (np.abs(dy) > 0.45 * bb)
        region[fissure] = self.CSF
        if -8.0 < z < 22.0:
            for side in (-1.0, 1.0):
                canvas.fill_ellipse(side * 19.0 * s, 4.0 * s, 10.0 * s, 15.0 * s, self.DEEP)
        ventricles = math.sqrt(max(0.0, 1.0 - ((z - 22.0) / 20.0) ** 2))
        if ventricles > 0.1:
            for side in (-1.0, 1.0):
                canvas.fill_ellipse(
                    side * 8.0 * s,
                    -4.0 * s,
                    5.5 * s * ventricles,
                    26.0 * s * ventricles,
                    self.CSF,
                    angle=side * 0.12,
                )
        if -12.0 < z < 8.0:
            canvas.fill_ellipse(0.0, 2.0 * s, 1.5 * s, 11.0 * s, self.CSF)
        if orbits:
            for side in (-1.0, 1.0):
                eye_y = face_y - 0.18 * b
                canvas.fill_ellipse(side * 0.42 * a, eye_y, 11.5 * s, 11.5 * s, self.CSF)
                canvas.fill_ellipse(side * 0.42 * a, eye_y - 9.0 * s, 4.5 * s, 1.8 * s, 300.0)


def mr_series(
    *,
    patient: PatientIdentity,
    study: StudySpec,
    slices: int = 24,
    rows: int = 256,
    columns: int = 256,
    seed: int = 0,
    series_number: int = 1,
    description: str = "IRM cérébrale T2",
) -> list[Dataset]:
    """An axial T2 TSE brain series: MR Image IOD (PS3.3 A.4), MR Image Storage.

    Modules: Patient, General Study, General Series, Frame of Reference, General Equipment,
    General Image, Image Plane, Image Pixel, MR Image (C.8.3.1), VOI LUT, SOP Common.
    Unsigned 16 bit, 12 bits stored, Rician noise; 5 mm slices every 6 mm, feet to head.
    """
    if slices < 1 or rows < 8 or columns < 8:
        raise ValueError("slices >= 1, rows and columns >= 8 required")
    ctx = _Context.make(patient, study, seed)
    phantom = _Head(np.random.default_rng([seed, 0x3A]))
    fov, thickness, gap = 230.0, 5.0, 6.0
    spacing = fov / max(rows, columns)
    x_axis, y_axis = _Axis(columns, spacing), _Axis(rows, spacing)

    series_uid = _uid("series", ctx.study_uid, "MR", series_number, description, seed)
    series_time = ctx.at(2 + series_number)
    template = _base(
        ctx=ctx,
        sop_class_uid=MRImageStorage,
        sop_instance_uid="1.2",
        modality="MR",
        series_uid=series_uid,
        series_number=series_number,
        series_description=description,
        series_time=series_time,
        content_time=series_time,
        instance_number=1,
    )
    template.BodyPartExamined = "HEAD"
    template.PatientPosition = "HFS"
    template.FrameOfReferenceUID = _uid("frame-of-reference", ctx.study_uid, series_uid)
    template.PositionReferenceIndicator = ""
    template.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    template.AcquisitionNumber = 1
    template.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    template.PixelSpacing = [_ds(spacing), _ds(spacing)]
    template.SliceThickness = _ds(thickness)
    template.SpacingBetweenSlices = _ds(gap)
    _image_pixel(template, rows=rows, columns=columns, bits_stored=12)
    template.ScanningSequence = "SE"
    template.SequenceVariant = ["SK", "OSP"]
    template.ScanOptions = "PFP"
    template.MRAcquisitionType = "2D"
    template.SequenceName = "*tse2d1_16"
    template.RepetitionTime = "4500"
    template.EchoTime = "95"
    template.EchoTrainLength = 16
    template.NumberOfAverages = "2"
    template.ImagingFrequency = "63.87"
    template.ImagedNucleus = "1H"
    template.MagneticFieldStrength = "1.5"
    template.FlipAngle = "150"
    template.PixelBandwidth = "190"
    template.InPlanePhaseEncodingDirection = "ROW"
    template.WindowCenter = "1000"
    template.WindowWidth = "2000"
    template.LossyImageCompression = "00"
    template.BurnedInAnnotation = "NO"

    stamp = _stamper(template)
    first_z = -60.0 * phantom.size
    x0, y0 = x_axis.first, y_axis.first
    datasets = []
    for index in range(slices):
        z = first_z + index * gap
        canvas = _Canvas(np.zeros((rows, columns), np.float32), x_axis, y_axis)
        phantom.slice_signal(canvas, z)
        noise = np.random.default_rng([seed, 0x3A, index]).standard_normal(
            (2, rows, columns), dtype=np.float32
        )
        real = canvas.image + 22.0 * noise[0]
        magnitude = np.sqrt(real * real + (22.0 * noise[1]) ** 2)  # Rician, as magnitude MR is
        stored = np.clip(np.rint(magnitude), 0, 4095).astype(np.uint16)

        ds = stamp()
        instance_uid = _uid("instance", series_uid, index + 1)
        ds.SOPInstanceUID = instance_uid
        ds.file_meta.MediaStorageSOPInstanceUID = instance_uid
        ds.InstanceNumber = index + 1
        acquired = series_time + dt.timedelta(seconds=index * 4)
        ds.AcquisitionDate = ds.ContentDate = _da(acquired.date())
        ds.AcquisitionTime = ds.ContentTime = _tm(acquired)
        ds.ImagePositionPatient = [_ds(x0), _ds(y0), _ds(z)]
        ds.SliceLocation = _ds(z)
        _set_pixel_data(ds, stored)
        datasets.append(ds)
    return datasets


# --- Projection radiography: chest PA ----------------------------------------------------------


def _chest_radiograph(rows: int, columns: int, rng: np.random.Generator) -> np.ndarray:
    """A PA chest radiograph, MONOCHROME2 (bright = attenuating), 12-bit values.

    Built as a log-domain attenuation map: a torso of varying thickness, two lung fields
    above the diaphragmatic domes (the right higher), the heart and aortic knob, trachea,
    gastric bubble, spine, clavicles, posterior and anterior ribs drawn as hollow tubes.
    """
    spacing = 409.6 / rows
    xs = ((np.arange(columns) - (columns - 1) / 2) * spacing).astype(np.float32)
    ys = ((np.arange(rows) - (rows - 1) / 2) * spacing).astype(np.float32)
    size = float(rng.uniform(0.95, 1.05))
    x = xs[None, :] / size
    y = ys[:, None] / size

    # Soft tissue: neck, shoulders, chest, upper abdomen (half-width and thickness per row).
    half_width = np.interp(ys / size, [-205, -168, -140, 60, 205], [55, 60, 160, 150, 158])[:, None]
    thickness = np.interp(ys / size, [-205, -150, 0, 205], [110, 200, 220, 240])[:, None]
    body = thickness * np.sqrt(np.clip(1.0 - (x / half_width) ** 2, 0.0, None))

    def ellipsoid(cx, cy, ax, ay, depth):
        return depth * np.sqrt(np.clip(1.0 - ((x - cx) / ax) ** 2 - ((y - cy) / ay) ** 2, 0, None))

    right = ellipsoid(-75, -20, 65, 135, 150) * (y < 85 + 30 * ((x + 75) / 65) ** 2)
    left = ellipsoid(75, -15, 65, 140, 150) * (y < 102 + 30 * ((x - 75) / 65) ** 2)
    heart = ellipsoid(30, 48, 82, 72, 120)
    knob = ellipsoid(36, -82, 18, 16, 30)
    lungs = np.clip(right + left - 0.9 * heart - knob, 0.0, None)
    trachea = 18.0 * (np.abs(x) < 9) * (y < -70) * (body > 0)
    bubble = ellipsoid(62, 128, 28, 15, 40)
    water = np.clip(body - 0.75 * lungs - trachea - bubble, 0.0, None)

    # Bone, as equivalent thickness. Ribs and clavicles are tubes: bright cortical edges.
    bone = np.zeros((rows, columns), np.float32)
    spine = 14.0 * np.sqrt(np.clip(1.0 - (x / 18.0) ** 2, 0.0, None))
    bone += spine * (0.75 + 0.25 * np.cos(2 * np.pi * y / 26.0)) * (y > -180)

    def tube(curve_y, x_low, x_high, outer, inner, weight):
        """Add a curved tube y = curve_y(|x|) for x_low <= |x| <= x_high, row band only."""
        ax = np.abs(xs / size)
        within = (ax >= x_low) & (ax <= x_high)
        if not within.any():
            return
        centre = np.where(within, curve_y(ax), np.nan)
        top, bottom = np.nanmin(centre) - outer, np.nanmax(centre) + outer
        r0, r1 = _span(ys / size, top, bottom)
        if r0 >= r1:
            return
        d = y[r0:r1] - centre[None, :]
        profile = np.sqrt(np.clip(outer * outer - d * d, 0, None))
        profile -= 0.6 * np.sqrt(np.clip(inner * inner - d * d, 0, None))
        bone[r0:r1] += weight * np.nan_to_num(profile) * within[None, :]

    jitter = rng.uniform(-3.0, 3.0, 16)
    for k in range(10):  # posterior ribs: near-horizontal, falling laterally
        y0 = -150.0 + 24.0 * k + jitter[k]

        def posterior(ax, y0=y0):
            t = (ax - 15.0) / 140.0
            return y0 - 8.0 * t + 45.0 * t * t

        tube(posterior, 15.0, 150.0, 5.0, 3.5, 2.2)
    for k in range(6):  # anterior ribs: falling medially, fainter
        y0 = -120.0 + 30.0 * k + jitter[10 + k]

        def anterior(ax, y0=y0):
            return y0 + 55.0 * (1.0 - (ax - 40.0) / 100.0) ** 2

        tube(anterior, 40.0, 140.0, 5.5, 4.0, 1.2)

    def clavicle(ax):
        t = (ax - 15.0) / 135.0
        return -140.0 - 25.0 * t + 10.0 * np.sin(np.pi * t)

    tube(clavicle, 15.0, 150.0, 7.0, 5.0, 2.5)

    attenuation = 0.019 * water + 0.05 * bone * (body > 0)
    signal = np.clip(attenuation / 5.5, 0.0, 1.0) ** 1.15
    noise = rng.standard_normal((rows, columns), dtype=np.float32)
    image = 180.0 + 3700.0 * signal + 12.0 * noise
    return np.clip(np.rint(image), 0, 4095).astype(np.uint16)


def xr_image(
    *,
    patient: PatientIdentity,
    study: StudySpec,
    rows: int = 2048,
    columns: int = 1700,
    seed: int = 0,
    modality: str = "DX",
    description: str = "Thorax face",
    series_number: int = 1,
) -> Dataset:
    """A PA chest radiograph, 12 bits stored in 16, MONOCHROME2.

    ``modality="DX"``: Digital X-Ray Image Storage - For Presentation (DX IOD, PS3.3 A.26;
    DX Series C.8.11.1, DX Anatomy Imaged C.8.11.2, DX Image C.8.11.3, DX Detector C.8.11.4,
    DX Positioning C.8.11.5). ``modality="CR"``: Computed Radiography Image Storage (CR IOD,
    A.2; CR Series C.8.1.1, CR Image C.8.1.2). Both with VOI LUT and SOP Common. The
    physical field is 410 mm high whatever the matrix (0.2 mm pixels at the default size).
    """
    if modality not in ("DX", "CR"):
        raise ValueError(f"modality must be 'DX' or 'CR', not {modality!r}")
    if rows < 16 or columns < 16:
        raise ValueError("rows and columns >= 16 required")
    ctx = _Context.make(patient, study, seed)
    pixels = _chest_radiograph(rows, columns, np.random.default_rng([seed, 0xD8]))
    if modality == "DX":
        sop_class = DigitalXRayImageStorageForPresentation
    else:
        sop_class = ComputedRadiographyImageStorage
    series_uid = _uid("series", ctx.study_uid, modality, series_number, description, seed)
    instance_uid = _uid("instance", series_uid, 1)
    moment = ctx.at(1 + series_number)
    ds = _base(
        ctx=ctx,
        sop_class_uid=sop_class,
        sop_instance_uid=instance_uid,
        modality=modality,
        series_uid=series_uid,
        series_number=series_number,
        series_description=description,
        series_time=moment,
        content_time=moment,
        instance_number=1,
    )
    spacing = _ds(409.6 / rows)
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.ImageLaterality = "U"
    ds.AnatomicRegionSequence = [_code("51185008", "SCT", "Thorax")]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.AcquisitionDate = ds.ContentDate
    ds.AcquisitionTime = ds.ContentTime
    _image_pixel(ds, rows=rows, columns=columns, bits_stored=12)
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    ds.PresentationLUTShape = "IDENTITY"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.KVP = "125"
    ds.XRayTubeCurrent = 250
    ds.ExposureTime = 8
    ds.Exposure = 2
    ds.DistanceSourceToDetector = "1800"
    ds.DistanceSourceToPatient = "1650"
    ds.Grid = "FOCUSED"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.DetectorType = "SCINTILLATOR"
        ds.DetectorConfiguration = "AREA"
        ds.EstimatedRadiographicMagnificationFactor = "1.09"  # 1800 / 1650
    else:
        ds.PlateID = f"P{_digest(instance_uid) % 10**6:06d}"
    _set_pixel_data(ds, pixels)
    return ds


# --- Ultrasound: obstetric cine loop -----------------------------------------------------------


def _speckle_field(rng: np.random.Generator, rows: int, columns: int) -> np.ndarray:
    """Complex Gaussian field (2, rows, columns) with grains about 2 pixels deep and 6 wide."""
    coarse = rng.standard_normal((2, rows // 2 + 3, columns // 6 + 3), dtype=np.float32)
    fine = np.repeat(np.repeat(coarse, 2, axis=1), 6, axis=2)
    # Averaging four shifted copies turns the blocks into soft, overlapping grains.
    return 0.5 * (
        fine[:, :rows, :columns]
        + fine[:, 1 : rows + 1, :columns]
        + fine[:, :rows, 3 : columns + 3]
        + fine[:, 1 : rows + 1, 3 : columns + 3]
    )


def _obstetric_cine(
    frames: int, rows: int, columns: int, rng: np.random.Generator, rgb: bool
) -> np.ndarray:
    """A curved-array obstetric loop: sector, abdominal wall, placenta, amniotic fluid, fetal
    head (skull echo, midline) and trunk with a beating heart; with ``rgb``, a colour Doppler
    box over the umbilical cord. Rayleigh speckle, log compression (60 dB) to 8 bits."""
    spacing = 135.0 / rows  # 13.5 cm depth
    xs = ((np.arange(columns) - (columns - 1) / 2) * spacing).astype(np.float32)
    depth = (np.arange(rows) * spacing).astype(np.float32)
    x = xs[None, :]
    y = depth[:, None] - 5.0  # mm below the skin line; the apex is above the image
    apex_y = -40.0
    r = np.sqrt(x * x + (y - apex_y) ** 2)
    theta = np.arctan2(x, y - apex_y)
    sector = (np.abs(theta) <= math.radians(35)) & (r >= 40.0) & (r <= 40.0 + 128.0)

    echo = np.full((rows, columns), 0.12, np.float32)  # soft tissue behind the uterus
    wall = y[:, 0] < 18.0
    echo[wall] = (0.2 + 0.1 * np.sin(y[wall] / 2.0)).astype(np.float32)
    uterus = ((x / 70.0) ** 2 + ((y - 75.0) / 58.0) ** 2) <= 1.0
    echo[uterus] = 0.002  # amniotic fluid: anechoic
    placenta = uterus & (y < 34.0 + 6.0 * np.sin(x / 17.0))
    echo[placenta] = 0.2
    hx0, hy0 = float(rng.uniform(-18, -8)), float(rng.uniform(72, 82))
    box = (np.abs(x - 25.0) <= 32.0) & (np.abs(y - 105.0) <= 14.0)
    box_edge = box & ~((np.abs(x - 25.0) <= 31.4) & (np.abs(y - 105.0) <= 13.4))

    cine = np.empty((frames, rows, columns, 3) if rgb else (frames, rows, columns), np.uint8)
    persistent = _speckle_field(rng, rows, columns)
    renewal = int(rng.integers(2**32))
    for index in range(frames):
        t = index / 25.0  # seconds at 25 frames per second
        frame = echo.copy()
        hx, hy = hx0 + 2.0 * math.sin(2 * math.pi * 0.4 * t), hy0 + 1.0 * math.cos(2 * math.pi * t)
        head = ((x - hx) / 24.0) ** 2 + ((y - hy) / 20.0) ** 2
        frame[head <= 1.0] = 0.05
        frame[(head <= 1.0) & (head >= 0.8)] = 1.0  # skull echo
        frame[(head < 0.8) & (np.abs(y - hy) < 0.8)] = 0.4  # midline echo
        trunk = ((x - hx - 42.0) / 26.0) ** 2 + ((y - hy - 8.0) / 19.0) ** 2
        frame[trunk <= 1.0] = 0.1
        beat = 4.0 + 1.2 * math.sin(2 * math.pi * 2.3 * t)  # about 140 per minute
        frame[((x - hx - 36.0) ** 2 + (y - hy - 6.0) ** 2) <= beat * beat] = 0.01
        frame *= np.exp(-y / 220.0)  # residual depth attenuation after TGC
        # Speckle: mostly persistent (the tissue moves little), partly renewed each frame.
        fresh = _speckle_field(np.random.default_rng([renewal, index]), rows, columns)
        field = 0.85 * persistent + 0.53 * fresh
        speckle = np.hypot(field[0], field[1]) / 1.25  # Rayleigh, mean about 1
        db = 20.0 * np.log10(np.clip(frame * speckle, 1e-5, None))
        gray = np.clip((db + 55.0) / 60.0 * 255.0, 0, 255) * sector
        if rgb:
            colour = np.repeat(gray[:, :, None], 3, axis=2)
            cord = (np.abs(y - (105.0 + 6.0 * np.sin(x / 9.0))) < 3.0) & box
            flow = 0.6 + 0.4 * math.sin(2 * math.pi * 2.3 * t)
            artery = cord & (np.sin(x / 3.0) > 0)
            colour[artery] = (255 * flow, 40, 30)
            colour[cord & ~artery] = (30, 60, 255 * flow)
            colour[box_edge & sector] = (200, 200, 200)
            bar = np.linspace(255, 0, min(rows, 100))
            colour[: bar.size, 4:10, 0] = bar[:, None]
            colour[: bar.size, 4:10, 2] = bar[::-1][:, None]
            cine[index] = np.rint(colour).astype(np.uint8)
        else:
            cine[index] = np.rint(gray).astype(np.uint8)
    return cine


def us_multiframe(
    *,
    patient: PatientIdentity,
    study: StudySpec,
    frames: int = 30,
    rows: int = 480,
    columns: int = 640,
    seed: int = 0,
    description: str = "Échographie obstétricale",
    photometric: str = "MONOCHROME2",
    series_number: int = 1,
) -> Dataset:
    """An obstetric cine loop: Ultrasound Multi-frame Image IOD (PS3.3 A.7).

    Modules: Patient, General Study, General Series, General Equipment, General Image,
    Image Pixel, Cine (C.7.6.5: 25 frames per second, Frame Time 40 ms), Multi-frame
    (C.7.6.6, Frame Increment Pointer to Frame Time), US Region Calibration (C.8.5.5),
    US Image (C.8.5.6), SOP Common. 8 bits; ``photometric="RGB"`` adds a colour Doppler box
    (Image Type value 4 "0011": 2D and colour flow).
    """
    if photometric not in ("MONOCHROME2", "RGB"):
        raise ValueError(f"photometric must be 'MONOCHROME2' or 'RGB', not {photometric!r}")
    if frames < 1 or rows < 16 or columns < 16:
        raise ValueError("frames >= 1, rows and columns >= 16 required")
    ctx = _Context.make(patient, study, seed)
    rgb = photometric == "RGB"
    pixels = _obstetric_cine(frames, rows, columns, np.random.default_rng([seed, 0x05]), rgb)
    series_uid = _uid("series", ctx.study_uid, "US", series_number, description, seed, rgb)
    instance_uid = _uid("instance", series_uid, 1)
    moment = ctx.at(1 + series_number)
    ds = _base(
        ctx=ctx,
        sop_class_uid=UltrasoundMultiFrameImageStorage,
        sop_instance_uid=instance_uid,
        modality="US",
        series_uid=series_uid,
        series_number=series_number,
        series_description=description,
        series_time=moment,
        content_time=moment,
        instance_number=1,
    )
    ds.BodyPartExamined = "UTERUS"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OBSTETRICAL", "0011" if rgb else "0001"]
    ds.AcquisitionDateTime = _dt(moment)
    _image_pixel(
        ds, rows=rows, columns=columns, bits_stored=8, bits_allocated=8, photometric=photometric
    )
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    ds.FrameTime = "40"
    ds.CineRate = 25
    ds.RecommendedDisplayFrameRate = 25
    ds.ActualFrameDuration = 40
    ds.PreferredPlaybackSequencing = 0
    ds.TransducerType = "CURVED LINEAR"
    ds.TransducerData = ["C5-1", "", ""]
    ds.ProcessingFunction = "OB"
    region = Dataset()
    region.RegionSpatialFormat = 1
    region.RegionDataType = 1
    region.RegionFlags = 0
    region.RegionLocationMinX0 = 0
    region.RegionLocationMinY0 = 0
    region.RegionLocationMaxX1 = columns - 1
    region.RegionLocationMaxY1 = rows - 1
    region.PhysicalUnitsXDirection = 3  # cm
    region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = 13.5 / rows
    region.PhysicalDeltaY = 13.5 / rows
    ds.SequenceOfUltrasoundRegions = [region]
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    _set_pixel_data(ds, pixels)
    return ds


# --- Documents: Basic Text SR and Encapsulated PDF ---------------------------------------------


def _instances(referenced: Iterable) -> list[Dataset]:
    """Flatten a list of instances, or of series given as lists of instances."""
    flat: list[Dataset] = []
    for item in referenced:
        if isinstance(item, Dataset):
            flat.append(item)
        else:
            flat.extend(_instances(item))
    return flat


def _content_item(relationship: str, value_type: str, concept: Dataset, **values) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = [concept]
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def sr_report(
    *,
    patient: PatientIdentity,
    study: StudySpec,
    text: str,
    author: str,
    referenced_series: Sequence = (),
    conclusion: str = "",
    seed: int = 0,
    series_number: int = 900,
) -> Dataset:
    """A radiology report: Basic Text SR IOD (PS3.3 A.35.1), Basic Text SR Storage.

    Modules: Patient, General Study, SR Document Series (C.17.1), General Equipment, SR
    Document General (C.17.2), SR Document Content (C.17.3), SOP Common. The content tree
    follows TID 2000 (PS3.16): root CONTAINER "Diagnostic Imaging Report" with the language,
    the author as observer context (PNAME; ``author`` in PN form, "DUPONT^Jean"), a Findings
    container holding ``text`` (TEXT "Finding") and one IMAGE reference per series, and a
    Conclusions container when ``conclusion`` is given. Referenced instances (a flat list or
    a list of series) are also listed in the Current Requested Procedure Evidence Sequence;
    the StudyInstanceUID is theirs when ``study.study_instance_uid`` is empty.
    """
    if not text:
        raise ValueError("an SR report needs its text")
    references = _instances(referenced_series)
    study_uids = {ds.StudyInstanceUID for ds in references}
    if len(study_uids) > 1:
        raise ValueError("referenced instances belong to several studies")
    if study_uids and not study.study_instance_uid:
        study = dataclasses.replace(study, study_instance_uid=study_uids.pop())
    ctx = _Context.make(patient, study, seed)
    if references and references[0].StudyInstanceUID != ctx.study_uid:
        raise ValueError("referenced instances belong to another study than the report")

    series_uid = _uid("series", ctx.study_uid, "SR", series_number, seed)
    instance_uid = _uid("sr", series_uid, author, text, conclusion)
    moment = ctx.at(60)
    ds = _base(
        ctx=ctx,
        sop_class_uid=BasicTextSRStorage,
        sop_instance_uid=instance_uid,
        modality="SR",
        series_uid=series_uid,
        series_number=series_number,
        series_description="Compte rendu",
        series_time=moment,
        content_time=moment,
        instance_number=1,
    )
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED"
    observer = Dataset()
    observer.VerifyingObserverName = author
    observer.VerifyingObserverIdentificationCodeSequence = []
    observer.VerifyingOrganization = study.institution_name
    observer.VerificationDateTime = _dt(moment)
    ds.VerifyingObserverSequence = [observer]
    ds.PerformedProcedureCodeSequence = []

    # SR Document Content: the root container and its tree.
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code("18748-4", "LN", "Diagnostic Imaging Report")]
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "2000"
    ds.ContentTemplateSequence = [template]
    language = _content_item(
        "HAS CONCEPT MOD",
        "CODE",
        _code("121049", "DCM", "Language of Content Item and Descendants"),
        ConceptCodeSequence=[_code("fr-FR", "RFC5646", "French (France)")],
    )
    observer_type = _content_item(
        "HAS OBS CONTEXT",
        "CODE",
        _code("121005", "DCM", "Observer Type"),
        ConceptCodeSequence=[_code("121006", "DCM", "Person")],
    )
    observer_name = _content_item(
        "HAS OBS CONTEXT",
        "PNAME",
        _code("121008", "DCM", "Person Observer Name"),
        PersonName=author,
    )
    findings_items = [
        _content_item("CONTAINS", "TEXT", _code("121071", "DCM", "Finding"), TextValue=text)
    ]
    key_images: dict[str, Dataset] = {}
    for instance in references:
        key_images.setdefault(instance.SeriesInstanceUID, instance)
    for instance in key_images.values():
        reference = Dataset()
        reference.ReferencedSOPClassUID = instance.SOPClassUID
        reference.ReferencedSOPInstanceUID = instance.SOPInstanceUID
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "IMAGE"  # a key image per series; IMAGE items need no concept name
        item.ReferencedSOPSequence = [reference]
        findings_items.append(item)
    findings = _content_item(
        "CONTAINS",
        "CONTAINER",
        _code("121070", "DCM", "Findings"),
        ContinuityOfContent="SEPARATE",
        ContentSequence=findings_items,
    )
    content = [language, observer_type, observer_name, findings]
    if conclusion:
        conclusion_text = _content_item(
            "CONTAINS", "TEXT", _code("121077", "DCM", "Conclusion"), TextValue=conclusion
        )
        content.append(
            _content_item(
                "CONTAINS",
                "CONTAINER",
                _code("121076", "DCM", "Conclusions"),
                ContinuityOfContent="SEPARATE",
                ContentSequence=[conclusion_text],
            )
        )
    ds.ContentSequence = content

    if references:
        by_series: dict[str, list[Dataset]] = {}
        for instance in references:
            by_series.setdefault(instance.SeriesInstanceUID, []).append(instance)
        evidence = Dataset()
        evidence.StudyInstanceUID = ctx.study_uid
        evidence.ReferencedSeriesSequence = []
        for series, instances in by_series.items():
            series_item = Dataset()
            series_item.SeriesInstanceUID = series
            series_item.ReferencedSOPSequence = []
            for instance in instances:
                sop = Dataset()
                sop.ReferencedSOPClassUID = instance.SOPClassUID
                sop.ReferencedSOPInstanceUID = instance.SOPInstanceUID
                series_item.ReferencedSOPSequence.append(sop)
            evidence.ReferencedSeriesSequence.append(series_item)
        ds.CurrentRequestedProcedureEvidenceSequence = [evidence]
    return ds


def encapsulated_pdf(
    *,
    patient: PatientIdentity,
    study: StudySpec,
    pdf_bytes: bytes,
    title: str,
    seed: int = 0,
    series_number: int = 950,
) -> Dataset:
    """A PDF document: Encapsulated PDF IOD (PS3.3 A.45.1), Encapsulated PDF Storage.

    Modules: Patient, General Study, Encapsulated Document Series (C.24.1), General
    Equipment, SC Equipment (C.8.6.1), Encapsulated Document (C.24.2), SOP Common. The bytes
    are stored unchanged; Encapsulated Document Length gives their size, since an odd-length
    document is padded to even length on writing.
    """
    if not pdf_bytes.startswith(b"%PDF"):
        raise ValueError("pdf_bytes is not a PDF document (no %PDF header)")
    ctx = _Context.make(patient, study, seed)
    series_uid = _uid("series", ctx.study_uid, "DOC", series_number, seed)
    instance_uid = _uid("pdf", series_uid, title, hashlib.sha256(pdf_bytes).hexdigest())
    moment = ctx.at(90)
    ds = _base(
        ctx=ctx,
        sop_class_uid=EncapsulatedPDFStorage,
        sop_instance_uid=instance_uid,
        modality="DOC",
        series_uid=series_uid,
        series_number=series_number,
        series_description="Documents",
        series_time=moment,
        content_time=moment,
        instance_number=1,
    )
    ds.ConversionType = "WSD"
    ds.AcquisitionDateTime = _dt(moment)
    ds.BurnedInAnnotation = "YES"  # a report names its patient
    ds.DocumentTitle = title
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf_bytes
    ds.EncapsulatedDocumentLength = len(pdf_bytes)
    return ds


# --- Transfer syntaxes -------------------------------------------------------------------------


def _decoded(ds: Dataset) -> tuple[Dataset, np.ndarray | None]:
    """A deep copy with native little-endian pixel data, and its pixel array (None if none)."""
    out = copy.deepcopy(ds)
    for _ in out.iterall():  # decode any raw elements while the original encoding is known
        pass
    if "PixelData" not in out:
        return out, None
    syntax = UID(out.file_meta.TransferSyntaxUID)
    if syntax.is_compressed:
        # YBR colour (JPEG baseline) comes back as RGB, and Photometric Interpretation with it.
        out.decompress(generate_instance_uid=False)
    array = out.pixel_array
    _set_pixel_data(out, array)
    if out.get("SamplesPerPixel", 1) > 1:
        out.PlanarConfiguration = 0
    out.file_meta = _file_meta(out.SOPClassUID, out.SOPInstanceUID, ExplicitVRLittleEndian)
    return out, array


def to_8bit(ds: Dataset) -> Dataset:
    """An uncompressed 8-bit copy of an image, as used for JPEG Baseline (PS3.5 8.2.1).

    Stored values are mapped linearly from their range onto 0..255. For CT the Rescale
    Slope and Intercept absorb the mapping, so Hounsfield units (and the windows) stay right
    to within one grey level; elsewhere the windows are mapped instead. Note that the CT and
    MR Image modules enumerate Bits Allocated 16 only: an 8-bit CT or MR is a pragmatic
    deviation, accepted by the archives and viewers we test against. The copy is marked
    DERIVED with a Derivation Description; its SOPInstanceUID is unchanged.
    """
    out, array = _decoded(ds)
    if array is None:
        raise ValueError("the dataset has no Pixel Data")
    if out.BitsAllocated == 8:
        return out
    low, high = float(array.min()), float(array.max())
    step = max(high - low, 1.0) / 255.0
    eight = np.rint((array.astype(np.float64) - low) / step).astype(np.uint8)
    if out.SOPClassUID == CTImageStorage:
        slope, intercept = float(out.get("RescaleSlope", 1)), float(out.get("RescaleIntercept", 0))
        out.RescaleSlope = _ds(slope * step)
        out.RescaleIntercept = _ds(intercept + slope * low)
    elif "WindowCenter" in out:
        centres = out.WindowCenter if out["WindowCenter"].VM > 1 else [out.WindowCenter]
        widths = out.WindowWidth if out["WindowWidth"].VM > 1 else [out.WindowWidth]
        out.WindowCenter = [_ds((float(c) - low) / step) for c in centres]
        out.WindowWidth = [_ds(max(float(w) / step, 1.0)) for w in widths]
    if "PixelPaddingValue" in out:
        padding = int(round((float(out.PixelPaddingValue) - low) / step))
        del out["PixelPaddingValue"]
        out.add_new("PixelPaddingValue", "US", min(max(padding, 0), 255))
    for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue"):
        if keyword in out:
            del out[keyword]
    out.BitsAllocated = out.BitsStored = 8
    out.HighBit = 7
    out.PixelRepresentation = 0
    image_type = list(out.get("ImageType", ["ORIGINAL", "PRIMARY"]))
    out.ImageType = ["DERIVED", *image_type[1:]]
    out.DerivationDescription = "Stored values rescaled linearly to 8 bits"
    _set_pixel_data(out, eight)
    return out


def _mark_lossy(ds: Dataset, *, method: str, source_bytes: int, compressed_bytes: int) -> None:
    """Lossy Image Compression attributes (PS3.3 C.7.6.1.1.5), kept across recompressions."""

    def values(keyword):
        if keyword not in ds:
            return []
        element = ds[keyword]
        return list(element.value) if element.VM > 1 else [element.value]

    ratio = _ds(round(source_bytes / max(compressed_bytes, 1), 2))
    ratios = [str(value) for value in values("LossyImageCompressionRatio")] + [ratio]
    methods = values("LossyImageCompressionMethod") + [method]
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = ratios
    ds.LossyImageCompressionMethod = methods


def _j2k_psnr(array: np.ndarray, bits_stored: int) -> float:
    rms_error = max(1.0, J2K_RELATIVE_RMS_ERROR * float(array.max() - array.min()))
    return round(20.0 * math.log10((2**bits_stored - 1) / rms_error), 2)


def _jpeg_baseline(ds: Dataset) -> Dataset:
    """JPEG Baseline (Process 1): 8-bit frames encoded by Pillow, encapsulated (PS3.5 A.4).

    Colour is stored as YBR_FULL_422 (4:2:2 subsampling), as PS3.5 8.2.1 requires for it.
    """
    out = to_8bit(ds)
    array = out.pixel_array
    frames = int(out.get("NumberOfFrames", 1) or 1)
    array = array.reshape((frames, *array.shape[-3 if out.SamplesPerPixel > 1 else -2 :]))
    colour = out.SamplesPerPixel > 1
    encoded = []
    for frame in array:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(frame)).save(
            buffer, format="JPEG", quality=JPEG_QUALITY, subsampling="4:2:2" if colour else 0
        )
        encoded.append(buffer.getvalue())
    out.PixelData = encapsulate(encoded, has_bot=True)
    element = out["PixelData"]
    element.VR = "OB"
    element.is_undefined_length = True
    if colour:
        out.PhotometricInterpretation = "YBR_FULL_422"
        out.PlanarConfiguration = 0
    _mark_lossy(
        out,
        method=_LOSSY_METHOD[JPEGBaseline8Bit],
        source_bytes=array.nbytes,
        compressed_bytes=sum(len(frame) for frame in encoded),
    )
    return out


def _pydicom_can_encode(syntax: UID) -> bool:
    try:
        return get_encoder(syntax).is_available
    except NotImplementedError:  # pydicom has no encoder at all for this syntax
        return False


def can_encode(transfer_syntax_uid: str) -> bool:
    """Whether :func:`with_transfer_syntax` can produce ``transfer_syntax_uid`` here."""
    syntax = UID(transfer_syntax_uid)
    if syntax == JPEGLosslessSV1:
        return _pydicom_can_encode(syntax) or shutil.which("dcmcjpeg") is not None
    return syntax in LOSSLESS_TRANSFER_SYNTAXES + LOSSY_TRANSFER_SYNTAXES


def _dcmcjpeg_lossless(ds: Dataset, executable: str) -> None:
    """Encode the native ``ds`` in place as JPEG Lossless SV1 (PS3.5 8.2.1) with DCMTK.

    dcmcjpeg in true lossless mode (its default) keeps the stored bits, signed or not; only
    its Pixel Data are taken, every other attribute stays ours.
    """
    with tempfile.TemporaryDirectory(prefix="mirc-sv1-") as folder:
        native, encoded = Path(folder, "native.dcm"), Path(folder, "sv1.dcm")
        native.write_bytes(to_bytes(ds))
        # Fixed arguments: the executable found on the PATH and our own temporary files.
        result = subprocess.run(  # noqa: S603
            [executable, "+e1", "+un", str(native), str(encoded)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"dcmcjpeg failed ({result.returncode}): {result.stderr.strip()}")
        compressed = pydicom.dcmread(encoded)
    if compressed.file_meta.TransferSyntaxUID != JPEGLosslessSV1:
        raise RuntimeError("dcmcjpeg did not produce JPEG Lossless SV1")
    ds.PixelData = compressed.PixelData
    element = ds["PixelData"]
    element.VR = "OB"
    element.is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1


def with_transfer_syntax(ds: Dataset, transfer_syntax_uid: str) -> Dataset:
    """A copy of ``ds`` re-encoded in ``transfer_syntax_uid`` (PS3.5 section 10, Annex A).

    The copy gets a new SOPInstanceUID derived from the old one and the syntax, so several
    encodings of one image can coexist in an archive (same series). Native syntaxes: Implicit
    and Explicit VR Little Endian, Deflated Explicit VR Little Endian (A.5), Explicit VR Big
    Endian (pixel bytes swapped here, since pydicom writes OW values as they are). Compressed,
    encapsulated (A.4): RLE Lossless (Annex G), JPEG-LS Lossless and Near-Lossless (NEAR =
    ``JLS_NEAR_LOSSLESS_ERROR``), JPEG 2000 Lossless and lossy (RMS error about
    ``J2K_RELATIVE_RMS_ERROR`` of the stored range) through :meth:`Dataset.compress`; JPEG
    Baseline through Pillow on an 8-bit copy (:func:`to_8bit`). Lossy results carry Lossy
    Image Compression "01" with ratio and method. JPEG Lossless SV1 uses a pydicom encoder
    if one appears, otherwise DCMTK's dcmcjpeg when it is on the PATH, otherwise raises
    :class:`NotImplementedError` saying so (see :func:`can_encode`); any other syntax raises
    it too. A compressed source is decompressed first.
    """
    syntax = UID(transfer_syntax_uid)
    if not syntax.is_transfer_syntax:
        raise ValueError(f"{transfer_syntax_uid!r} is not a transfer syntax UID")
    if syntax not in LOSSLESS_TRANSFER_SYNTAXES + LOSSY_TRANSFER_SYNTAXES:
        raise NotImplementedError(f"no encoding to {syntax.name} ({syntax}) is supported here")
    dcmcjpeg = None
    if syntax == JPEGLosslessSV1 and not _pydicom_can_encode(syntax):
        dcmcjpeg = shutil.which("dcmcjpeg")
        if dcmcjpeg is None:
            raise NotImplementedError(_NO_JPEG_LOSSLESS_ENCODER)

    if syntax == JPEGBaseline8Bit:
        out = _jpeg_baseline(ds)
    else:
        out, array = _decoded(ds)
        if array is None and syntax.is_compressed:
            raise ValueError(f"{syntax.name} needs Pixel Data, and the dataset has none")
        if syntax == ExplicitVRBigEndian and array is not None:
            _set_pixel_data(out, array, big_endian=True)
        elif dcmcjpeg:
            _dcmcjpeg_lossless(out, dcmcjpeg)
        elif syntax.is_compressed:
            options: dict = {}
            if syntax == JPEGLSNearLossless:
                options["jls_error"] = JLS_NEAR_LOSSLESS_ERROR
            elif syntax == JPEG2000:
                options["j2k_psnr"] = [_j2k_psnr(array, out.BitsStored)]
            out.compress(syntax, array, generate_instance_uid=False, **options)
            if syntax in _LOSSY_METHOD:
                _mark_lossy(
                    out,
                    method=_LOSSY_METHOD[syntax],
                    source_bytes=array.nbytes,
                    compressed_bytes=len(out.PixelData),
                )

    instance_uid = _uid("transfer-syntax", ds.SOPInstanceUID, syntax)
    out.SOPInstanceUID = instance_uid
    out.file_meta = _file_meta(out.SOPClassUID, instance_uid, syntax)
    out.set_original_encoding(None, None)
    return out


def _is_encapsulated(ds: Dataset) -> bool:
    value = ds["PixelData"].value
    return bool(value) and bytes(value[:4]) == b"\xfe\xff\x00\xe0"


def to_bytes(ds: Dataset) -> bytes:
    """The DICOM Part 10 file (PS3.10 section 7): preamble, "DICM", File Meta, dataset.

    The File Meta Information is rebuilt from the dataset (SOP Class and Instance UIDs) and
    the transfer syntax of ``ds.file_meta``, after checking that the Pixel Data are in that
    syntax: encapsulated for a compressed one, native otherwise. Change a syntax with
    :func:`with_transfer_syntax`, never by editing the file meta.
    """
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not syntax:
        raise ValueError("the dataset has no TransferSyntaxUID in its file meta")
    syntax = UID(syntax)
    if not syntax.is_transfer_syntax:
        raise ValueError(f"{syntax} is not a transfer syntax UID")
    if "PixelData" in ds:
        encapsulated = _is_encapsulated(ds)
        if syntax.is_compressed and not encapsulated:
            raise ValueError(f"{syntax.name} requires encapsulated Pixel Data; these are native")
        if not syntax.is_compressed and encapsulated:
            raise ValueError(f"{syntax.name} requires native Pixel Data; these are encapsulated")
        if not syntax.is_compressed:
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            expected = ds.Rows * ds.Columns * ds.SamplesPerPixel * frames * ds.BitsAllocated // 8
            if len(ds.PixelData) < expected:
                raise ValueError(f"Pixel Data hold {len(ds.PixelData)} bytes, {expected} expected")
    out = copy.copy(ds)
    out.file_meta = _file_meta(ds.SOPClassUID, ds.SOPInstanceUID, syntax)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, out, enforce_file_format=True)
    return buffer.getvalue()


# --- Whole studies -----------------------------------------------------------------------------


def study(
    *, patient: PatientIdentity, spec: StudySpec, modality: str, seed: int = 0, **kwargs
) -> list[Dataset]:
    """One study of ``modality`` ("CT", "MR", "DX", "CR" or "US"); every instance shares the
    StudyInstanceUID. ``kwargs`` go to the generator (slices, rows, columns, description...)."""
    spec = dataclasses.replace(
        spec, study_instance_uid=study_instance_uid(patient=patient, spec=spec, seed=seed)
    )
    modality = modality.upper()
    common = {"patient": patient, "study": spec, "seed": seed}
    if modality == "CT":
        return ct_series(**common, **kwargs)
    if modality == "MR":
        return mr_series(**common, **kwargs)
    if modality in ("DX", "CR"):
        return [xr_image(**common, modality=modality, **kwargs)]
    if modality == "US":
        return [us_multiframe(**common, **kwargs)]
    raise ValueError(f"unknown modality {modality!r}: CT, MR, DX, CR or US")

"""Small DICOM files for tests: a CT-like series about a given patient, an encapsulated PDF.

Deterministic UIDs come from ``key`` so a test can build the same file twice.
"""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"


def uid(*parts) -> str:
    return generate_uid(entropy_srcs=[str(part) for part in parts])


def _patient_module(ds: Dataset, patient, *, ipp: str, issuer: str) -> None:
    if patient is not None:
        family = patient.birth_name.upper()
        ds.PatientName = f"{family}^{patient.first_names}"
        ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d")
        ds.PatientSex = {"I": "O"}.get(patient.sex, patient.sex)
    ds.PatientID = ipp
    if issuer:
        ds.IssuerOfPatientID = issuer


def _file(ds: Dataset, sop_class: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def ct_files(
    patient,
    *,
    key="ct",
    slices=4,
    ipp="T100001",
    issuer="CHRU-TOURS",
    study_date=dt.date(2026, 10, 5),
    description="TDM thorax",
    size=32,
    **overrides,
) -> list[bytes]:
    """A CT series of ``slices`` small 16-bit images about ``patient``."""
    study_uid = uid(key, "study")
    series_uid = uid(key, "series")
    files = []
    for index in range(slices):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = uid(key, "instance", index)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.Modality = "CT"
        ds.StudyDate = study_date.strftime("%Y%m%d")
        ds.StudyTime = "101500"
        ds.StudyDescription = description
        ds.SeriesDescription = "Thorax"
        ds.BodyPartExamined = "CHEST"
        ds.InstitutionName = "CHRU de Tours"
        ds.AccessionNumber = f"A{abs(hash(key)) % 10**8:08d}"
        ds.SeriesNumber = 1
        ds.InstanceNumber = index + 1
        _patient_module(ds, patient, ipp=ipp, issuer=issuer)
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ramp = (np.arange(size * size, dtype=np.uint16).reshape(size, size) * 3 + index) % 4096
        ds.PixelData = ramp.astype("<u2").tobytes()
        for keyword, value in overrides.items():
            setattr(ds, keyword, value)
        files.append(_file(ds, CTImageStorage))
    return files


def pdf_report_file(
    patient,
    *,
    key="pdf",
    ipp="T100001",
    issuer="CHRU-TOURS",
    pdf: bytes = b"%PDF-1.4\n% compte rendu\n%%EOF\n",
) -> bytes:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = uid(key, "pdf")
    ds.StudyInstanceUID = uid(key, "study")
    ds.SeriesInstanceUID = uid(key, "pdf-series")
    ds.Modality = "DOC"
    ds.StudyDate = "20261005"
    ds.DocumentTitle = "Compte rendu TDM thorax"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    _patient_module(ds, patient, ipp=ipp, issuer=issuer)
    return _file(ds, ENCAPSULATED_PDF)

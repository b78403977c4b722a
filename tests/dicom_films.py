"""Synthetic DICOM instances as a modality or PACS would send them: radiographs, a CT slice, a truncated film."""

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.images import gradient

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def radiograph(
    *,
    size: tuple[int, int] = (80, 96),
    bits: int = 16,
    sop_class: str = DX_FOR_PRESENTATION,
    modality: str = "DX",
    body_part: str = "CHEST",
    patient_id: str = "PACS-0001",
    patient_name: str = "Doe^John",
    accession_number: str = "PACS-ACC-1",
    view_position: str = "PA",
    study_date: str = "20260315",
    study_instance_uid: str | None = None,
    seed: int = 0,
) -> Dataset:
    """A 16-bit (by default) monochrome radiograph with the tags a chest X-ray carries."""
    rows, columns = size
    pixels = gradient(columns, rows, seed=seed)
    maximum = 2**bits - 1
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = sop_class
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = modality
    if body_part:
        dataset.BodyPartExamined = body_part
    dataset.PatientID = patient_id
    dataset.PatientName = patient_name
    dataset.PatientBirthDate = "19600521"
    dataset.PatientSex = "M"
    dataset.AccessionNumber = accession_number
    dataset.ViewPosition = view_position
    dataset.StudyDate = study_date
    dataset.StudyTime = "101500"
    dataset.StudyID = "1"
    dataset.ReferringPhysicianName = ""
    dataset.StudyInstanceUID = study_instance_uid or generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SeriesNumber = 1
    dataset.InstanceNumber = 1
    dataset.Manufacturer = "Synthetic"
    dataset.PatientOrientation = ["P", "F"] if sop_class != CT_IMAGE else ""
    dataset.Rows, dataset.Columns = rows, columns
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = 16
    dataset.BitsStored = bits
    dataset.HighBit = bits - 1
    dataset.PixelRepresentation = 0
    dataset.PixelData = np.round(pixels * maximum).astype(np.uint16).tobytes()
    return dataset


def ct_slice(**kwargs) -> Dataset:
    return radiograph(sop_class=CT_IMAGE, modality="CT", body_part="CHEST", **kwargs)


def truncated_radiograph(**kwargs) -> Dataset:
    """A radiograph whose pixel data stops half-way (a transfer cut short)."""
    dataset = radiograph(**kwargs)
    dataset.PixelData = dataset.PixelData[: len(dataset.PixelData) // 2]
    return dataset


def file_bytes(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()

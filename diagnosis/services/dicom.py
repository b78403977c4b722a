"""Studies that arrive over the DICOM network (the C-STORE receiver) or DICOMweb (STOW-RS).

Only chest radiographs are accepted: a CR or DX SOP class, modality CR or DX, and a chest body part
(a radiograph that names no body part is accepted; one that names another is not). Accepted instances
go through the same validation, storage, audit and queueing as uploads (ingest.study_store).
A repeat of an instance already stored, found by its SOP Instance UID, changes nothing.
"""

import io
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from audit.models import Outcome
from audit.services import audit_record
from diagnosis.models import Study

from .ingest import UploadBusy, UploadRejected, image_prepare, study_store
from .patients import patient_get_or_create_from_dicom

COMPUTED_RADIOGRAPHY = "1.2.840.10008.5.1.4.1.1.1"
DIGITAL_XRAY_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DIGITAL_XRAY_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
ACCEPTED_SOP_CLASSES = (COMPUTED_RADIOGRAPHY, DIGITAL_XRAY_FOR_PRESENTATION, DIGITAL_XRAY_FOR_PROCESSING)
ACCEPTED_MODALITIES = ("CR", "DX")
CHEST_BODY_PARTS = ("CHEST", "THORAX", "LUNG")

# C-STORE response statuses (DICOM PS3.4 B.2.3 and PS3.7 C.4.2).
STATUS_SUCCESS = 0x0000
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122  # Refused: SOP Class not supported
STATUS_OUT_OF_RESOURCES = 0xA700  # Refused: Out of resources (nothing stored; the sender may retry)
STATUS_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # Error: Data Set does not match SOP Class
STATUS_CANNOT_UNDERSTAND = 0xC000  # Error: Cannot understand

# STOW-RS FailureReason (0008,1197) uses the same codes.

# Elements larger than this (pixel data, overlays, embedded thumbnails) are left out of the stored header.
HEADER_MAX_BINARY_BYTES = 1024
BINARY_VRS = ("OB", "OD", "OF", "OL", "OV", "OW", "UN")


class DicomRefused(Exception):
    """The instance was not stored; `status` is the DIMSE status (and STOW-RS FailureReason) to answer with."""

    def __init__(self, message: str, *, status: int):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DicomSender:
    """Who sent an instance: the calling AE title and address for the receiver, the token's user for STOW-RS."""

    source: str  # StudySource.PACS or StudySource.STOW
    address: str = ""
    calling_ae: str = ""
    user: object = None

    @property
    def audit_username(self) -> str:
        return f"dicom:{self.calling_ae}" if self.calling_ae else ""

    def audit_details(self) -> dict:
        details = {"source": self.source, "address": self.address}
        if self.calling_ae:
            details["calling_ae"] = self.calling_ae
        return details


@dataclass(frozen=True)
class DicomReceived:
    study: Study
    created: bool  # False: a repeat of an instance already stored


def dicom_header_read(data: bytes):
    """The dataset without its pixel data; DicomRefused when it is not a DICOM file at all."""
    import pydicom

    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except Exception as error:  # noqa: BLE001 - pydicom raises many kinds of error on malformed headers
        raise DicomRefused(f"The DICOM header cannot be read ({type(error).__name__}).",
                           status=STATUS_CANNOT_UNDERSTAND) from None


def dicom_acceptance_check(dataset) -> None:
    """Refuse anything but a chest radiograph, before its pixels are decoded."""
    sop_class = str(dataset.get("SOPClassUID", "") or getattr(dataset.get("file_meta", None), "MediaStorageSOPClassUID", ""))
    if sop_class not in ACCEPTED_SOP_CLASSES:
        raise DicomRefused(
            f"Only CR and DX radiographs are accepted, not SOP class {sop_class or '(none)'}.",
            status=STATUS_SOP_CLASS_NOT_SUPPORTED,
        )
    modality = str(dataset.get("Modality", "") or "").upper()
    if modality not in ACCEPTED_MODALITIES:
        raise DicomRefused(f"Only CR and DX radiographs are accepted, not modality {modality or '(none)'}.",
                           status=STATUS_DOES_NOT_MATCH_SOP_CLASS)
    body_part = str(dataset.get("BodyPartExamined", "") or "").strip().upper()
    if body_part and body_part not in CHEST_BODY_PARTS:
        raise DicomRefused(f"Only chest radiographs are accepted, not body part {body_part}.",
                           status=STATUS_CANNOT_UNDERSTAND)
    if not str(dataset.get("SOPInstanceUID", "") or "").strip():
        raise DicomRefused("The instance has no SOP Instance UID.", status=STATUS_CANNOT_UNDERSTAND)
    if not str(dataset.get("PatientID", "") or "").strip():
        raise DicomRefused("The instance names no patient (Patient ID is empty).", status=STATUS_CANNOT_UNDERSTAND)


def dicom_header_json(dataset) -> dict:
    """The header in the DICOM JSON model, without pixel data or other large binary elements."""
    from pydicom.dataset import Dataset

    header = Dataset()
    for element in dataset:
        if element.tag.group == 0x7FE0:
            continue
        if element.VR in BINARY_VRS and len(element.value or b"") > HEADER_MAX_BINARY_BYTES:
            continue
        header.add(element)
    return header.to_json_dict()


def _refuse(*, sender: DicomSender, reason: str, status: int, sop_instance_uid: str = "") -> None:
    with transaction.atomic():
        audit_record(action="study.receive", actor=sender.user, username=sender.audit_username,
                     outcome=Outcome.DENIED,
                     details={**sender.audit_details(), "sop_instance_uid": sop_instance_uid, "reason": reason,
                              "status": f"0x{status:04X}"})


def study_create_from_dicom(*, data: bytes, sender: DicomSender) -> DicomReceived:
    """Store a DICOM instance as a study, or recognise it as a repeat. Raises DicomRefused when nothing was stored.

    Every outcome, refusals included, is in the audit trail with the sender.
    """
    sop_instance_uid = ""
    try:
        dataset = dicom_header_read(data)
        sop_instance_uid = str(dataset.get("SOPInstanceUID", "") or "").strip()[:64]
        dicom_acceptance_check(dataset)
        existing = Study.objects.filter(sop_instance_uid=sop_instance_uid).first()
        if existing is not None:
            _audit_repeat(existing, sender)
            return DicomReceived(existing, created=False)
        try:
            decoded = image_prepare(data=data)
        except UploadBusy as error:
            # Every decode slot stayed taken: a refusal the sender should retry, not a verdict on the film.
            raise DicomRefused(" ".join(error.messages), status=STATUS_OUT_OF_RESOURCES) from None
        except UploadRejected as error:
            raise DicomRefused(" ".join(error.messages), status=STATUS_CANNOT_UNDERSTAND) from None
        header = dicom_header_json(dataset)
    except DicomRefused as refusal:
        _refuse(sender=sender, reason=str(refusal), status=refusal.status, sop_instance_uid=sop_instance_uid)
        raise

    accession_number = str(dataset.get("AccessionNumber", "") or "").strip()
    try:
        with transaction.atomic():
            patient = patient_get_or_create_from_dicom(actor=sender.user, username=sender.audit_username,
                                                        metadata=decoded.metadata)
            if accession_number and Study.objects.filter(accession_number=accession_number).exists():
                # Another image of the same accession (a lateral beside the PA): each film is its own study here,
                # and the SOP Instance UID, not the accession, ties results back to the PACS.
                accession_number = _next_free_accession(accession_number)
            study = study_store(
                decoded=decoded,
                data=data,
                patient=patient,
                accession_number=accession_number,
                uploaded_by=sender.user,
                source=sender.source,
                sop_instance_uid=sop_instance_uid,
                dicom_header=header,
                audit_username=sender.audit_username,
                audit_details={**sender.audit_details(), "sop_instance_uid": sop_instance_uid},
            )
    except IntegrityError:
        # Another association stored the same instance a moment ago.
        existing = Study.objects.filter(sop_instance_uid=sop_instance_uid).first()
        if existing is None:
            raise
        _audit_repeat(existing, sender)
        return DicomReceived(existing, created=False)
    except UploadRejected as error:
        _refuse(sender=sender, reason=" ".join(error.messages), status=STATUS_CANNOT_UNDERSTAND,
                sop_instance_uid=sop_instance_uid)
        raise DicomRefused(" ".join(error.messages), status=STATUS_CANNOT_UNDERSTAND) from None
    return DicomReceived(study, created=True)


def _next_free_accession(accession_number: str) -> str:
    taken = set(
        Study.objects.filter(accession_number__startswith=accession_number).values_list("accession_number", flat=True)
    )
    number = 2
    while f"{accession_number}-{number}" in taken:
        number += 1
    return f"{accession_number}-{number}"


def _audit_repeat(study: Study, sender: DicomSender) -> None:
    with transaction.atomic():
        audit_record(action="study.receive", actor=sender.user, username=sender.audit_username, target=study,
                     study=study, details={**sender.audit_details(), "sop_instance_uid": study.sop_instance_uid,
                                           "repeat": True})

"""A prediction as DICOM objects for the PACS, and the C-STORE that sends them.

The Structured Report (Comprehensive SR, built with highdicom) sits in the source image's study and
references that image; it carries the finding, each class's calibrated probability, the COVID-19 alert
and threshold, the model version, any reliability warnings and the decision-support disclaimer. The
optional Secondary Capture is the film with the heatmap drawn over the region the model looked at.

Both take the patient and study from the header the receiver kept (Study.dicom_header), so only studies
that came over DICOM can have results sent back. Their UIDs derive from the prediction, so a retry sends
the same instance again and the PACS keeps one copy.
"""

import numpy as np
from django.conf import settings
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from diagnosis.models import Prediction
from diagnosis.texts import clinical_disclaimer
from ml.serving.labels import CLASS_NAMES, DISPLAY_NAMES

from .fhir import FINDING_CODES
from .pictures import film_with_heatmap

MANUFACTURER = "CXR Portal"
REPORT_SERIES_NUMBER = 9001
IMAGE_SERIES_NUMBER = 9002
# Codes without a standard concept use this private coding scheme (PS3.16: private schemes begin with "99").
PORTAL_SCHEME = "99CXRPORTAL"
# The C-STORE statuses that mean stored: success and the warnings (coercion, elements discarded).
STORED_STATUSES = {0x0000, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007}


class PacsDeliveryError(Exception):
    """The PACS did not store the object; `status` is its DIMSE status when it answered."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


def _source_dataset(prediction: Prediction) -> Dataset:
    header = prediction.study.dicom_header
    if not header:
        raise ValueError(f"Study {prediction.study_id} did not come over DICOM: there is no source image to reference.")
    return Dataset.from_json(header)


def _uid(prediction: Prediction, kind: str) -> str:
    # The same prediction always gets the same UIDs, so a repeated send overwrites rather than duplicates.
    return generate_uid(entropy_srcs=[settings.CXR_PUBLIC_BASE_URL, kind, str(prediction.id),
                                      prediction.study.sop_instance_uid])


def prediction_structured_report(prediction: Prediction) -> Dataset:
    from highdicom.sr import (
        CodeContentItem,
        CodedConcept,
        ComprehensiveSR,
        ContainerContentItem,
        ImageContentItem,
        NumContentItem,
        TextContentItem,
    )
    from highdicom.sr import RelationshipTypeValues as Relationship

    source = _source_dataset(prediction)
    unit = CodedConcept("1", "UCUM", "no units")
    finding_code, finding_meaning = FINDING_CODES[prediction.predicted_label]
    if len(finding_meaning) > 64:  # DICOM's Code Meaning (LO) holds 64 characters: use the common synonym
        finding_meaning = DISPLAY_NAMES[prediction.predicted_label]
    items = [
        ImageContentItem(name=CodedConcept("121324", "DCM", "Source Image"),
                         referenced_sop_class_uid=source.SOPClassUID,
                         referenced_sop_instance_uid=source.SOPInstanceUID, relationship_type=Relationship.CONTAINS),
        CodeContentItem(name=CodedConcept("121071", "DCM", "Finding"),
                        value=CodedConcept(finding_code, "SCT", finding_meaning), relationship_type=Relationship.CONTAINS),
    ]
    for name in CLASS_NAMES:
        items.append(NumContentItem(
            name=CodedConcept(f"probability-{name}", PORTAL_SCHEME, f"Calibrated probability of {DISPLAY_NAMES[name]}"),
            value=round(float(prediction.probabilities.get(name, 0.0)), 4), unit=unit,
            relationship_type=Relationship.CONTAINS,
        ))
    if prediction.covid_threshold is not None:
        items.append(NumContentItem(
            name=CodedConcept("covid-threshold", PORTAL_SCHEME, "COVID-19 alert threshold"),
            value=round(float(prediction.covid_threshold), 4), unit=unit, relationship_type=Relationship.CONTAINS,
        ))
    items += [
        CodeContentItem(
            name=CodedConcept("covid-alert", PORTAL_SCHEME, "COVID-19 alert raised"),
            value=(CodedConcept("373066001", "SCT", "Yes") if prediction.covid_alert
                   else CodedConcept("373067005", "SCT", "No")),
            relationship_type=Relationship.CONTAINS,
        ),
        TextContentItem(name=CodedConcept("111001", "DCM", "Algorithm Name"),
                        value=prediction.model_version.name[:64], relationship_type=Relationship.CONTAINS),
        TextContentItem(name=CodedConcept("111003", "DCM", "Algorithm Version"),
                        value=prediction.model_version.version[:64], relationship_type=Relationship.CONTAINS),
        *[TextContentItem(name=CodedConcept("121106", "DCM", "Comment"), value=message,
                          relationship_type=Relationship.CONTAINS) for message in prediction.warning_messages()],
        TextContentItem(name=CodedConcept("121106", "DCM", "Comment"), value=clinical_disclaimer(),
                        relationship_type=Relationship.CONTAINS),
    ]
    root = ContainerContentItem(name=CodedConcept("18748-4", "LN", "Diagnostic imaging study"))
    root.ContentSequence = items
    report = ComprehensiveSR(
        evidence=[source],
        content=root,
        series_instance_uid=_uid(prediction, "report-series"),
        series_number=REPORT_SERIES_NUMBER,
        sop_instance_uid=_uid(prediction, "report"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description="CXR Portal result (decision support)",
    )
    return report


def prediction_secondary_capture(prediction: Prediction) -> Dataset | None:
    """The film with the heatmap drawn on it; None when the prediction has no heatmap."""
    if not prediction.heatmap_sha256:
        return None
    from highdicom.sc import SCImage

    source = _source_dataset(prediction)
    overlay = film_with_heatmap(prediction)
    orientation = tuple(source.get("PatientOrientation") or ()) if len(source.get("PatientOrientation") or ()) == 2 else ("L", "F")
    return SCImage.from_ref_dataset(
        source,
        np.asarray(overlay, dtype=np.uint8),
        "RGB",
        8,
        "PATIENT",
        _uid(prediction, "image-series"),
        IMAGE_SERIES_NUMBER,
        _uid(prediction, "image"),
        1,
        MANUFACTURER,
        patient_orientation=orientation,
        series_description="CXR Portal heatmap (decision support)",
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )


def pacs_store(dataset: Dataset) -> int:
    """C-STORE the dataset to the configured PACS; its status. Raises PacsDeliveryError unless it was stored."""
    from pynetdicom import AE

    ae = AE(ae_title=settings.CXR_RESULTS_PACS_CALLING_AE_TITLE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = settings.CXR_RESULTS_PACS_TIMEOUT_SECONDS
    ae.add_requested_context(dataset.SOPClassUID, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    association = ae.associate(settings.CXR_RESULTS_PACS_HOST, settings.CXR_RESULTS_PACS_PORT,
                               ae_title=settings.CXR_RESULTS_PACS_AE_TITLE)
    if not association.is_established:
        raise PacsDeliveryError(
            f"No association with {settings.CXR_RESULTS_PACS_AE_TITLE} at "
            f"{settings.CXR_RESULTS_PACS_HOST}:{settings.CXR_RESULTS_PACS_PORT} "
            f"({'rejected' if association.is_rejected else 'no answer or aborted'})."
        )
    try:
        response = association.send_c_store(dataset)
    finally:
        association.release()
    status = int(getattr(response, "Status", -1)) if response else None
    if status not in STORED_STATUSES:
        comment = str(getattr(response, "ErrorComment", "") or "") if response else ""
        raise PacsDeliveryError(
            f"The PACS did not store the object (status {'none' if status is None else f'0x{status:04X}'}"
            f"{': ' + comment if comment else ''}).",
            status=status,
        )
    return status

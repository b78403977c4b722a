"""FHIR R4 export of one study: a Bundle holding the DiagnosticReport, its Observations, the ImagingStudy and Patient.

Built as plain dictionaries, then validated by fhir.resources' R4B models (FHIR 4.3.0, whose Bundle,
DiagnosticReport, Observation, ImagingStudy and Patient have the same structure as R4 4.0.1) before
anything leaves the portal. Standard codes where they exist: LOINC for the report and the narrative
finding, SNOMED CT for the findings and the body site, DICOM for the modality, HL7 v2 tables for
identifiers and the report category. The model's class probabilities have no standard code; they are
sent as Observations coded in the portal's own code system, each naming the SNOMED CT finding it is about.
"""

import datetime

from django.conf import settings
from django.utils import timezone
from fhir.resources.R4B.bundle import Bundle

from diagnosis.models import Study, StudyStatus
from diagnosis.texts import clinical_disclaimer
from ml.serving.labels import CLASS_NAMES, DISPLAY_NAMES

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
UCUM = "http://unitsofmeasure.org"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
PORTAL_CODES = "urn:cxr-portal:codes"

# SNOMED CT concepts for the model's classes.
FINDING_CODES = {
    "covid": ("840539006", "Disease caused by severe acute respiratory syndrome coronavirus 2"),
    "normal": ("281900007", "No abnormality detected"),
    "pneumonia": ("233604007", "Pneumonia"),
}
CHEST = ("51185008", "Thoracic structure")
REPORT_CODE = ("18748-4", "Diagnostic imaging study")
FINDING_NARRATIVE_CODE = ("18782-3", "Radiology Study observation (narrative)")


def _system(name: str) -> str:
    return f"{settings.CXR_PUBLIC_BASE_URL.rstrip('/')}/fhir/{name}"


def _coding(system: str, code_and_display: tuple[str, str]) -> dict:
    code, display = code_and_display
    return {"system": system, "code": code, "display": display}


def _instant(value) -> str | None:
    return value.astimezone(datetime.timezone.utc).isoformat() if value else None


def study_fhir_bundle(*, study: Study, base_url: str = "") -> dict:
    """The study as a FHIR collection Bundle (a dict ready for JSON). The study must come from diagnosis.access.

    ``base_url`` is where the portal answers the request (the entries' ``fullUrl``s start with it); without a
    request (a bundle pushed to a PACS or EHR) it is settings.CXR_PUBLIC_BASE_URL, which production must set
    (the check cxr.W010 warns at start-up). Identifier systems always use the configured URL: they must not
    change with the address a client happened to use.
    """
    patient = study.patient
    predictions = list(study.predictions.all())
    prediction = predictions[0] if predictions else None
    patient_id, imaging_id, report_id = f"patient-{patient.id}", f"imagingstudy-{study.id}", f"diagnosticreport-{study.id}"

    patient_resource = {
        "resourceType": "Patient",
        "id": patient_id,
        "identifier": [{
            "type": {"coding": [{"system": V2_0203, "code": "MR", "display": "Medical record number"}]},
            "system": _system("mrn"),
            "value": patient.mrn,
        }],
        "name": [{"text": patient.name}],
        "gender": {"F": "female", "M": "male", "O": "other"}.get(patient.sex, "unknown"),
    }
    if patient.birth_date:
        patient_resource["birthDate"] = patient.birth_date.isoformat()

    accession = {
        "type": {"coding": [{"system": V2_0203, "code": "ACSN", "display": "Accession ID"}]},
        "system": _system("accession"),
        "value": study.accession_number,
    }
    imaging_resource = {
        "resourceType": "ImagingStudy",
        "id": imaging_id,
        "identifier": [accession],
        "status": "available",
        "modality": [_coding(DICOM, ("DX", "Digital Radiography"))],
        "subject": {"reference": f"Patient/{patient_id}"},
        "numberOfSeries": 1,
        "numberOfInstances": 1,
        "description": "Chest X-ray",
        "series": [{
            "uid": f"2.25.{int(study.image.sha256[:30], 16)}",
            "number": 1,
            "modality": _coding(DICOM, ("DX", "Digital Radiography")),
            "numberOfInstances": 1,
            "bodySite": _coding(SNOMED, CHEST),
        }],
    }
    if study.acquisition_date:
        imaging_resource["started"] = study.acquisition_date.isoformat()

    observations = []
    if prediction is not None:
        method = {"text": f"CXR Portal model {prediction.model_version} (calibrated convolutional network)"}
        common = {
            "resourceType": "Observation",
            "status": "preliminary",
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "imaging", "display": "Imaging"}]}],
            "subject": {"reference": f"Patient/{patient_id}"},
            "derivedFrom": [{"reference": f"ImagingStudy/{imaging_id}"}],
            "effectiveDateTime": _instant(prediction.created_at),
            "issued": _instant(prediction.created_at),
            "method": method,
        }
        observations.append({
            **common,
            "id": f"observation-{prediction.id}-finding",
            "code": {"coding": [_coding(LOINC, FINDING_NARRATIVE_CODE)], "text": "Model result"},
            "valueCodeableConcept": {
                "coding": [_coding(SNOMED, FINDING_CODES[prediction.predicted_label])],
                "text": DISPLAY_NAMES[prediction.predicted_label],
            },
            "note": [{"text": clinical_disclaimer()}],
        })
        for name in CLASS_NAMES:
            observations.append({
                **common,
                "id": f"observation-{prediction.id}-probability-{name}",
                "code": {
                    "coding": [{"system": PORTAL_CODES, "code": f"probability-{name}",
                                "display": f"Calibrated model probability of {DISPLAY_NAMES[name]}"}],
                    "text": f"Probability: {DISPLAY_NAMES[name]}",
                },
                "valueQuantity": {"value": round(float(prediction.probabilities.get(name, 0.0)), 6),
                                  "unit": "probability", "system": UCUM, "code": "1"},
                **({"interpretation": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                    "code": "A", "display": "Abnormal"}],
                    "text": "At or above the COVID-19 alert threshold"}]}
                   if name == "covid" and prediction.covid_alert else {}),
                **({"referenceRange": [{"high": {"value": round(float(prediction.covid_threshold), 6),
                                                 "unit": "probability", "system": UCUM, "code": "1"},
                                        "text": "COVID-19 alert threshold"}]}
                   if name == "covid" and prediction.covid_threshold is not None else {}),
            })

    report_status = {
        StudyStatus.COMPLETED: "preliminary",  # a model output awaiting a clinician, never "final"
        StudyStatus.FAILED: "cancelled",
    }.get(study.status, "registered")
    report = {
        "resourceType": "DiagnosticReport",
        "id": report_id,
        "identifier": [accession],
        "status": report_status,
        "category": [{"coding": [{"system": V2_0074, "code": "RAD", "display": "Radiology"}]}],
        "code": {"coding": [_coding(LOINC, REPORT_CODE)], "text": "Chest X-ray triage support"},
        "subject": {"reference": f"Patient/{patient_id}"},
        # When the image was taken if the study says so (a FHIR dateTime may be a date), else when it was uploaded.
        "effectiveDateTime": study.acquisition_date.isoformat() if study.acquisition_date else _instant(study.created_at),
        "issued": _instant(prediction.created_at if prediction else study.updated_at),
        "imagingStudy": [{"reference": f"ImagingStudy/{imaging_id}"}],
        "result": [{"reference": f"Observation/{observation['id']}"} for observation in observations],
        "conclusion": (
            f"Model result: {DISPLAY_NAMES[prediction.predicted_label]}. " if prediction else "No model result. "
        ) + "".join(f"{message} " for message in (prediction.warning_messages() if prediction else []))
        + clinical_disclaimer(),
    }
    if prediction is not None:
        report["conclusionCode"] = [{"coding": [_coding(SNOMED, FINDING_CODES[prediction.predicted_label])]}]

    base = (base_url or settings.CXR_PUBLIC_BASE_URL).rstrip("/") + "/fhir"
    resources = [report, *observations, imaging_resource, patient_resource]
    bundle = {
        "resourceType": "Bundle",
        "id": f"study-{study.id}",
        "type": "collection",
        "timestamp": _instant(timezone.now()),
        "entry": [
            {"fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}", "resource": resource}
            for resource in resources
        ],
    }
    # Validate against the FHIR models: a Bundle that does not validate is a bug and must not be served.
    validated = Bundle.model_validate(bundle)
    return validated.model_dump(mode="json", exclude_none=True)

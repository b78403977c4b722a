"""FHIR R4 export: a Bundle with the DiagnosticReport, its Observations, the ImagingStudy and Patient, validated."""

import json

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient as FHIRPatient
from rest_framework.test import APIClient

from audit.models import AuditEvent
from tests.diagnosis import factories


@pytest.fixture
def alerting_study(clinician, patient, monkeypatch):
    model = factories.model_version(covid_threshold=0.6, status="active")
    study = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch,
                                     accession_number="ACC-FHIR")
    factories.completed_prediction(study=study, model=model, covid=0.8)
    return study


def fetch(user, study_id):
    api = APIClient()
    api.force_authenticate(user)
    return api.get(f"/api/studies/{study_id}/fhir/")


def resources_by_type(body) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for entry in body["entry"]:
        found.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    return found


@pytest.mark.django_db
def test_bundle_validates_as_fhir_and_round_trips(alerting_study, clinician):
    response = fetch(clinician, alerting_study.id)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/fhir+json")
    body = json.loads(response.content)
    bundle = Bundle.model_validate_json(response.content)
    assert json.loads(bundle.model_dump_json(exclude_none=True)) == body
    for entry in bundle.entry:
        resource = entry.resource
        model = {"DiagnosticReport": DiagnosticReport, "Observation": Observation, "ImagingStudy": ImagingStudy,
                 "Patient": FHIRPatient}[resource.get_resource_type()]
        reparsed = model.model_validate_json(resource.model_dump_json())
        assert reparsed.model_dump() == resource.model_dump()


@pytest.mark.django_db
def test_report_references_its_observations_imaging_study_and_patient_with_standard_codes(alerting_study, clinician):
    body = fetch(clinician, alerting_study.id).json()
    assert body["resourceType"] == "Bundle" and body["type"] == "collection"
    resources = resources_by_type(body)
    report = resources["DiagnosticReport"][0]
    observations = {f"Observation/{obs['id']}": obs for obs in resources["Observation"]}
    imaging, patient = resources["ImagingStudy"][0], resources["Patient"][0]

    assert report["code"]["coding"][0] == {"system": "http://loinc.org", "code": "18748-4",
                                           "display": "Diagnostic imaging study"}
    assert report["category"][0]["coding"][0]["code"] == "RAD"
    assert report["status"] == "preliminary"  # a model output is never a final report
    assert report["subject"]["reference"] == f"Patient/{patient['id']}"
    assert report["imagingStudy"] == [{"reference": f"ImagingStudy/{imaging['id']}"}]
    assert {ref["reference"] for ref in report["result"]} == set(observations)
    assert "does not replace" in report["conclusion"]
    assert report["conclusionCode"][0]["coding"][0] == {
        "system": "http://snomed.info/sct", "code": "840539006",
        "display": "Disease caused by severe acute respiratory syndrome coronavirus 2"}
    every_reference = {entry["fullUrl"].split("/fhir/")[1] for entry in body["entry"]}
    assert set(observations) | {f"ImagingStudy/{imaging['id']}", f"Patient/{patient['id']}"} <= every_reference

    finding = next(obs for obs in observations.values() if obs["code"]["coding"][0]["system"] == "http://loinc.org")
    assert finding["code"]["coding"][0]["code"] == "18782-3"
    assert finding["valueCodeableConcept"]["coding"][0]["code"] == "840539006"
    covid = next(obs for obs in observations.values() if obs["code"]["coding"][0]["code"] == "probability-covid")
    assert covid["valueQuantity"] == {"value": 0.8, "unit": "probability", "system": "http://unitsofmeasure.org",
                                      "code": "1"}
    assert covid["interpretation"][0]["coding"][0]["code"] == "A"
    assert covid["referenceRange"][0]["high"]["value"] == 0.6
    assert all(obs["derivedFrom"] == [{"reference": f"ImagingStudy/{imaging['id']}"}] for obs in observations.values())

    assert imaging["modality"][0] == {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "DX",
                                      "display": "Digital Radiography"}
    assert imaging["series"][0]["bodySite"]["code"] == "51185008"
    assert imaging["identifier"][0]["value"] == "ACC-FHIR"
    assert patient["identifier"][0]["value"] == "MRN000123" and patient["gender"] == "female"


@pytest.mark.django_db
def test_pending_study_exports_a_registered_report_without_observations(clinician, patient, monkeypatch):
    study = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch)
    body = fetch(clinician, study.id).json()
    Bundle.model_validate(body)
    report = resources_by_type(body)["DiagnosticReport"][0]
    assert report["status"] == "registered" and "result" not in report


@pytest.mark.django_db
def test_fhir_read_is_audited_and_limited_to_clinical_roles(alerting_study, clinician, auditor, administrator):
    assert fetch(auditor, alerting_study.id).status_code == 200
    assert fetch(administrator, alerting_study.id).status_code == 403
    assert fetch(clinician, 999999).status_code == 404
    assert AuditEvent.objects.filter(action="study.fhir_read", study_identifier="ACC-FHIR").count() == 1
    assert AuditEvent.objects.filter(action="study.fhir_read", outcome="denied").count() == 1
    api = APIClient()
    assert api.get(f"/api/studies/{alerting_study.id}/fhir/").status_code == 401


@pytest.mark.django_db
def test_plain_json_is_served_when_asked_for(alerting_study, clinician):
    api = APIClient()
    api.force_authenticate(clinician)
    response = api.get(f"/api/studies/{alerting_study.id}/fhir/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/json")
    Bundle.model_validate_json(response.content)


@pytest.mark.django_db
def test_report_is_effective_on_the_acquisition_date_when_known(alerting_study, clinician):
    import datetime

    alerting_study.__class__.objects.filter(id=alerting_study.id).update(acquisition_date=datetime.date(2026, 11, 20))
    body = fetch(clinician, alerting_study.id).json()
    Bundle.model_validate(body)
    resources = resources_by_type(body)
    assert resources["DiagnosticReport"][0]["effectiveDateTime"] == "2026-11-20"
    assert resources["ImagingStudy"][0]["started"] == "2026-11-20"


@pytest.mark.django_db
def test_report_conclusion_carries_the_result_warning(clinician, patient, monkeypatch):
    model = factories.model_version(covid_threshold=0.6, status="active")
    study = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch)
    factories.completed_prediction(study=study, model=model, covid=0.3, warnings=["lungs_not_found"])
    report = resources_by_type(fetch(clinician, study.id).json())["DiagnosticReport"][0]
    assert "lung fields could not be found" in report["conclusion"]
    assert report["conclusion"].endswith("does not make a diagnosis.")


@pytest.mark.django_db
def test_full_urls_start_where_the_portal_answered_the_request(alerting_study, clinician, settings):
    settings.ALLOWED_HOSTS = ["cxr.hospital.example"]
    settings.CXR_PUBLIC_BASE_URL = "http://127.0.0.1:8000"
    api = APIClient()
    api.force_authenticate(clinician)
    body = api.get(f"/api/studies/{alerting_study.id}/fhir/", HTTP_HOST="cxr.hospital.example", secure=True).json()
    assert {entry["fullUrl"].split("/fhir/")[0] for entry in body["entry"]} == {"https://cxr.hospital.example"}


def test_start_up_check_warns_when_production_leaves_the_public_base_url_unset(settings):
    from diagnosis.checks import check_public_base_url

    settings.DEBUG, settings.CXR_PUBLIC_BASE_URL = False, "http://127.0.0.1:8000"
    assert [warning.id for warning in check_public_base_url()] == ["cxr.W010"]
    settings.CXR_PUBLIC_BASE_URL = "https://cxr.hospital.example"
    assert check_public_base_url() == []

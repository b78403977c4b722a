"""Lists, searches and exports say what was asked and which patients and studies came back (DICOM PS3.15 A.5);
probes for records that do not exist leave a failed event."""

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.selectors import audit_events_filtered
from diagnosis.models import Patient
from tests.diagnosis import factories


@pytest.fixture
def two_patients_studies(clinician, monkeypatch):
    first = Patient.objects.create(mrn="MRN-READ-1", name="Reading One")
    second = Patient.objects.create(mrn="MRN-READ-2", name="Reading Two")
    factories.uploaded_study(patient=first, uploaded_by=clinician, monkeypatch=monkeypatch, accession_number="ACC-R1")
    factories.uploaded_study(patient=second, uploaded_by=clinician, monkeypatch=monkeypatch, accession_number="ACC-R2")
    return first, second


def last_event(action: str) -> AuditEvent:
    return AuditEvent.objects.filter(action=action).order_by("-sequence").first()


@pytest.mark.django_db
def test_api_study_search_records_the_query_and_what_it_returned(clinician, two_patients_studies):
    api = APIClient()
    api.force_authenticate(clinician)
    assert api.get("/api/studies/", {"q": "Reading One"}).status_code == 200
    event = last_event("study.list")
    assert event.details["query"] == {"q": "Reading One"}
    assert event.details["studies"] == ["ACC-R1"] and event.details["patients"] == ["MRN-READ-1"]


@pytest.mark.django_db
def test_api_patient_list_records_the_patients_returned(clinician, two_patients_studies):
    api = APIClient()
    api.force_authenticate(clinician)
    api.get("/api/patients/", {"q": "MRN-READ"})
    event = last_event("patient.list")
    assert event.details["query"] == {"q": "MRN-READ"} and event.details["patients"] == ["MRN-READ-1", "MRN-READ-2"]


@pytest.mark.django_db
def test_worklist_page_and_export_record_the_studies_shown(client, clinician, two_patients_studies):
    client.force_login(clinician)
    client.get(reverse("diagnosis:worklist"), {"patient": "Reading"})
    assert last_event("study.list").details["studies"] == ["ACC-R1", "ACC-R2"]
    response = client.get(reverse("diagnosis:worklist_export_csv"), {"patient": "Two"})
    b"".join(response.streaming_content)
    event = last_event("study.export_csv")
    assert event.details["query"] == {"patient": "Two"} and event.details["patients"] == ["MRN-READ-2"]


@pytest.mark.django_db
def test_status_polling_is_audited_with_the_studies_it_answered_for(client, clinician, two_patients_studies):
    client.force_login(clinician)
    ids = ",".join(str(study_id) for study_id in two_patients_studies[0].studies.values_list("id", flat=True))
    assert client.get(reverse("diagnosis:study_statuses"), {"ids": ids}).status_code == 200
    event = last_event("study.status_list")
    assert event.details["studies"] == ["ACC-R1"] and event.actor_username == "dr_ana"


@pytest.mark.django_db
def test_prediction_history_records_the_studies_shown(client, auditor, clinician, monkeypatch, two_patients_studies):
    model = factories.model_version(status="active")
    factories.completed_prediction(study=two_patients_studies[0].studies.get(), model=model)
    client.force_login(auditor)
    client.get(reverse("diagnosis:prediction_history"))
    assert last_event("prediction.history_view").details["patients"] == ["MRN-READ-1"]


@pytest.mark.django_db
def test_an_auditor_finds_the_lists_that_showed_a_patient(client, clinician, two_patients_studies):
    client.force_login(clinician)
    client.get(reverse("diagnosis:worklist"))
    found = audit_events_filtered(patient="MRN-READ-2", action="study.list")
    assert found.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/studies/999999/", "/api/patients/999999/"])
def test_api_lookup_of_a_missing_record_is_a_failed_event(clinician, url):
    api = APIClient()
    api.force_authenticate(clinician)
    assert api.get(url).status_code == 404
    event = AuditEvent.objects.order_by("-sequence").first()
    assert event.outcome == "failed" and event.details["reason"] == "not_found" and "999999" in str(event.details)


@pytest.mark.django_db
def test_page_lookup_of_a_missing_study_is_a_failed_event(client, clinician):
    client.force_login(clinician)
    assert client.get(reverse("diagnosis:study_detail", args=[424242])).status_code == 404
    event = AuditEvent.objects.order_by("-sequence").first()
    assert (event.action, event.outcome, event.details) == ("study.view", "failed", {"reason": "not_found", "study_id": "424242"})


@pytest.mark.django_db
def test_a_denied_lookup_is_a_denied_event(client, administrator):
    client.force_login(administrator)
    assert client.get(reverse("diagnosis:study_detail", args=[1])).status_code == 403
    event = AuditEvent.objects.order_by("-sequence").first()
    assert (event.action, event.outcome) == ("study.view", "denied")

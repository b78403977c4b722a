"""Each audited action, done the way users do it, writes exactly one event with every field filled in."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from audit.selectors import audit_chain_verify
from diagnosis.models import Study
from diagnosis.services.ingest import study_create
from tests import images
from tests.conftest import TwoFactorClient
from tests.factories import TEST_PASSWORD
from tests.security.records import make_alert, make_model_version, make_prediction

BROWSER = "Mozilla/5.0 (audit test)"
ADDRESS = "10.9.8.7"


@pytest.fixture
def world(db, clinician, auditor, patient, queued_inference):
    study = study_create(patient=patient, uploaded_by=clinician, data=images.png_bytes(), accession_number="ACC-AUDIT")
    prediction = make_prediction(study, make_model_version("audit-model"), covid=0.9)
    Study.objects.filter(id=study.id).update(status="completed")
    return {"study": study, "patient": patient, "prediction": prediction, "alert": make_alert(prediction)}


def browser_for(user) -> Client:
    client = TwoFactorClient(HTTP_USER_AGENT=BROWSER, REMOTE_ADDR=ADDRESS)
    client.force_login(user)
    return client


def new_events(since: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(sequence__gt=since).order_by("sequence"))


def last_sequence() -> int:
    event = AuditEvent.objects.order_by("-sequence").first()
    return event.sequence if event else 0


def assert_one_complete_event(events: list[AuditEvent], *, action: str, actor_username: str, actor_role: str,
                              patient: str = "", study: str = "", object_type: str = "", outcome: str = "success",
                              linked_actor: bool = True):
    assert [event.action for event in events] == [action], f"expected one {action}, got {[e.action for e in events]}"
    event = events[0]
    assert (event.actor_username, event.actor_role, event.outcome) == (actor_username, actor_role, outcome)
    if linked_actor:
        assert event.actor_id is not None
    assert (event.patient_identifier, event.study_identifier) == (patient, study)
    if object_type:
        assert event.object_type == object_type and event.object_id
    assert event.client_ip == ADDRESS and event.user_agent == BROWSER
    assert event.created_at.utcoffset().total_seconds() == 0
    assert isinstance(event.details, dict)
    assert audit_chain_verify().valid
    return event


CLINICAL_READS = [
    # (what, url template, action, object type)
    ("patient page", "/patients/{patient}/", "patient.view", "diagnosis.patient"),
    ("patient API", "/api/patients/{patient}/", "patient.view", "diagnosis.patient"),
    ("study page", "/studies/{study}/", "study.view", "diagnosis.study"),
    ("study API", "/api/studies/{study}/", "study.view", "diagnosis.study"),
    ("prediction API", "/api/studies/{study}/prediction/", "prediction.view", "diagnosis.study"),
    ("image", "/studies/{study}/image.png", "study.image_view", "diagnosis.study"),
    ("heatmap", "/studies/{study}/heatmap.png", "study.heatmap_view", "diagnosis.study"),
    ("report page", "/studies/{study}/report.pdf", "study.report_download", "diagnosis.study"),
    ("report API", "/api/studies/{study}/report/", "study.report_download", "diagnosis.study"),
    ("FHIR API", "/api/studies/{study}/fhir/", "study.fhir_read", "diagnosis.study"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["clinician", "auditor"])
@pytest.mark.parametrize(("what", "url", "action", "object_type"), CLINICAL_READS, ids=[row[0] for row in CLINICAL_READS])
def test_every_read_of_patient_data_is_one_event(world, request, role, what, url, action, object_type):
    user = request.getfixturevalue(role)
    client = browser_for(user)
    since = last_sequence()
    response = client.get(url.format(patient=world["patient"].id, study=world["study"].id))
    assert response.status_code == 200
    study = "" if action == "patient.view" else "ACC-AUDIT"
    assert_one_complete_event(new_events(since), action=action, actor_username=user.username, actor_role=role,
                              patient="MRN000123", study=study, object_type=object_type)


@pytest.mark.django_db
def test_refused_read_is_one_denied_event(world, administrator):
    client = browser_for(administrator)
    since = last_sequence()
    assert client.get(f"/studies/{world['study'].id}/").status_code == 403
    assert_one_complete_event(new_events(since), action="study.view", actor_username=administrator.username,
                              actor_role="administrator", outcome="denied")


@pytest.mark.django_db
def test_login_logout_and_failed_login_are_one_event_each(clinician):
    client = Client(HTTP_USER_AGENT=BROWSER, REMOTE_ADDR=ADDRESS)
    since = last_sequence()
    client.post(reverse("accounts:login"), {"username": "dr_ana", "password": "wrong"})
    assert_one_complete_event(new_events(since), action="auth.login_failed", actor_username="dr_ana", actor_role="", outcome="denied",
                              linked_actor=False)  # whoever typed the password is not known to be dr_ana
    since = last_sequence()
    client.post(reverse("accounts:login"), {"username": "dr_ana", "password": TEST_PASSWORD})
    assert_one_complete_event(new_events(since), action="auth.login", actor_username="dr_ana", actor_role="clinician",
                              object_type="accounts.user")
    since = last_sequence()
    client.post(reverse("accounts:logout"))
    assert_one_complete_event(new_events(since), action="auth.logout", actor_username="dr_ana", actor_role="clinician",
                              object_type="accounts.user")


@pytest.mark.django_db
def test_upload_is_one_event(clinician, patient, queued_inference):
    client = browser_for(clinician)
    since = last_sequence()
    response = client.post("/api/studies/", {"patient": patient.id, "accession_number": "ACC-UP",
                                             "file": SimpleUploadedFile("c.png", images.png_bytes())})
    assert response.status_code == 201
    event = assert_one_complete_event(new_events(since), action="study.upload", actor_username="dr_ana", actor_role="clinician",
                                      patient="MRN000123", study="ACC-UP", object_type="diagnosis.study")
    assert event.details["sha256"] and event.details["format"] == "PNG"


@pytest.mark.django_db
def test_feedback_is_one_event(world, clinician):
    client = browser_for(clinician)
    since = last_sequence()
    response = client.post(f"/studies/{world['study'].id}/feedback/", {"agrees": "no", "correct_label": "normal", "note": "clear"})
    assert response.status_code == 302
    events = [event for event in new_events(since) if event.action != "alert.withdraw"]
    assert_one_complete_event(events, action="feedback.create", actor_username="dr_ana", actor_role="clinician",
                              patient="MRN000123", study="ACC-AUDIT")


@pytest.mark.django_db
def test_alert_acknowledgement_is_one_event(world, clinician):
    client = browser_for(clinician)
    since = last_sequence()
    assert client.post(f"/alerts/{world['alert'].id}/acknowledge/").status_code == 302
    assert_one_complete_event(new_events(since), action="alert.acknowledge", actor_username="dr_ana", actor_role="clinician",
                              patient="MRN000123", study="ACC-AUDIT")


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "url", "action"), [
    ("clinician", "/worklist/export.csv", "study.export_csv"),
    ("auditor", "/audit/events/export.csv", "audit.export"),
    ("auditor", "/audit/predictions/export.csv", "prediction.history_export"),
    ("auditor", "/audit/events/", "audit.view"),
    ("auditor", "/audit/predictions/", "prediction.history_view"),
])
def test_exports_and_audit_reads_are_one_event(world, request, role, url, action):
    user = request.getfixturevalue(role)
    client = browser_for(user)
    since = last_sequence()
    response = client.get(url)
    assert response.status_code == 200
    if hasattr(response, "streaming_content"):
        b"".join(response.streaming_content)
    event = assert_one_complete_event(new_events(since), action=action, actor_username=user.username, actor_role=role)
    assert "rows" in event.details or "page" in event.details or "filters" in event.details or "studies" in event.details


@pytest.mark.django_db
def test_prediction_and_alert_are_one_event_each(clinician, patient, active_model, queued_inference):
    """The worker has no user and no request: the events name the study and patient, and no actor."""
    from diagnosis.models import Prediction
    from diagnosis.services.inference import study_run_inference

    study = study_create(patient=patient, uploaded_by=clinician, data=images.png_bytes(), accession_number="ACC-INF")
    Study.objects.filter(id=study.id).update(status="queued")
    since = last_sequence()
    study_run_inference(study_id=study.id)
    events = new_events(since)
    created = [event for event in events if event.action == "prediction.create"]
    assert len(created) == 1
    event = created[0]
    assert (event.patient_identifier, event.study_identifier, event.outcome) == ("MRN000123", "ACC-INF", "success")
    assert event.actor_username == "worker" and event.actor_id is None
    assert event.details and Prediction.objects.filter(study=study).count() == 1
    assert {e.action for e in events} <= {"prediction.create", "alert.raise"}
    assert sum(1 for e in events if e.action == "alert.raise") == (1 if Prediction.objects.get(study=study).covid_alert else 0)

"""The REST API with session and token authentication. Who may call each endpoint: tests/security/authorization_matrix.py."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from diagnosis.models import Patient, Study
from tests import images


@pytest.fixture
def api_clients(role_clients):
    clients = {}
    from accounts.models import User

    for role in ("clinician", "administrator", "auditor"):
        client = APIClient()
        client.force_authenticate(User.objects.filter(role__name=role).first())
        clients[role] = client
    clients["anonymous"] = APIClient()
    return clients


@pytest.mark.django_db
def test_upload_stores_one_study_and_answers_with_it(api_clients, patient, queued_inference):
    """Which roles may upload is tests/security/authorization_matrix.py; here, what an upload leaves behind."""
    response = api_clients["clinician"].post(
        "/api/studies/",
        {"patient": patient.id, "file": SimpleUploadedFile("c.png", images.png_bytes())},
        format="multipart",
    )
    assert response.status_code == 201 and Study.objects.count() == 1
    assert response.json()["status"] in ("received", "queued")
    assert response.json()["patient"]["mrn"] == patient.mrn


@pytest.mark.django_db
def test_refused_upload_stores_nothing(api_clients, patient, queued_inference):
    response = api_clients["auditor"].post(
        "/api/studies/", {"patient": patient.id, "file": SimpleUploadedFile("c.png", images.png_bytes())},
        format="multipart",
    )
    assert response.status_code == 403 and Study.objects.count() == 0


@pytest.mark.django_db
def test_a_study_without_a_result_has_no_prediction(api_clients, study):
    assert api_clients["clinician"].get(f"/api/studies/{study.id}/prediction/").status_code == 404


@pytest.mark.django_db
def test_a_study_without_a_result_lists_null_prediction_and_alert(api_clients, study):
    detail = api_clients["clinician"].get(f"/api/studies/{study.id}/").json()
    listed = api_clients["clinician"].get("/api/studies/").json()["results"]
    for body in (detail, listed[0]):
        assert body["id"] == study.id
        assert body["prediction"] is None and body["earlier_predictions"] == [] and body["alert"] is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"plain text, not a picture\n" * 20, "not a PNG, JPEG or DICOM"),
        (images.truncated(images.png_bytes()), "damaged or truncated"),
        (images.png_declaring_size(30000, 30000), "too large"),
        (images.dicom_bytes(with_pixels=False), "no pixel data"),
    ],
    ids=["text-as-png", "truncated-png", "huge-png", "dicom-no-pixels"],
)
def test_upload_rejects_bad_files_with_400(api_clients, patient, data, message):
    response = api_clients["clinician"].post(
        "/api/studies/", {"patient": patient.id, "file": SimpleUploadedFile("x.png", data)}, format="multipart"
    )
    assert response.status_code == 400
    assert message in str(response.json())
    assert Study.objects.count() == 0


@pytest.mark.django_db
def test_upload_with_missing_fields_is_400(api_clients, patient):
    response = api_clients["clinician"].post("/api/studies/", {"patient": patient.id}, format="multipart")
    assert response.status_code == 400
    assert "file" in response.json()["errors"] and response.json()["detail"].startswith("file: ")
    missing_patient = api_clients["clinician"].post(
        "/api/studies/", {"patient": 987654, "file": SimpleUploadedFile("c.png", images.png_bytes())}, format="multipart"
    )
    assert missing_patient.status_code == 404


@pytest.mark.django_db
def test_create_patient_and_reject_duplicate_mrn(api_clients):
    client = api_clients["clinician"]
    created = client.post("/api/patients/", {"mrn": "API-1", "name": "Luis Perez", "sex": "M"}, format="json")
    assert created.status_code == 201
    duplicate = client.post("/api/patients/", {"mrn": "API-1", "name": "Other"}, format="json")
    assert duplicate.status_code == 400
    assert "already exists" in str(duplicate.json())
    assert Patient.objects.filter(mrn="API-1").count() == 1
    assert api_clients["auditor"].post("/api/patients/", {"mrn": "API-2", "name": "X"}, format="json").status_code == 403


@pytest.mark.django_db
def test_token_authentication(clinician, study):
    token = Token.objects.create(user=clinician)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    response = client.get(f"/api/studies/{study.id}/")
    assert response.status_code == 200
    assert response.json()["accession_number"] == study.accession_number


@pytest.mark.django_db
def test_obtain_token_with_password(clinician):
    response = APIClient().post("/api/auth/token/", {"username": "dr_ana", "password": "correct-horse-battery-staple"})
    assert response.status_code == 200 and response.json()["token"]


@pytest.mark.django_db
def test_prediction_endpoint_returns_model_output(api_clients, study, active_model):
    from diagnosis.services.inference import study_run_inference

    Study.objects.filter(id=study.id).update(status="queued")
    study_run_inference(study_id=study.id)
    body = api_clients["clinician"].get(f"/api/studies/{study.id}/prediction/").json()
    assert body["model_version"]["name"] == active_model.name
    assert set(body["probabilities"]) == {"covid", "normal", "pneumonia"}
    assert "does not replace" in body["disclaimer"]


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["auditor", "administrator"])
def test_refused_role_gets_403_even_for_an_invalid_upload(role, api_clients):
    response = api_clients[role].post("/api/studies/", {"patient": "not-a-number"}, format="multipart")
    assert response.status_code == 403


@pytest.mark.django_db
def test_every_api_refusal_has_the_same_shape_a_detail_sentence(api_clients, patient, settings):
    empty = api_clients["clinician"].post(
        "/api/studies/", {"patient": patient.id, "file": SimpleUploadedFile("empty.png", b"")}, format="multipart")
    assert empty.status_code == 400
    assert empty.json()["detail"].startswith("file: ") and "empty" in empty.json()["detail"]
    assert "empty" in empty.json()["errors"]["file"][0]
    undecodable = api_clients["clinician"].post(
        "/api/studies/", {"patient": patient.id, "file": SimpleUploadedFile("x.png", b"not an image")},
        format="multipart")
    assert undecodable.status_code == 400 and isinstance(undecodable.json()["detail"], str)
    refused = api_clients["auditor"].post("/api/patients/", {"mrn": "X", "name": "X"}, format="json")
    assert refused.status_code == 403 and isinstance(refused.json()["detail"], str)
    assert api_clients["clinician"].get("/api/studies/987654/").json().keys() == {"detail"}
    no_such_route = api_clients["clinician"].get("/api/no-such-thing/")
    assert no_such_route.status_code == 404 and no_such_route.json() == {"detail": "Not found."}
    anonymous = api_clients["anonymous"].get("/api/studies/")
    assert anonymous.status_code == 401 and isinstance(anonymous.json()["detail"], str)

    settings.MAX_REQUEST_BYTES = 1000
    too_large = api_clients["clinician"].post(
        "/api/studies/", {"patient": patient.id, "file": SimpleUploadedFile("big.png", b"0" * 5000)},
        format="multipart")
    assert too_large.status_code == 413
    assert too_large["Content-Type"] == "application/json" and "larger than" in too_large.json()["detail"]

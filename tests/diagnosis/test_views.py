"""What the pages show and do. Who may open each page: tests/security/authorization_matrix.py."""

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from diagnosis.models import Patient, Study
from tests import images


@pytest.mark.django_db
def test_a_study_without_a_result_has_no_heatmap(role_clients, study):
    """Who may open which page is tests/security/authorization_matrix.py; here, what a permitted reader gets."""
    assert role_clients["clinician"].get(reverse("diagnosis:study_heatmap", args=[study.id])).status_code == 404


@pytest.mark.django_db
def test_login_page_and_login_flow(client, clinician):
    assert client.get(reverse("accounts:login")).status_code == 200
    response = client.post(reverse("accounts:login"), {"username": "dr_ana", "password": "correct-horse-battery-staple"})
    assert response.status_code == 302
    assert client.get(reverse("diagnosis:worklist")).status_code == 200
    assert AuditEvent.objects.filter(action="auth.login", actor_username="dr_ana").count() == 1


@pytest.mark.django_db
def test_wrong_password_is_refused_and_audited(client, clinician):
    response = client.post(reverse("accounts:login"), {"username": "dr_ana", "password": "wrong"})
    assert response.status_code == 200
    assert "do not match" in response.content.decode()
    assert AuditEvent.objects.filter(action="auth.login_failed", outcome="denied").count() == 1


@pytest.mark.django_db
def test_logout_ends_the_session(client, clinician):
    client.force_login(clinician)
    client.post(reverse("accounts:logout"))
    assert client.get(reverse("diagnosis:worklist")).status_code == 302


@pytest.mark.django_db
def test_clinician_creates_patient_and_duplicate_mrn_is_a_form_error(client, clinician):
    client.force_login(clinician)
    response = client.post(reverse("diagnosis:patient_create"), {"mrn": "NEW-1", "name": "Ana Ruiz", "sex": "F"})
    patient = Patient.objects.get(mrn="NEW-1")
    assert response.status_code == 302 and response["Location"] == reverse("diagnosis:patient_detail", args=[patient.id])
    again = client.post(reverse("diagnosis:patient_create"), {"mrn": "NEW-1", "name": "Someone", "sex": "F"})
    assert again.status_code == 400
    assert "already exists" in again.content.decode()
    assert Patient.objects.filter(mrn="NEW-1").count() == 1


@pytest.mark.django_db
def test_patient_search_by_name_and_mrn(client, clinician, patient):
    client.force_login(clinician)
    assert "Maria Lopez" in client.get(reverse("diagnosis:patient_list"), {"q": "lopez"}).content.decode()
    assert "Maria Lopez" in client.get(reverse("diagnosis:patient_list"), {"q": "000123"}).content.decode()
    assert "Maria Lopez" not in client.get(reverse("diagnosis:patient_list"), {"q": "nobody"}).content.decode()


@pytest.mark.django_db
def test_upload_page_stores_study_and_redirects(client, clinician, patient, queued_inference):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(clinician)
    response = client.post(
        reverse("diagnosis:study_upload", args=[patient.id]),
        {"file": SimpleUploadedFile("chest.png", images.png_bytes(), content_type="image/png")},
    )
    study = Study.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("diagnosis:study_detail", args=[study.id])


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("filename", "data", "message"),
    [
        ("x.png", b"just some text\n" * 20, "not a PNG, JPEG or DICOM"),
        ("x.png", images.truncated(images.png_bytes()), "damaged or truncated"),
        ("big.png", images.png_declaring_size(30000, 30000), "too large"),
        ("nopixels.dcm", images.dicom_bytes(with_pixels=False), "no pixel data"),
    ],
    ids=["text-as-png", "truncated-png", "huge-png", "dicom-no-pixels"],
)
def test_upload_page_shows_clear_error_for_bad_file(client, clinician, patient, filename, data, message, image_store):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(clinician)
    response = client.post(
        reverse("diagnosis:study_upload", args=[patient.id]),
        {"file": SimpleUploadedFile(filename, data, content_type="image/png")},
    )
    assert response.status_code == 400
    assert message in response.content.decode()
    assert Study.objects.count() == 0
    assert not image_store.exists() or not any(path.is_file() for path in image_store.rglob("*"))


@pytest.mark.django_db
def test_study_page_says_it_supports_not_replaces_a_clinician(client, clinician, study):
    client.force_login(clinician)
    page = client.get(reverse("diagnosis:study_detail", args=[study.id])).content.decode()
    assert "supports, and does not replace" in page
    assert "No model is active" in page


@pytest.mark.django_db
def test_completed_study_page_shows_probabilities_and_model_version(client, clinician, study, active_model):
    from diagnosis.services.inference import study_run_inference

    Study.objects.filter(id=study.id).update(status="queued")
    study_run_inference(study_id=study.id)
    client.force_login(clinician)
    page = client.get(reverse("diagnosis:study_detail", args=[study.id])).content.decode()
    assert str(active_model) in page
    for label in ("COVID-19", "No findings", "Pneumonia"):
        assert label in page
    assert "Show Grad-CAM heatmap" in page
    heatmap = client.get(reverse("diagnosis:study_heatmap", args=[study.id]))
    assert heatmap.status_code == 200 and heatmap["Content-Type"] == "image/png"
    assert heatmap["X-Content-Type-Options"] == "nosniff"
    # The tiny model reads the whole film: nothing to warn about.
    assert 'data-testid="result-warning"' not in page


@pytest.mark.django_db
@pytest.mark.parametrize(("code", "shown", "api_text"), [
    ("lungs_not_found", "lung fields could not be found", "treat this result as unreliable"),
    ("unstable", "This result is borderline", "should not matter"),
    ("unfamiliar", "looks unlike the films the model was trained on", "check the image and treat this result as unreliable"),
])
def test_result_with_a_warning_says_so_on_page_api_and_pdf(client, clinician, patient, monkeypatch, code, shown,
                                                             api_text):
    import io

    from pypdf import PdfReader

    from tests.diagnosis import factories

    model = factories.model_version(covid_threshold=0.5, status="active")
    study = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch)
    factories.completed_prediction(study=study, model=model, covid=0.2, warnings=[code])
    client.force_login(clinician)

    page = client.get(reverse("diagnosis:study_detail", args=[study.id])).content.decode()
    assert 'data-testid="result-warning"' in page and shown in page
    api = client.get(f"/api/studies/{study.id}/").json()["prediction"]
    assert api["warnings"] == [code]
    assert api_text in api["warning_messages"][0]
    report = client.get(reverse("diagnosis:study_report", args=[study.id])).content
    text = " ".join(" ".join(p.extract_text().split()) for p in PdfReader(io.BytesIO(report)).pages)
    assert shown in text


@pytest.mark.django_db
def test_study_views_are_audited(client, auditor, study):
    client.force_login(auditor)
    client.get(reverse("diagnosis:study_detail", args=[study.id]))
    client.get(reverse("diagnosis:study_image", args=[study.id]))
    assert AuditEvent.objects.filter(action="study.view", actor_username=auditor.username).count() == 1
    assert AuditEvent.objects.filter(action="study.image_view", actor_username=auditor.username).count() == 1


@pytest.mark.django_db
def test_denied_access_is_audited(client, administrator, study):
    client.force_login(administrator)
    client.get(reverse("diagnosis:study_detail", args=[study.id]))
    assert AuditEvent.objects.filter(actor_username=administrator.username, outcome="denied").count() == 1


@pytest.mark.django_db
def test_unknown_study_is_404(client, clinician):
    client.force_login(clinician)
    assert client.get(reverse("diagnosis:study_detail", args=[999999])).status_code == 404


@pytest.mark.django_db
def test_worklist_lists_pending_studies_for_polling(client, clinician, study):
    client.force_login(clinician)
    page = client.get(reverse("diagnosis:worklist")).content.decode()
    assert f'data-pending-ids="{study.id}"' in page
    statuses = client.get(reverse("diagnosis:study_statuses"), {"ids": str(study.id)}).json()
    # on_commit callbacks do not run inside a test transaction, so the study was never queued.
    assert statuses == {"statuses": {str(study.id): "received"}}


@pytest.mark.django_db
def test_a_large_films_preview_is_shown_before_the_worker_has_read_it(client, clinician, patient, image_store,
                                                                      queued_inference):
    import io

    from PIL import Image

    from diagnosis.services.ingest import study_create

    study = study_create(patient=patient, uploaded_by=clinician,
                         data=images.png_bytes(images.gradient(1600, 1200), bits=16))
    client.force_login(clinician)
    response = client.get(reverse("diagnosis:study_image", args=[study.id]))
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (800, 600)  # every second pixel: at most 1024 a side

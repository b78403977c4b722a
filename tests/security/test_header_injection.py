"""Accession numbers cannot carry quotes or line breaks into download headers, from any door; downloads
build their Content-Disposition with Django's helper, also for rows stored before the validation existed."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from diagnosis.models import Study
from diagnosis.services import storage
from diagnosis.services.ingest import UploadRejected, study_create
from ml.serving.imaging import encode_png
from tests import images
from tests.diagnosis import factories

HOSTILE = ['ACC"; filename=evil.exe', "ACC\r\nSet-Cookie: sessionid=stolen", "ACC\x00", "'ACC'", "ACC\\1", "ACC\t1", "A" * 65]


pytestmark = pytest.mark.usefixtures("queued_inference")


@pytest.mark.django_db
@pytest.mark.parametrize("accession", HOSTILE)
def test_form_refuses_a_hostile_accession_number(client, clinician, patient, accession):
    client.force_login(clinician)
    response = client.post(reverse("diagnosis:study_upload", args=[patient.id]),
                           {"file": SimpleUploadedFile("a.png", images.png_bytes()), "accession_number": accession})
    assert response.status_code == 400 and not Study.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("accession", HOSTILE)
def test_api_refuses_a_hostile_accession_number(clinician, patient, accession):
    api = APIClient()
    api.force_authenticate(clinician)
    response = api.post("/api/studies/", {"patient": patient.id, "file": SimpleUploadedFile("a.png", images.png_bytes()),
                                          "accession_number": accession}, format="multipart")
    assert response.status_code == 400 and "accession_number" in response.json()["errors"]
    assert not Study.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("accession", ['ACC"1', "ACC;1", "ACC'1"])
def test_a_hostile_dicom_accession_tag_is_refused(clinician, patient, accession):
    with pytest.raises(UploadRejected, match="accession number"):
        study_create(patient=patient, uploaded_by=clinician, data=images.dicom_bytes(accession_number=accession))
    assert not Study.objects.exists()


@pytest.mark.django_db
def test_ordinary_accession_numbers_are_accepted(clinician, patient):
    for number, accession in enumerate(["ACC-2026-0001", "RX 12/3456", "A1.B2_C3:4#5+(6)"]):
        study = study_create(patient=patient, uploaded_by=clinician, data=images.png_bytes(images.gradient(seed=number)),
                             accession_number=accession)
        assert study.accession_number == accession


@pytest.fixture
def legacy_hostile_study(clinician, patient, monkeypatch):
    """A study stored before accession numbers were validated."""
    model = factories.model_version(status="active")
    study = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch)
    prediction = factories.completed_prediction(study=study, model=model, covid=0.2)
    heatmap = storage.blob_put(encode_png(images.gradient()), kind=storage.HEATMAP, digest=study.image.sha256)
    prediction.__class__.objects.filter(id=prediction.id).update(heatmap_sha256=heatmap)
    Study.objects.filter(id=study.id).update(accession_number='X"\r\nSet-Cookie: sessionid=stolen')
    return study


@pytest.mark.django_db
@pytest.mark.parametrize("route", ["diagnosis:study_image", "diagnosis:study_heatmap", "diagnosis:study_report"])
def test_downloads_of_a_legacy_hostile_study_have_a_clean_header(client, clinician, legacy_hostile_study, route):
    client.force_login(clinician)
    response = client.get(reverse(route, args=[legacy_hostile_study.id]))
    assert response.status_code == 200
    disposition = response["Content-Disposition"]
    assert disposition.startswith("attachment; filename=")
    assert "\r" not in disposition and "\n" not in disposition and disposition.count('"') == 2
    assert "Set-Cookie" not in response.headers or "stolen" not in response.headers.get("Set-Cookie", "")


@pytest.mark.django_db
def test_api_report_of_a_legacy_hostile_study_has_a_clean_header(clinician, legacy_hostile_study):
    api = APIClient()
    api.force_authenticate(clinician)
    response = api.get(f"/api/studies/{legacy_hostile_study.id}/report/")
    assert response.status_code == 200
    disposition = response["Content-Disposition"]
    assert disposition == 'attachment; filename="cxr-report-X_Set-Cookie_sessionid_stolen.pdf"'

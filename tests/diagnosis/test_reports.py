"""The PDF report of a study: its content, who may download it, and the audit trail."""

import io

import pytest
from django.urls import reverse
from pypdf import PdfReader
from rest_framework.test import APIClient

from audit.models import AuditEvent
from diagnosis.services import storage
from diagnosis.services.feedback import feedback_record
from ml.serving.imaging import encode_png
from tests import images
from tests.diagnosis import factories


@pytest.fixture
def reported_study(clinician, patient, monkeypatch):
    model = factories.model_version(covid_threshold=0.6, status="active")
    study = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch,
                                     accession_number="ACC-REPORT")
    prediction = factories.completed_prediction(study=study, model=model, covid=0.2)
    heatmap = storage.blob_put(encode_png(images.gradient()), kind=storage.HEATMAP, digest=study.image.sha256)
    prediction.__class__.objects.filter(id=prediction.id).update(heatmap_sha256=heatmap)
    feedback_record(author=clinician, prediction=prediction, agrees=False, correct_label="pneumonia",
                    note="Consolidation at the right base.")
    return study


def pdf_text(data: bytes) -> tuple[str, int]:
    reader = PdfReader(io.BytesIO(data))
    images_count = sum(len(page.images) for page in reader.pages)
    return " ".join(" ".join(page.extract_text().split()) for page in reader.pages), images_count


@pytest.mark.django_db
def test_report_has_patient_study_images_probabilities_model_feedback_and_disclaimer(reported_study, client, clinician):
    client.force_login(clinician)
    response = client.get(reverse("diagnosis:study_report", args=[reported_study.id]))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert 'filename="cxr-report-ACC-REPORT.pdf"' in response["Content-Disposition"]
    text, picture_count = pdf_text(response.content)
    for expected in ("Maria Lopez", "MRN000123", "ACC-REPORT", "No findings", "COVID-19", "Pneumonia",
                     "0.200", "cxr-test", "Accuracy", "0.910", "COVID-19 sensitivity at threshold", "0.930",
                     "dr_ana disagrees; correct label: Pneumonia", "Consolidation at the right base.",
                     "supports, and does not replace, the judgement of a qualified clinician"):
        assert expected in text, expected
    assert picture_count == 2  # the image and the heatmap
    event = AuditEvent.objects.get(action="study.report_download")
    assert event.actor_username == "dr_ana" and event.study_identifier == "ACC-REPORT"


@pytest.mark.django_db
def test_report_of_a_study_without_result_still_carries_the_disclaimer(clinician, patient, monkeypatch, client):
    study = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch)
    client.force_login(clinician)
    text, _ = pdf_text(client.get(reverse("diagnosis:study_report", args=[study.id])).content)
    assert "No model output for this study." in text and "does not replace" in text


@pytest.mark.django_db
def test_report_through_the_api_for_each_role(reported_study, clinician, auditor, administrator):
    api = APIClient()
    for user, expected in ((clinician, 200), (auditor, 200), (administrator, 403)):
        api.force_authenticate(user)
        response = api.get(f"/api/studies/{reported_study.id}/report/")
        assert response.status_code == expected
        if expected == 200:
            assert response["Content-Type"] == "application/pdf" and response.content.startswith(b"%PDF")
    api.force_authenticate(None)
    assert api.get(f"/api/studies/{reported_study.id}/report/").status_code == 401
    api.force_authenticate(clinician)
    assert api.get("/api/studies/999999/report/").status_code == 404


@pytest.mark.django_db
def test_study_page_links_the_report(reported_study, client, clinician):
    client.force_login(clinician)
    page = client.get(reverse("diagnosis:study_detail", args=[reported_study.id])).content.decode()
    assert reverse("diagnosis:study_report", args=[reported_study.id]) in page
    assert 'data-testid="validation-figures"' in page and "0.970" in page


@pytest.mark.django_db
def test_study_page_lists_earlier_predictions_when_a_newer_model_re_ran_it(reported_study, client, clinician):
    newer = factories.model_version(version="v-newer", covid_threshold=0.6)
    factories.completed_prediction(study=reported_study, model=newer, covid=0.45)
    client.force_login(clinician)
    response = client.get(reverse("diagnosis:study_detail", args=[reported_study.id]))
    assert response.context["prediction"].model_version == newer
    page = response.content.decode()
    assert 'data-testid="earlier-predictions"' in page
    earlier = page.split('data-testid="earlier-predictions"')[1].split("</ul>")[0]
    assert "cxr-test v" in earlier and "v-newer" not in earlier and "0.200" in earlier


@pytest.mark.django_db
def test_api_study_carries_earlier_predictions_and_the_alert(reported_study, clinician, django_capture_on_commit_callbacks,
                                                             monkeypatch):
    from diagnosis.services.alerts import alert_raise_for_prediction

    monkeypatch.setattr("diagnosis.tasks.deliver_alert.delay", lambda **kwargs: None)
    newer = factories.model_version(version="v-newer", covid_threshold=0.6)
    with django_capture_on_commit_callbacks(execute=True):
        alert_raise_for_prediction(prediction=factories.completed_prediction(study=reported_study, model=newer, covid=0.9))
    api = APIClient()
    api.force_authenticate(clinician)
    body = api.get(f"/api/studies/{reported_study.id}/").json()
    assert body["prediction"]["model_version"]["version"] == "v-newer"
    assert [earlier["covid_probability"] for earlier in body["earlier_predictions"]] == [0.2]
    assert body["alert"]["state"] == "open" and body["alert"]["covid_probability"] == 0.9
    listing = api.get("/api/studies/").json()["results"]
    assert listing[0]["alert"]["state"] == "open"


@pytest.mark.django_db
def test_alert_under_another_result_is_explained_and_kept_with_its_meaning_on_one_page(clinician, patient, monkeypatch,
                                                                                        client):
    from diagnosis.services.alerts import alert_raise_for_prediction

    model = factories.model_version(covid_threshold=0.3, status="active")
    model.metrics = {"covid_sensitivity": 0.95, "covid_specificity": 0.7}
    model.save()
    study = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch,
                                     accession_number="ACC-PNEUMONIA-ALERT")
    prediction = factories.completed_prediction(study=study, model=model, covid=0.35, label="pneumonia",
                                                warnings=["unstable", "unfamiliar", "lungs_not_found"])
    alert_raise_for_prediction(prediction=prediction)
    client.force_login(clinician)
    reader = PdfReader(io.BytesIO(client.get(reverse("diagnosis:study_report", args=[study.id])).content))
    pages = [" ".join(page.extract_text().split()) for page in reader.pages]
    alert_pages = [text for text in pages if "COVID-19 alert." in text]
    assert len(alert_pages) == 1
    assert "Why an alert when the result is Pneumonia" in alert_pages[0]
    assert "asks for a review; it does not confirm COVID-19" in alert_pages[0]


@pytest.mark.django_db
def test_heatmap_is_laid_over_the_film_in_the_report(reported_study, client, clinician):
    from ml.serving.gradcam import heat_layer_png

    prediction = reported_study.predictions.get()
    layer = storage.blob_put(heat_layer_png(images.gradient(40, 30), width=40, height=30),
                             kind=storage.HEATMAP_LAYER, digest=reported_study.image.sha256)
    prediction.__class__.objects.filter(id=prediction.id).update(
        heatmap_sha256=layer, heatmap_box={"top": 0.1, "bottom": 0.9, "left": 0.2, "right": 0.8})
    client.force_login(clinician)
    text, images_count = pdf_text(client.get(reverse("diagnosis:study_report", args=[reported_study.id])).content)
    assert images_count == 2 and "The same film with the Grad-CAM heatmap" in text


@pytest.mark.django_db
def test_report_uses_the_readers_decimal_separator_and_one_date_format(reported_study, client, clinician):
    client.force_login(clinician)
    client.post(reverse("set_language"), {"language": "es", "next": "/"})
    text, _images = pdf_text(client.get(reverse("diagnosis:study_report", args=[reported_study.id])).content)
    assert "0,200" in text and "0.200" not in text  # the COVID-19 probability
    uploaded = reported_study.created_at.strftime("%Y-%m-%d %H:%M")
    assert uploaded in text

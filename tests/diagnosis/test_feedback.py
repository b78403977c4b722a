"""Clinician feedback: recorded on completed studies, edits keep their history, shown, in the API, summarised."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from rest_framework.test import APIClient

from audit.models import AuditEvent
from diagnosis.models import Feedback, FeedbackRevision
from diagnosis.selectors import agreement_by_model_version, feedback_training_examples
from diagnosis.services.feedback import feedback_record
from tests.diagnosis import factories


@pytest.fixture
def model(db):
    return factories.model_version(covid_threshold=0.6, status="active")


@pytest.fixture
def prediction(clinician, patient, monkeypatch, model):
    study = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch)
    return factories.completed_prediction(study=study, model=model, covid=0.2)  # predicted "normal"


@pytest.mark.django_db
def test_feedback_is_recorded_with_a_first_revision_and_an_audit_event(prediction, clinician):
    feedback = feedback_record(author=clinician, prediction=prediction, agrees=False, correct_label="pneumonia",
                               note="Right lower lobe consolidation.")
    assert (feedback.agrees, feedback.correct_label, feedback.study_id) == (False, "pneumonia", prediction.study_id)
    revision = feedback.revisions.get()
    assert (revision.number, revision.edited_by, revision.changes) == (1, clinician, {})
    event = AuditEvent.objects.get(action="feedback.create")
    assert event.study_identifier == prediction.study.accession_number and event.details["correct_label"] == "pneumonia"


@pytest.mark.django_db
def test_edit_keeps_who_when_and_what_changed(prediction, clinician):
    feedback_record(author=clinician, prediction=prediction, agrees=True, note="")
    feedback_record(author=clinician, prediction=prediction, agrees=False, correct_label="covid", note="Ground glass.")
    feedback = Feedback.objects.get()
    assert (feedback.agrees, feedback.correct_label) == (False, "covid")
    revisions = list(feedback.revisions.order_by("number"))
    assert [revision.number for revision in revisions] == [1, 2]
    assert revisions[0].correct_label == "normal" and revisions[0].agrees is True
    assert revisions[1].edited_by == clinician and revisions[1].edited_at >= revisions[0].edited_at
    assert revisions[1].changes == {"agrees": [True, False], "correct_label": ["normal", "covid"],
                                    "note": ["", "Ground glass."]}
    assert AuditEvent.objects.filter(action="feedback.edit").count() == 1
    # Saving the same values again is not an edit.
    feedback_record(author=clinician, prediction=prediction, agrees=False, correct_label="covid", note="Ground glass.")
    assert FeedbackRevision.objects.count() == 2


@pytest.mark.django_db
def test_each_clinician_has_their_own_feedback(prediction, clinician, second_clinician):
    feedback_record(author=clinician, prediction=prediction, agrees=True)
    feedback_record(author=second_clinician, prediction=prediction, agrees=False, correct_label="other")
    assert Feedback.objects.filter(prediction=prediction).count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("agrees, label, code", [
    (True, "covid", "label_contradicts_agreement"), (False, "normal", "label_contradicts_disagreement"),
    (False, "bogus", "label_missing"),
])
def test_inconsistent_feedback_is_refused_with_a_code_per_reason(prediction, clinician, agrees, label, code):
    with pytest.raises(ValidationError) as raised:
        feedback_record(author=clinician, prediction=prediction, agrees=agrees, correct_label=label)
    assert [error.code for error in raised.value.error_dict["correct_label"]] == [code]
    assert not Feedback.objects.exists()


@pytest.mark.django_db
def test_feedback_needs_a_completed_study(clinician, patient, monkeypatch, model):
    study = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch)
    prediction = factories.completed_prediction(study=study, model=model)
    study.__class__.objects.filter(id=study.id).update(status="processing")
    prediction.study.refresh_from_db()
    with pytest.raises(ValidationError) as raised:
        feedback_record(author=clinician, prediction=prediction, agrees=True)
    assert raised.value.code == "study_not_completed"


@pytest.mark.django_db
def test_clinician_records_and_edits_feedback_on_the_study_page(prediction, client, clinician):
    client.force_login(clinician)
    url = reverse("diagnosis:study_feedback", args=[prediction.study_id])
    response = client.post(url, {"agrees": "no", "correct_label": "pneumonia", "note": "Lobar pattern."})
    assert response.status_code == 302
    client.post(url, {"agrees": "no", "correct_label": "other", "note": "Lobar pattern, maybe atelectasis."})
    page = client.get(reverse("diagnosis:study_detail", args=[prediction.study_id])).content.decode()
    assert 'data-testid="feedback-item"' in page and "Other or indeterminate" in page
    assert "2 revisions" in page and "pneumonia" in page and "atelectasis" in page
    assert "Edit your feedback" in page


@pytest.mark.django_db
def test_invalid_feedback_form_shows_the_error(prediction, client, clinician):
    client.force_login(clinician)
    response = client.post(reverse("diagnosis:study_feedback", args=[prediction.study_id]),
                           {"agrees": "yes", "correct_label": "covid"})
    assert response.status_code == 400
    assert "the correct label is the predicted one" in response.content.decode()
    assert not Feedback.objects.exists()


@pytest.mark.django_db
def test_auditor_and_administrator_cannot_record_feedback(prediction, client, auditor, administrator):
    for user in (auditor, administrator):
        client.force_login(user)
        response = client.post(reverse("diagnosis:study_feedback", args=[prediction.study_id]), {"agrees": "yes"})
        assert response.status_code == 403
    assert not Feedback.objects.exists()
    client.force_login(auditor)
    assert 'data-testid="feedback-form"' not in client.get(
        reverse("diagnosis:study_detail", args=[prediction.study_id])).content.decode()


@pytest.mark.django_db
def test_feedback_through_the_api(prediction, clinician, auditor, administrator):
    api = APIClient()
    api.force_authenticate(clinician)
    url = f"/api/studies/{prediction.study_id}/feedback/"
    response = api.post(url, {"agrees": False, "correct_label": "pneumonia", "note": "API note"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["revisions"][0]["number"] == 1
    response = api.post(url, {"agrees": True}, format="json")
    assert response.json()["correct_label"] == "normal" and len(response.json()["revisions"]) == 2

    api.force_authenticate(auditor)
    body = api.get(url).json()
    assert body[0]["author"] == "dr_ana" and body[0]["revisions"][1]["changes"]["agrees"] == [False, True]
    assert api.post(url, {"agrees": True}, format="json").status_code == 403
    api.force_authenticate(administrator)
    assert api.get(url).status_code == 403
    assert api.get("/api/studies/%d/" % prediction.study_id).status_code == 403


@pytest.mark.django_db
def test_agreement_rate_per_model_version(clinician, second_clinician, patient, monkeypatch, model, client, auditor):
    older = factories.model_version(covid_threshold=0.5)
    studies = [factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch) for _ in range(2)]
    first = factories.completed_prediction(study=studies[0], model=model, covid=0.2)
    second = factories.completed_prediction(study=studies[1], model=model, covid=0.2)
    feedback_record(author=clinician, prediction=first, agrees=True)
    feedback_record(author=second_clinician, prediction=first, agrees=True)
    feedback_record(author=clinician, prediction=second, agrees=False, correct_label="covid")
    rows = {row.model_version.id: row for row in agreement_by_model_version()}
    assert (rows[model.id].feedback_count, rows[model.id].agree_count) == (3, 2)
    assert rows[model.id].agreement_rate == pytest.approx(2 / 3)
    assert rows[older.id].agreement_rate is None

    api = APIClient()
    api.force_authenticate(clinician)
    body = {row["model_version_id"]: row for row in api.get("/api/model-versions/agreement/").json()}
    assert body[model.id]["agreement_rate"] == pytest.approx(2 / 3)
    client.force_login(auditor)
    assert "67%" in client.get(reverse("diagnosis:model_versions")).content.decode()


@pytest.mark.django_db
def test_feedback_with_a_class_label_is_a_training_example(prediction, clinician, second_clinician):
    feedback_record(author=clinician, prediction=prediction, agrees=False, correct_label="pneumonia")
    feedback_record(author=second_clinician, prediction=prediction, agrees=False, correct_label="other")
    examples = list(feedback_training_examples())
    assert [(example.study.image.sha256, example.correct_label) for example in examples] == [
        (prediction.study.image.sha256, "pneumonia")]


@pytest.mark.django_db
def test_export_feedback_dataset_writes_a_manifest_and_the_images(prediction, clinician, tmp_path):
    from django.core.management import call_command

    feedback_record(author=clinician, prediction=prediction, agrees=False, correct_label="pneumonia")
    call_command("export_feedback_dataset", str(tmp_path / "dataset"))
    from ml.evaluation.datasets import load_dataset

    samples = load_dataset(tmp_path / "dataset", manifest=tmp_path / "dataset" / "manifest.csv")
    assert [(sample.label, sample.source) for sample in samples] == [("pneumonia", "cxr-portal-feedback")]
    assert samples[0].path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert prediction.study.patient.mrn not in (tmp_path / "dataset" / "manifest.csv").read_text()

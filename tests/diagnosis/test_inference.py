"""Running the model on a study: claimed once, stored once, failures bounded."""

import pytest

from audit.models import AuditEvent
from diagnosis.models import Prediction, StudyStatus
from diagnosis.services import inference
from diagnosis.services.ingest import study_create
from ml.serving.labels import CLASS_NAMES
from tests import images


@pytest.fixture
def queued_study(clinician, patient, queued_inference, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        study = study_create(patient=patient, uploaded_by=clinician, data=images.png_bytes())
    study.refresh_from_db()
    assert study.status == StudyStatus.QUEUED
    return study


@pytest.mark.django_db
def test_study_waits_while_no_model_is_active(queued_study):
    outcome = inference.study_run_inference(study_id=queued_study.id)
    queued_study.refresh_from_db()
    assert outcome.status == "waiting_for_model"
    assert queued_study.status == StudyStatus.QUEUED
    assert queued_study.attempt_count == 0


@pytest.mark.django_db
def test_completes_study_with_calibrated_probabilities_and_heatmap(queued_study, active_model, image_store):
    outcome = inference.study_run_inference(study_id=queued_study.id)
    queued_study.refresh_from_db()
    assert outcome.status == "completed"
    assert queued_study.status == StudyStatus.COMPLETED
    prediction = Prediction.objects.get(study=queued_study)
    assert prediction.model_version == active_model
    assert set(prediction.probabilities) == set(CLASS_NAMES)
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert prediction.predicted_label == max(prediction.probabilities, key=prediction.probabilities.get)
    assert prediction.covid_threshold == active_model.covid_threshold
    assert prediction.heatmap_sha256
    # The heatmap is a layer for the part of the film the model saw (the whole film: this model does not crop).
    assert list(image_store.rglob(f"{prediction.heatmap_sha256}.heatmap-layer.png"))
    assert prediction.heatmap_box == {"top": 0.0, "bottom": 1.0, "left": 0.0, "right": 1.0}
    assert AuditEvent.objects.filter(action="prediction.create", study_identifier=queued_study.accession_number).count() == 1


@pytest.mark.django_db
def test_the_worker_makes_the_preview_a_large_pngs_upload_left_to_it(clinician, patient, active_model, image_store,
                                                                      queued_inference):
    from diagnosis.services import storage

    study = study_create(patient=patient, uploaded_by=clinician,
                         data=images.png_bytes(images.gradient(1600, 1200), bits=16))
    assert not storage.blob_stored(study.image.sha256, kind=storage.PREVIEW)
    assert inference.study_run_inference(study_id=study.id).status == "completed"
    assert storage.blob_stored(study.image.sha256, kind=storage.PREVIEW)


@pytest.mark.django_db
def test_a_warning_from_preprocessing_is_stored_with_the_prediction_and_audited(queued_study, active_model, monkeypatch):
    import ml.serving.predictor
    import ml.serving.stability
    from ml.serving.preprocess import LUNGS_NOT_FOUND, preprocess_located

    def lungs_not_found(pixels, config):
        model_input, _warnings, box = preprocess_located(pixels, config)
        return model_input, [LUNGS_NOT_FOUND], box

    monkeypatch.setattr(ml.serving.predictor, "preprocess_located", lungs_not_found)
    monkeypatch.setattr(ml.serving.stability, "PERTURBATIONS", ())  # only the preprocessing warning is under test
    assert inference.study_run_inference(study_id=queued_study.id).status == "completed"
    prediction = Prediction.objects.get(study=queued_study)
    assert prediction.warnings == [LUNGS_NOT_FOUND]
    event = AuditEvent.objects.get(action="prediction.create", study_identifier=queued_study.accession_number)
    assert event.details["warnings"] == [LUNGS_NOT_FOUND]


@pytest.mark.django_db
def test_an_answer_that_moves_under_a_harmless_change_is_stored_as_unstable(queued_study, active_model, tiny_model_dir,
                                                                          monkeypatch):
    import ml.serving.stability
    from ml.serving.predictor import Predictor
    from ml.serving.stability import Perturbation, UNSTABLE
    from tests.conftest import synthetic_training_set

    # A film whose answer (class or COVID-19 alert) differs from the study's own.
    predictor = Predictor.load(tiny_model_dir)
    own = predictor.predict_one(inference.decode_image(images.png_bytes()).pixels)
    films, _labels = synthetic_training_set()
    other = next(film for film in [*films, *(1.0 - films)]
                 if (result := predictor.predict_one(film)).label != own.label or result.covid_alert != own.covid_alert)
    monkeypatch.setattr(ml.serving.stability, "PERTURBATIONS", (Perturbation("swap", "another film", lambda film: other),))

    assert inference.study_run_inference(study_id=queued_study.id).status == "completed"
    prediction = Prediction.objects.get(study=queued_study)
    assert prediction.warnings == [UNSTABLE]
    assert prediction.probabilities == pytest.approx(own.probabilities, abs=1e-6)  # flagged, not changed
    event = AuditEvent.objects.get(action="prediction.create", study_identifier=queued_study.accession_number)
    assert event.details["warnings"] == [UNSTABLE]


@pytest.mark.django_db
def test_a_film_unlike_the_training_films_is_stored_as_unfamiliar_and_its_score_audited(
    clinician, patient, familiar_model_dir, monkeypatch, queued_inference, django_capture_on_commit_callbacks
):
    import ml.serving.stability
    from diagnosis.services.model_registry import model_version_register
    from ml.serving.artifact import load_metadata
    from ml.serving.familiarity import UNFAMILIAR

    model_version_register(artifact_dir=familiar_model_dir, activate=True)
    monkeypatch.setattr(ml.serving.stability, "PERTURBATIONS", ())  # only the familiarity warning is under test
    with django_capture_on_commit_callbacks(execute=True):
        study = study_create(patient=patient, uploaded_by=clinician, data=images.png_bytes(images.checkerboard()))

    assert inference.study_run_inference(study_id=study.id).status == "completed"
    prediction = Prediction.objects.get(study=study)
    assert prediction.warnings == [UNFAMILIAR]
    assert set(prediction.probabilities) == set(CLASS_NAMES)  # flagged, still answered
    event = AuditEvent.objects.get(action="prediction.create", study_identifier=study.accession_number)
    assert event.details["warnings"] == [UNFAMILIAR]
    assert event.details["familiarity_score"] > load_metadata(familiar_model_dir).familiarity["threshold"]


@pytest.mark.django_db
def test_a_folder_recalibrated_after_registration_is_not_served_under_the_old_version(
    queued_study, tiny_model_dir, tmp_path
):
    import json
    import shutil

    from diagnosis.services.model_registry import model_version_register

    folder = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, folder)
    model_version_register(artifact_dir=folder, activate=True)
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata.update(version="1.1", temperature=metadata["temperature"] * 1.5)  # as ml.recalibrate does in place
    (folder / "metadata.json").write_text(json.dumps(metadata))

    outcome = inference.study_run_inference(study_id=queued_study.id)

    queued_study.refresh_from_db()
    assert outcome.status == "retry"
    assert "(version 1.1): register that version" in queued_study.error_message
    assert not Prediction.objects.filter(study=queued_study).exists()


@pytest.mark.django_db
def test_running_the_same_task_twice_makes_one_prediction(queued_study, active_model):
    from diagnosis.tasks import run_inference

    first = run_inference.apply(kwargs={"study_id": queued_study.id}).get()
    second = run_inference.apply(kwargs={"study_id": queued_study.id}).get()
    assert (first, second) == ("completed", "skipped")
    assert Prediction.objects.filter(study=queued_study).count() == 1


@pytest.mark.django_db
def test_failure_is_retried_then_marked_failed(queued_study, active_model, monkeypatch, settings):
    settings.INFERENCE_MAX_ATTEMPTS = 2

    def broken_predictor(model_version):
        raise RuntimeError("model file unreadable")

    monkeypatch.setattr(inference, "predictor_for", broken_predictor)
    first = inference.study_run_inference(study_id=queued_study.id)
    queued_study.refresh_from_db()
    assert first.status == "retry"
    assert queued_study.status == StudyStatus.QUEUED
    assert "model file unreadable" in queued_study.error_message

    second = inference.study_run_inference(study_id=queued_study.id)
    queued_study.refresh_from_db()
    assert second.status == "failed"
    assert queued_study.status == StudyStatus.FAILED
    assert queued_study.attempt_count == 2
    assert "model file unreadable" in queued_study.error_message
    assert inference.study_run_inference(study_id=queued_study.id).status == "skipped"


@pytest.mark.django_db
def test_stale_processing_study_is_requeued(queued_study, active_model, queued_inference):
    from datetime import timedelta

    from django.utils import timezone

    from diagnosis.models import Study

    queued_inference.clear()  # the study's own first queueing
    Study.objects.filter(id=queued_study.id).update(
        status=StudyStatus.PROCESSING, started_at=timezone.now() - timedelta(hours=1), attempt_count=1
    )
    inference.studies_requeue_stale()
    queued_study.refresh_from_db()
    assert queued_study.status == StudyStatus.QUEUED
    assert queued_inference == [{"study_id": queued_study.id}]


@pytest.mark.django_db
def test_activating_a_model_requeues_waiting_studies(queued_study, tiny_model_dir, queued_inference,
                                                      django_capture_on_commit_callbacks):
    from diagnosis.services.model_registry import model_version_register

    queued_inference.clear()  # the study's own first queueing
    with django_capture_on_commit_callbacks(execute=True):
        model_version_register(artifact_dir=tiny_model_dir, activate=True)
    assert queued_inference == [{"study_id": queued_study.id}]


def hold_study(study, *, lease_seconds_from_now: float, attempts: int = 1, claim: str = "dead-worker:1:abc"):
    from datetime import timedelta

    from django.utils import timezone

    from diagnosis.models import Study

    Study.objects.filter(id=study.id).update(
        status=StudyStatus.PROCESSING, started_at=timezone.now() - timedelta(seconds=40), claimed_by=claim,
        lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds_from_now), attempt_count=attempts,
    )


@pytest.mark.django_db
def test_a_claim_whose_lease_lapsed_is_taken_over_by_the_next_delivery(queued_study, active_model):
    hold_study(queued_study, lease_seconds_from_now=-1)
    outcome = inference.study_run_inference(study_id=queued_study.id)
    queued_study.refresh_from_db()
    assert outcome.status == "completed"
    assert queued_study.status == StudyStatus.COMPLETED
    assert queued_study.attempt_count == 2
    assert Prediction.objects.filter(study=queued_study).count() == 1


@pytest.mark.django_db
def test_a_claim_under_a_live_lease_is_left_alone_and_looked_at_again_when_it_lapses(queued_study, active_model):
    hold_study(queued_study, lease_seconds_from_now=20)
    outcome = inference.study_run_inference(study_id=queued_study.id)
    queued_study.refresh_from_db()
    assert outcome.status == "held"
    assert 20 <= outcome.retry_after_seconds <= 22
    assert queued_study.status == StudyStatus.PROCESSING
    assert queued_study.claimed_by == "dead-worker:1:abc"


@pytest.mark.django_db
def test_a_lapsed_claim_with_no_attempts_left_fails_instead_of_looping(queued_study, active_model, settings):
    settings.INFERENCE_MAX_ATTEMPTS = 2
    hold_study(queued_study, lease_seconds_from_now=-1, attempts=2)
    assert inference.study_run_inference(study_id=queued_study.id).status == "failed"
    queued_study.refresh_from_db()
    assert queued_study.status == StudyStatus.FAILED


@pytest.mark.django_db
def test_the_sweeper_rings_again_for_a_study_whose_worker_stopped_renewing(queued_study, active_model,
                                                                           queued_inference):
    queued_inference.clear()  # the study's own first queueing
    hold_study(queued_study, lease_seconds_from_now=20)
    assert inference.studies_requeue_stale() == 0
    hold_study(queued_study, lease_seconds_from_now=-1)
    assert inference.studies_requeue_stale() == 1
    queued_study.refresh_from_db()
    assert queued_study.status == StudyStatus.QUEUED
    assert queued_inference == [{"study_id": queued_study.id}]


@pytest.mark.django_db
def test_the_lease_is_renewed_while_the_model_runs(queued_study, active_model, monkeypatch, settings):
    """The renewal runs on its own thread and connection; here it is called in line to see what it writes."""
    from datetime import timedelta

    from django.utils import timezone

    settings.INFERENCE_LEASE = timedelta(seconds=30)
    seen = {}

    def slow_model(study_id, model_version):
        study = inference.Study.objects.get(id=study_id)
        seen["claim"], seen["lease"] = study.claimed_by, study.lease_expires_at
        return inference.InferenceOutcome(study_id, "completed")

    monkeypatch.setattr(inference, "_run_claimed", slow_model)
    before = timezone.now()
    inference.study_run_inference(study_id=queued_study.id)
    assert seen["claim"].count(":") == 2  # host:pid:claim
    assert before + timedelta(seconds=29) < seen["lease"] <= timezone.now() + timedelta(seconds=30)


@pytest.mark.django_db
def test_a_database_error_mid_task_goes_through_the_retry_path_and_resumes_the_claim(queued_study, active_model,
                                                                                      monkeypatch):
    from django.db import OperationalError

    from diagnosis.tasks import run_inference

    real_run = inference._run_claimed

    def database_restarting(study_id, model_version):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(inference, "_run_claimed", database_restarting)
    retried = []
    monkeypatch.setattr(run_inference, "retry", lambda **kwargs: retried.append(kwargs) or RuntimeError("retry"))
    with pytest.raises(RuntimeError):
        run_inference.run(study_id=queued_study.id)
    queued_study.refresh_from_db()
    assert queued_study.status == StudyStatus.PROCESSING
    assert retried[0]["kwargs"] == {"study_id": queued_study.id, "resume_claim": queued_study.claimed_by}

    monkeypatch.setattr(inference, "_run_claimed", real_run)
    assert run_inference.run(**retried[0]["kwargs"]) == "completed"
    queued_study.refresh_from_db()
    assert queued_study.status == StudyStatus.COMPLETED
    assert queued_study.attempt_count == 1  # resuming the same claim is not another attempt


@pytest.mark.django_db
def test_a_colour_photo_gets_a_not_a_radiograph_warning_first(clinician, patient, active_model, queued_inference,
                                                              django_capture_on_commit_callbacks):
    from tests import images

    with django_capture_on_commit_callbacks(execute=True):
        study = study_create(patient=patient, uploaded_by=clinician, data=images.colour_photo_png())
    assert study.image.colour_share > 0.9
    assert inference.study_run_inference(study_id=study.id).status == "completed"
    prediction = Prediction.objects.get(study=study)
    assert prediction.warnings[0] == "not_radiograph" and prediction.voided
    assert "probably not a chest radiograph" in prediction.warning_messages()[0]


@pytest.mark.django_db
def test_a_grey_film_gets_no_not_a_radiograph_warning(queued_study, active_model):
    assert queued_study.image.colour_share is None
    inference.study_run_inference(study_id=queued_study.id)
    assert "not_radiograph" not in Prediction.objects.get(study=queued_study).warnings

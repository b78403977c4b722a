"""Upload through the API; a real Celery worker process, fed through Redis, classifies the study."""

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from diagnosis.models import Prediction, Study, StudyStatus
from tests import images
from tests.portal_processes import celery_worker, portal_environment, wait_until

WORKER_TIMEOUT_SECONDS = 180


@pytest.fixture
def celery_worker_process(image_store, tmp_path):
    """A real `celery worker` process on the test database and Redis, consuming the inference queue."""
    with celery_worker(queues="inference,default", name="e2e", env=portal_environment(image_store),
                       log_path=tmp_path / "worker.log") as worker:
        yield worker


def wait_for_status(study_id: int, statuses: set[str], *, process, log_path: Path) -> Study:
    wait_until(lambda: Study.objects.get(id=study_id).status in statuses, what=f"study {study_id} finishing",
               worker=(process, log_path), timeout=WORKER_TIMEOUT_SECONDS)
    return Study.objects.get(id=study_id)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_upload_is_classified_by_a_real_worker_through_redis(clinician, patient, tiny_model_dir, celery_worker_process):
    from diagnosis.services.model_registry import model_version_register
    from diagnosis.tasks import run_inference

    process, log_path = celery_worker_process
    model_version = model_version_register(artifact_dir=tiny_model_dir, activate=True)

    client = APIClient()
    client.force_authenticate(clinician)
    response = client.post(
        "/api/studies/",
        {"patient": patient.id, "file": SimpleUploadedFile("chest.dcm", images.dicom_bytes(accession_number="E2E-1"))},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    study_id = response.json()["id"]

    study = wait_for_status(study_id, {StudyStatus.COMPLETED, StudyStatus.FAILED}, process=process, log_path=log_path)
    assert study.status == StudyStatus.COMPLETED, study.error_message

    body = client.get(f"/api/studies/{study_id}/").json()
    assert body["status"] == "completed"
    assert body["prediction"]["model_version"]["name"] == model_version.name
    assert abs(sum(body["prediction"]["probabilities"].values()) - 1.0) < 1e-4

    # The broker delivering the same task again (twice) must not create a second prediction. The worker takes
    # one task at a time in queue order, so once a study uploaded after the two redeliveries is done, they are too.
    attempts = study.attempt_count
    run_inference.delay(study_id=study_id)
    run_inference.delay(study_id=study_id)
    later = client.post(
        "/api/studies/",
        {"patient": patient.id, "file": SimpleUploadedFile("later.dcm", images.dicom_bytes(accession_number="E2E-2"))},
        format="multipart",
    )
    assert later.status_code == 201, later.content
    later_study = wait_for_status(later.json()["id"], {StudyStatus.COMPLETED, StudyStatus.FAILED}, process=process,
                                  log_path=log_path)
    assert later_study.status == StudyStatus.COMPLETED, later_study.error_message
    study.refresh_from_db()
    assert (study.status, study.attempt_count) == (StudyStatus.COMPLETED, attempts)  # neither redelivery claimed it
    assert Prediction.objects.filter(study_id=study_id).count() == 1

"""Upload through the API; a real Celery worker process, fed through Redis, classifies the study."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from rest_framework.test import APIClient

from diagnosis.models import Prediction, Study, StudyStatus
from tests import images

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORKER_TIMEOUT_SECONDS = 180


@pytest.fixture
def celery_worker_process(image_store, tmp_path):
    """A real `celery worker` process on the test database and Redis, consuming the inference queue."""
    broker_url = settings.CELERY_BROKER_URL
    assert broker_url.startswith("redis://"), "the end-to-end test runs against Redis"
    redis.Redis.from_url(broker_url).flushdb()
    database = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "cxr_portal.settings.test",
        "DATABASE_URL": (
            f"postgres://{database['USER']}:{database['PASSWORD'] or ''}@{database['HOST'] or '127.0.0.1'}:"
            f"{database['PORT'] or 5432}/{database['NAME']}"
        ),
        "CELERY_BROKER_URL": broker_url,
        "CXR_IMAGE_STORE_DIR": str(image_store),
        "CUDA_VISIBLE_DEVICES": "",
    }
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "cxr_portal", "worker", "-Q", "inference,default",
             "--pool=solo", "--concurrency=1", "--loglevel=INFO", "--without-gossip", "--without-mingle",
             "-n", f"e2e-{os.getpid()}@%h"],
            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            yield process, log_path
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
            redis.Redis.from_url(broker_url).flushdb()


def wait_for_status(study_id: int, statuses: set[str], *, process, log_path: Path) -> Study:
    deadline = time.monotonic() + WORKER_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        study = Study.objects.get(id=study_id)
        if study.status in statuses:
            return study
        if process.poll() is not None:
            pytest.fail(f"worker exited early:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.5)
    pytest.fail(f"study {study_id} still {study.status} after {WORKER_TIMEOUT_SECONDS}s:\n{log_path.read_text()[-4000:]}")


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

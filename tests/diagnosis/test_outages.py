"""Outages never lose an upload or lie about it: Redis down, PostgreSQL down, a client that retries."""

import socket
from contextlib import contextmanager
from datetime import timedelta
from unittest import mock

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from cxr_portal.celery import app as celery_app
from diagnosis.models import Prediction, Study, StudyStatus
from diagnosis.tasks import requeue_stale_studies, run_inference
from tests import images


def closed_loopback_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def broker_unreachable():
    """Point Celery's producer at a closed port, as when Redis is down; restore it afterwards."""
    original = celery_app.conf.broker_url
    celery_app.conf.broker_url = f"redis://127.0.0.1:{closed_loopback_port()}/0"
    celery_app._after_fork()  # drop the pooled connections to the real broker
    yield
    celery_app.conf.broker_url = original
    celery_app._after_fork()


@pytest.fixture
def cache_unreachable(settings):
    # Django's setting_changed handler rebuilds the cache connections from the new CACHES. Put the working
    # cache back before the autouse empty_cache fixture clears it at teardown.
    working = settings.CACHES
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": f"redis://127.0.0.1:{closed_loopback_port()}/0"}}
    yield
    settings.CACHES = working


def upload(client, patient, *, accession: str, idempotency_key: str = ""):
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return client.post(
        "/api/studies/",
        {"patient": patient.id, "file": SimpleUploadedFile("chest.png", images.png_bytes(images.gradient(seed=sum(map(ord, accession))))),
         "accession_number": accession},
        format="multipart", headers=headers,
    )


@pytest.mark.django_db
def test_upload_while_the_broker_is_down_is_stored_answered_201_and_completed_by_the_sweeper(
    clinician, patient, active_model, broker_unreachable, django_capture_on_commit_callbacks, settings
):
    client = APIClient()
    client.force_authenticate(clinician)
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(client, patient, accession="BROKER-DOWN-1")
    assert response.status_code == 201, response.content
    study = Study.objects.get()
    # The bell did not ring: the study says so, so the sweeper rings it as soon as the broker is back.
    assert study.status == StudyStatus.RECEIVED

    rung = []
    settings.INFERENCE_RECEIVED_GRACE = timedelta(0)
    with mock.patch.object(run_inference, "delay", lambda **kwargs: rung.append(kwargs)):
        assert requeue_stale_studies() == 1
    assert rung == [{"study_id": study.id}]
    assert run_inference.apply(kwargs=rung[0]).get() == "completed"
    study.refresh_from_db()
    assert study.status == StudyStatus.COMPLETED
    assert Prediction.objects.filter(study=study).count() == 1


@pytest.mark.django_db
def test_upload_while_the_cache_is_down_is_not_refused(clinician, patient, cache_unreachable, queued_inference):
    client = APIClient()
    client.force_authenticate(clinician)
    response = upload(client, patient, accession="CACHE-DOWN-1")
    assert response.status_code == 201, response.content
    assert Study.objects.count() == 1


@pytest.mark.django_db
def test_a_retry_with_the_same_idempotency_key_returns_the_first_study(clinician, second_clinician, patient,
                                                                          queued_inference):
    client = APIClient()
    client.force_authenticate(clinician)
    first = upload(client, patient, accession="IDEMPOTENT-1", idempotency_key="retry-me-7")
    again = upload(client, patient, accession="IDEMPOTENT-1", idempotency_key="retry-me-7")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert Study.objects.count() == 1

    # The key is the client's, per user: another clinician's same key is another upload.
    other = APIClient()
    other.force_authenticate(second_clinician)
    assert upload(other, patient, accession="IDEMPOTENT-2", idempotency_key="retry-me-7").status_code == 201
    assert Study.objects.count() == 2


@pytest.mark.django_db
def test_an_overlong_idempotency_key_is_refused(clinician, patient):
    client = APIClient()
    client.force_authenticate(clinician)
    response = upload(client, patient, accession="IDEMPOTENT-3", idempotency_key="k" * 129)
    assert response.status_code == 400
    assert Study.objects.count() == 0


@contextmanager
def database_unreachable():
    """Point Django's connection at a closed port, as when PostgreSQL is down or restarting."""
    original_port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(closed_loopback_port())
    try:
        yield
    finally:
        connection.settings_dict["PORT"] = original_port
        connection.close()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_api_answers_json_503_with_retry_after_while_the_database_is_down(clinician):
    client = APIClient()
    client.force_authenticate(clinician)
    with database_unreachable():
        response = client.get("/api/studies/")
    assert response.status_code == 503
    assert response["Retry-After"].isdigit()
    assert response["Content-Type"] == "application/json"
    assert "unavailable" in response.json()["detail"]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_pages_answer_a_friendly_503_while_the_database_is_down(clinician):
    client = Client(raise_request_exception=False)
    client.force_login(clinician)
    with database_unreachable():
        response = client.get("/worklist/")
    assert response.status_code == 503
    assert response["Retry-After"].isdigit()
    assert b"briefly unavailable" in response.content

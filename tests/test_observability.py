"""Health endpoints, Prometheus metrics and request ids, as an operator and a log collector see them."""

import re
from datetime import timedelta

import pytest
import redis
from celery.signals import before_task_publish
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from diagnosis.models import WorkerHeartbeat
from diagnosis.services.operations import worker_heartbeat_record
from tests import images
from tests.diagnosis import factories
from tests.diagnosis.test_outages import database_unreachable


@pytest.fixture
def inference_worker_alive(db):
    worker_heartbeat_record(hostname="inference@ward-server", queues="inference", concurrency=2,
                            started_at=timezone.now())


def test_liveness_answers_without_the_database():
    with database_unreachable():
        response = Client().get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_ready_when_database_broker_an_inference_worker_and_a_model_answer(inference_worker_alive):
    factories.model_version(status="active")
    response = Client().get("/health/ready")
    assert response.status_code == 200, response.json()
    assert {name for name, check in response.json()["checks"].items() if check["ok"]} == {
        "database", "broker", "inference_worker", "active_model"}


@pytest.mark.django_db
def test_not_ready_without_a_model_or_with_a_silent_worker(inference_worker_alive):
    body = Client().get("/health/ready")
    assert body.status_code == 503
    assert body.json()["checks"]["active_model"]["ok"] is False

    factories.model_version(status="active")
    WorkerHeartbeat.objects.update(last_seen_at=timezone.now() - settings.WORKER_HEARTBEAT_STALE_AFTER - timedelta(1))
    body = Client().get("/health/ready")
    assert body.status_code == 503
    assert body.json()["checks"]["inference_worker"]["ok"] is False


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_not_ready_while_the_database_is_down():
    with database_unreachable():
        response = Client().get("/health/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["database"]["ok"] is False


def metric(body: str, name: str, **labels) -> float:
    label_text = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = rf"^{re.escape(name)}{{{re.escape(label_text)}}} ([0-9.e+-]+)$" if labels else rf"^{re.escape(name)} ([0-9.e+-]+)$"
    found = re.search(pattern, body, re.MULTILINE)
    assert found, f"{name} {labels} not in metrics"
    return float(found.group(1))


@pytest.mark.django_db
def test_metrics_report_queue_predictions_failures_latency_and_the_oldest_waiting_study(
    clinician, patient, monkeypatch, inference_worker_alive
):
    model = factories.model_version(status="active")
    waiting = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch)
    from diagnosis.models import Study

    Study.objects.filter(id=waiting.id).update(created_at=timezone.now() - timedelta(seconds=90))
    done = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch)
    factories.completed_prediction(study=done, model=model, covid=0.1, label="normal")
    Client().get("/health/live")  # one request for the latency histogram

    body = Client().get("/metrics").content.decode()
    assert metric(body, "cxr_studies", status="received") == 1
    assert metric(body, "cxr_studies", status="completed") == 1
    assert metric(body, "cxr_predictions_total", label="normal") == 1
    assert metric(body, "cxr_studies_failed_total") == 0
    assert 89 <= metric(body, "cxr_oldest_waiting_study_seconds") < 200
    assert metric(body, "cxr_inference_seconds", quantile="0.5") == pytest.approx(0.012)
    assert metric(body, "cxr_workers_alive") == 1
    assert metric(body, "cxr_http_request_duration_seconds_count", method="GET", route="health/live",
                  status="200") >= 1
    assert "cxr_broker_queue_length" in body


@pytest.mark.django_db
def test_metrics_are_refused_to_other_addresses_unless_they_bring_the_token(settings):
    settings.METRICS_TOKEN = "scrape-secret-123"
    outsider = Client(REMOTE_ADDR="10.20.30.40")
    assert outsider.get("/metrics").status_code == 403
    assert outsider.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert outsider.get("/metrics", headers={"Authorization": "Bearer scrape-secret-123"}).status_code == 200
    settings.METRICS_ALLOWED_NETWORKS = ["10.20.0.0/16"]
    assert Client(REMOTE_ADDR="10.20.30.40").get("/metrics").status_code == 200


# Transactional: the upload's on_commit hook runs inside the request, as in production.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_request_id_names_the_response_and_travels_with_the_task_it_queues(clinician, patient):
    published = []

    def capture(headers=None, **kwargs):
        published.append(dict(headers or {}))

    before_task_publish.connect(capture, weak=False)
    client = APIClient()
    client.force_authenticate(clinician)
    try:
        response = client.post(
            "/api/studies/", {"patient": patient.id, "file": SimpleUploadedFile("c.png", images.png_bytes())},
            format="multipart", headers={"X-Request-ID": "ward7-upload-0001"},
        )
    finally:
        before_task_publish.disconnect(capture)
        redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("inference")
    assert response.status_code == 201
    assert response["X-Request-ID"] == "ward7-upload-0001"
    assert [headers.get("request_id") for headers in published] == ["ward7-upload-0001"]

    # An id that could forge a log line is replaced by one of ours.
    forged = Client().get("/health/live", headers={"X-Request-ID": "x\nERROR fake line"})
    assert re.fullmatch(r"[0-9a-f]{16}", forged["X-Request-ID"])

"""A real Celery worker, fed through Redis, delivers an alert: the failing webhook is retried with back-off."""

import time

import pytest
from django.db import transaction

from diagnosis.models import AlertDelivery
from diagnosis.services.alerts import alert_raise_for_prediction
from tests.diagnosis import factories
from tests.diagnosis.test_alerts import WEBHOOK_SECRET, WebhookReceiver
from tests.test_end_to_end_worker import celery_worker_process  # noqa: F401 - the worker fixture

DELIVERY_TIMEOUT_SECONDS = 90


@pytest.fixture
def webhook_receiver(monkeypatch, settings):
    """A receiver that fails once with 500, then accepts; the worker process is told about it through its environment."""
    receiver = WebhookReceiver([500, 200])
    settings.CXR_ALERT_WEBHOOK_URL = receiver.url
    settings.CXR_ALERT_WEBHOOK_SECRET = WEBHOOK_SECRET
    monkeypatch.setenv("CXR_ALERT_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("CXR_ALERT_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("CXR_ALERT_RETRY_BASE_SECONDS", "1")
    yield receiver
    receiver.close()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_real_worker_retries_the_failing_webhook_and_delivers_each_channel_once(
    webhook_receiver, celery_worker_process, clinician, patient, monkeypatch  # noqa: F811
):
    process, log_path = celery_worker_process
    model = factories.model_version(covid_threshold=0.5, status="active")
    study = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch)
    with transaction.atomic():
        prediction = factories.completed_prediction(study=study, model=model, covid=0.9)
        alert = alert_raise_for_prediction(prediction=prediction)
    # Committed: the delivery tasks are now in Redis, and the worker picks them up.

    deadline = time.monotonic() + DELIVERY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if AlertDelivery.objects.filter(alert=alert, channel="webhook", outcome="succeeded").exists():
            break
        if process.poll() is not None:
            pytest.fail(f"worker exited early:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.5)
    else:
        pytest.fail(f"webhook not delivered:\n{log_path.read_text()[-4000:]}")

    time.sleep(2)  # anything still in flight would show up now
    assert list(AlertDelivery.objects.filter(alert=alert, channel="webhook").order_by("attempt")
                .values_list("attempt", "outcome", "response_status")) == [(1, "failed", 500), (2, "succeeded", 200)]
    assert list(AlertDelivery.objects.filter(alert=alert, channel="in_app").values_list("outcome", flat=True)) == [
        "succeeded"]
    assert len(webhook_receiver.requests) == 2
    assert all(request["signature_valid"] for request in webhook_receiver.requests)

"""COVID-19 alerts: one per study, raised with the prediction, delivered per channel with retries, acknowledged."""

import io
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from diagnosis.models import Alert, AlertDelivery, DeliveryOutcome
from diagnosis.services import alerts as alert_service
from diagnosis.services import inference
from diagnosis.services.feedback import feedback_record
from tests.diagnosis import factories

WEBHOOK_SECRET = "test-webhook-secret-0123456789"


class WebhookReceiver:
    """A local HTTP receiver on 127.0.0.1 that checks each request's HMAC signature."""

    def __init__(self, statuses: list[int]):
        self.statuses = list(statuses)
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({
                    "body": body,
                    "signature_valid": alert_service.webhook_signature_valid(
                        body=body, secret=WEBHOOK_SECRET, header=self.headers.get(alert_service.SIGNATURE_HEADER, "")
                    ),
                    "delivery_id": self.headers.get(alert_service.DELIVERY_ID_HEADER),
                })
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status < 400 else b"receiver broken")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/cxr"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory(settings):
    receivers = []

    def make(statuses=(200,)):
        receiver = WebhookReceiver(list(statuses))
        receivers.append(receiver)
        settings.CXR_ALERT_WEBHOOK_URL = receiver.url
        settings.CXR_ALERT_WEBHOOK_SECRET = WEBHOOK_SECRET
        return receiver

    yield make
    for receiver in receivers:
        receiver.close()


@pytest.fixture
def all_channels(settings):
    settings.CXR_ALERT_EMAIL_RECIPIENTS = ["covid-team@hospital.test", "radiology@hospital.test"]
    settings.CXR_ALERT_RETRY_BASE_SECONDS = 30


@pytest.fixture
def bell(monkeypatch):
    """Records deliver_alert.delay calls instead of sending them to the broker."""
    calls = []
    monkeypatch.setattr("diagnosis.tasks.deliver_alert.delay", lambda **kwargs: calls.append(kwargs))
    return calls


@pytest.fixture
def alert(clinician, patient, monkeypatch, bell, django_capture_on_commit_callbacks):
    model = factories.model_version(covid_threshold=0.6, status="active")
    study = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch)
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        prediction = factories.completed_prediction(study=study, model=model, covid=0.83)
        raised = alert_service.alert_raise_for_prediction(prediction=prediction)
    assert raised is not None
    return raised


# --- raising -----------------------------------------------------------------------------------------------------


@pytest.fixture
def queued_study(clinician, patient, queued_inference, django_capture_on_commit_callbacks):
    from diagnosis.services.ingest import study_create
    from tests import images

    with django_capture_on_commit_callbacks(execute=True):
        study = study_create(patient=patient, uploaded_by=clinician, data=images.png_bytes())
    return study


@pytest.fixture
def always_alerting_model(db, tiny_model_dir, tmp_path):
    """The tiny artifact with its COVID-19 threshold at 0: any calibrated COVID-19 probability reaches it,
    whatever the tiny model outputs. Registered as its own version, so the worker serves it as it does any
    other (it refuses a folder whose operating point differs from the registered one)."""
    import shutil

    from diagnosis.services.model_registry import model_version_register

    folder = tmp_path / "tiny-threshold-0"
    shutil.copytree(tiny_model_dir, folder)
    metadata = json.loads((folder / "metadata.json").read_text())
    (folder / "metadata.json").write_text(json.dumps({**metadata, "version": "1-threshold-0", "covid_threshold": 0.0}))
    return model_version_register(artifact_dir=folder, activate=True)


@pytest.mark.django_db
def test_a_colour_photo_reaching_the_threshold_raises_no_alert(clinician, patient, queued_inference,
                                                                always_alerting_model, bell,
                                                                django_capture_on_commit_callbacks):
    from diagnosis.services.ingest import study_create
    from tests import images

    with django_capture_on_commit_callbacks(execute=True):
        study = study_create(patient=patient, uploaded_by=clinician, data=images.colour_photo_png())
    with django_capture_on_commit_callbacks(execute=True):
        assert inference.study_run_inference(study_id=study.id).status == "completed"
    assert study.predictions.get().voided
    assert not Alert.objects.filter(study=study).exists()
    assert bell == []
    assert not AuditEvent.objects.filter(action="alert.raise").exists()


@pytest.mark.django_db
def test_prediction_reaching_the_threshold_raises_one_alert_and_queues_delivery_after_commit(
    queued_study, always_alerting_model, bell, all_channels, receiver_factory, django_capture_on_commit_callbacks
):
    receiver_factory()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        outcome = inference.study_run_inference(study_id=queued_study.id)
    assert outcome.status == "completed"
    alert = Alert.objects.get(study=queued_study)
    assert alert.prediction.study_id == queued_study.id and alert.covid_threshold == 0.0
    assert bell == []  # nothing leaves before commit
    for callback in callbacks:
        callback()
    assert sorted(call["channel"] for call in bell) == ["email", "in_app", "webhook"]
    assert {call["alert_id"] for call in bell} == {alert.id}
    assert AuditEvent.objects.filter(action="alert.raise", study_identifier=queued_study.accession_number).count() == 1


@pytest.mark.django_db
def test_running_the_prediction_task_twice_yields_one_alert(
    queued_study, always_alerting_model, bell, django_capture_on_commit_callbacks
):
    from diagnosis.tasks import run_inference

    with django_capture_on_commit_callbacks(execute=True):
        first = run_inference.apply(kwargs={"study_id": queued_study.id}).get()
        # Even a re-queued study (a lost acknowledgement) finds the prediction and the alert already there.
        queued_study.__class__.objects.filter(id=queued_study.id).update(status="queued")
        second = run_inference.apply(kwargs={"study_id": queued_study.id}).get()
    assert (first, second) == ("completed", "skipped")
    assert Alert.objects.filter(study=queued_study).count() == 1
    assert [call["channel"] for call in bell] == ["in_app"]


@pytest.mark.django_db
def test_prediction_below_the_threshold_raises_no_alert(clinician, patient, monkeypatch, bell, django_capture_on_commit_callbacks):
    model = factories.model_version(covid_threshold=0.6)
    study = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch)
    with django_capture_on_commit_callbacks(execute=True):
        prediction = factories.completed_prediction(study=study, model=model, covid=0.59)
        assert alert_service.alert_raise_for_prediction(prediction=prediction) is None
    assert not Alert.objects.exists() and bell == []


@pytest.mark.django_db
def test_newer_model_reaching_the_threshold_again_does_not_raise_a_second_alert(alert, bell, django_capture_on_commit_callbacks):
    newer = factories.model_version(covid_threshold=0.5)
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        prediction = factories.completed_prediction(study=alert.study, model=newer, covid=0.95)
        assert alert_service.alert_raise_for_prediction(prediction=prediction) is None
    assert Alert.objects.filter(study=alert.study).count() == 1
    assert len(bell) == 1  # the first alert's in-app delivery only


@pytest.mark.django_db
def test_database_refuses_a_second_alert_for_the_same_study(alert):
    with pytest.raises(IntegrityError), transaction.atomic():
        Alert.objects.create(study=alert.study, prediction=alert.prediction, covid_probability=0.9, covid_threshold=0.5)


# --- delivering --------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_each_channel_delivers_once_even_when_the_task_runs_twice(alert, all_channels, receiver_factory):
    from diagnosis.tasks import deliver_alert

    receiver = receiver_factory([200])
    for _ in range(2):
        for channel in ("in_app", "email", "webhook"):
            deliver_alert.apply(kwargs={"alert_id": alert.id, "channel": channel}).get()

    deliveries = AlertDelivery.objects.filter(alert=alert)
    assert sorted(deliveries.values_list("channel", "attempt", "outcome")) == [
        ("email", 1, "succeeded"), ("in_app", 1, "succeeded"), ("webhook", 1, "succeeded"),
    ]
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["covid-team@hospital.test", "radiology@hospital.test"]
    assert alert.study.accession_number in mail.outbox[0].subject
    assert alert.study.patient.name not in mail.outbox[0].body  # no patient identity leaves by e-mail
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request["signature_valid"]
    payload = json.loads(request["body"])
    assert payload["alert_id"] == alert.id and payload["covid_probability"] == pytest.approx(0.83)
    assert payload["warnings"] == []
    assert alert.study.patient.mrn not in request["body"].decode()
    assert request["delivery_id"] == f"alert-{alert.id}"
    assert Alert.objects.count() == 1


@pytest.mark.django_db
def test_alert_for_a_borderline_result_says_so_in_the_email_and_the_webhook(
    clinician, patient, monkeypatch, bell, all_channels, receiver_factory, django_capture_on_commit_callbacks
):
    from diagnosis.tasks import deliver_alert

    model = factories.model_version(covid_threshold=0.6, status="active")
    study = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch)
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        prediction = factories.completed_prediction(study=study, model=model, covid=0.62, warnings=["unstable"])
        alert = alert_service.alert_raise_for_prediction(prediction=prediction)
    receiver = receiver_factory([200])
    for channel in ("email", "webhook"):
        deliver_alert.apply(kwargs={"alert_id": alert.id, "channel": channel}).get()

    assert "This result is borderline" in mail.outbox[0].body
    assert json.loads(receiver.requests[0]["body"])["warnings"] == ["unstable"]


@pytest.mark.django_db
def test_receiver_rejects_a_forged_signature(alert, receiver_factory, settings):
    receiver = receiver_factory([200])
    settings.CXR_ALERT_WEBHOOK_SECRET = "not-the-receivers-secret"
    alert_service.alert_deliver(alert_id=alert.id, channel="webhook")
    assert receiver.requests and not receiver.requests[0]["signature_valid"]


@pytest.mark.django_db
def test_redelivery_after_a_worker_crash_records_the_interrupted_attempt_and_delivers_once(alert, receiver_factory):
    from diagnosis.tasks import deliver_alert

    receiver = receiver_factory([200])
    # A worker started attempt 1, then died before it could record an outcome; the broker redelivers the task twice.
    crashed = AlertDelivery.objects.create(alert=alert, channel="webhook", attempt=1)
    AlertDelivery.objects.filter(id=crashed.id).update(started_at=timezone.now() - timedelta(minutes=10))
    deliver_alert.apply(kwargs={"alert_id": alert.id, "channel": "webhook"}).get()
    deliver_alert.apply(kwargs={"alert_id": alert.id, "channel": "webhook"}).get()

    assert list(AlertDelivery.objects.filter(alert=alert, channel="webhook").order_by("attempt")
                .values_list("attempt", "outcome")) == [(1, "interrupted"), (2, "succeeded")]
    assert len(receiver.requests) == 1
    assert Alert.objects.filter(study=alert.study).count() == 1


@pytest.mark.django_db
def test_attempt_in_progress_on_another_worker_is_not_duplicated(alert, receiver_factory):
    receiver = receiver_factory([200])
    AlertDelivery.objects.create(alert=alert, channel="webhook", attempt=1)  # started just now, elsewhere
    result = alert_service.alert_deliver(alert_id=alert.id, channel="webhook")
    assert result.status == "in_progress"
    assert receiver.requests == []
    assert AlertDelivery.objects.filter(alert=alert, channel="webhook").count() == 1


@pytest.mark.django_db
def test_receiver_returning_500_is_retried_with_back_off_then_succeeds(alert, receiver_factory, monkeypatch):
    from diagnosis.tasks import deliver_alert

    receiver = receiver_factory([500, 500, 200])
    countdowns = []
    real_retry = deliver_alert.retry

    def recording_retry(*args, **kwargs):
        countdowns.append(kwargs["countdown"])
        return real_retry(*args, **kwargs)

    monkeypatch.setattr(deliver_alert, "retry", recording_retry)
    # Eager execution runs each retry at once; the countdown it was given is what a worker would wait.
    deliver_alert.apply(kwargs={"alert_id": alert.id, "channel": "webhook"})

    attempts = list(AlertDelivery.objects.filter(alert=alert, channel="webhook").order_by("attempt")
                    .values_list("attempt", "outcome", "response_status"))
    assert attempts == [(1, "failed", 500), (2, "failed", 500), (3, "succeeded", 200)]
    assert countdowns == [30, 60]
    assert len(receiver.requests) == 3 and all(request["signature_valid"] for request in receiver.requests)


@pytest.mark.django_db
def test_receiver_that_keeps_failing_stops_after_the_attempt_limit_and_administrators_see_it(
    alert, receiver_factory, settings, client, administrator, clinician
):
    from diagnosis.tasks import deliver_alert

    settings.CXR_ALERT_MAX_ATTEMPTS = 3
    receiver = receiver_factory([500])
    deliver_alert.apply(kwargs={"alert_id": alert.id, "channel": "webhook"})
    assert list(AlertDelivery.objects.filter(alert=alert, channel="webhook").values_list("outcome", flat=True)) == [
        "failed"] * 3
    assert len(receiver.requests) == 3

    client.force_login(administrator)
    response = client.get(reverse("diagnosis:alert_deliveries"), {"outcome": "failed"})
    assert response.status_code == 200
    page = response.content.decode()
    assert page.count('data-outcome="failed"') == 3
    assert "HTTPError" in page and "500" in page
    assert alert.study.patient.name not in page and alert.study.patient.mrn not in page

    client.force_login(clinician)
    assert client.get(reverse("diagnosis:alert_deliveries")).status_code == 403


@pytest.mark.django_db
def test_lost_delivery_is_rung_again_by_the_sweeper(alert, bell, settings):
    settings.CXR_ALERT_EMAIL_RECIPIENTS = ["covid-team@hospital.test"]
    Alert.objects.filter(id=alert.id).update(created_at=timezone.now() - timedelta(minutes=10))
    alert_service.alert_deliver(alert_id=alert.id, channel="in_app")
    bell.clear()
    assert alert_service.alerts_redeliver_undelivered() == 1
    assert bell == [{"alert_id": alert.id, "channel": "email"}]


# --- acknowledging and withdrawing -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_clinician_acknowledges_an_alert_and_it_leaves_the_badge(alert, client, clinician, second_clinician):
    client.force_login(clinician)
    page = client.get(reverse("diagnosis:worklist")).content.decode()
    assert 'data-testid="alert-badge">1<' in page
    listing = client.get(reverse("diagnosis:alert_list")).content.decode()
    assert 'data-alert-state="open"' in listing

    response = client.post(reverse("diagnosis:alert_acknowledge", args=[alert.id]))
    assert response.status_code == 302
    alert.refresh_from_db()
    assert alert.acknowledged_by == clinician and alert.acknowledged_at is not None
    first_acknowledgement = alert.acknowledged_at

    # A second clinician acknowledging later does not overwrite who acknowledged first.
    client.force_login(second_clinician)
    client.post(reverse("diagnosis:alert_acknowledge", args=[alert.id]))
    alert.refresh_from_db()
    assert (alert.acknowledged_by, alert.acknowledged_at) == (clinician, first_acknowledgement)
    assert AuditEvent.objects.filter(action="alert.acknowledge").count() == 1
    assert 'data-testid="alert-badge"' not in client.get(reverse("diagnosis:worklist")).content.decode()
    listing = client.get(reverse("diagnosis:alert_list")).content.decode()
    assert 'data-alert-state="acknowledged"' in listing and "dr_ana" in listing


@pytest.mark.django_db
def test_auditor_sees_alerts_but_cannot_acknowledge(alert, client, auditor):
    client.force_login(auditor)
    assert client.get(reverse("diagnosis:alert_list")).status_code == 200
    assert client.post(reverse("diagnosis:alert_acknowledge", args=[alert.id])).status_code == 403
    alert.refresh_from_db()
    assert alert.acknowledged_at is None
    assert AuditEvent.objects.filter(action="alert.acknowledge", outcome="denied").count() == 1


@pytest.mark.django_db
def test_unacknowledged_alerts_stay_visible_on_the_list(alert, client, clinician):
    client.force_login(clinician)
    for _ in range(2):
        page = client.get(reverse("diagnosis:alert_list")).content.decode()
        assert page.count('data-testid="alert-row"') == 1 and 'data-alert-state="open"' in page


@pytest.mark.django_db
def test_result_marked_wrong_stops_alerting(alert, clinician, settings, receiver_factory, client):
    receiver = receiver_factory([500])
    alert_service.alert_deliver(alert_id=alert.id, channel="webhook")
    feedback_record(author=clinician, prediction=alert.prediction, agrees=False, correct_label="normal",
                    note="Old scarring, no COVID-19.")
    alert.refresh_from_db()
    assert alert.state == "withdrawn" and alert.withdrawn_by == clinician
    assert alert_service.alert_deliver(alert_id=alert.id, channel="webhook").status == "withdrawn"
    assert len(receiver.requests) == 1
    assert AlertDelivery.objects.filter(alert=alert).count() == 1
    assert alert_service.alerts_redeliver_undelivered() == 0
    client.force_login(clinician)
    assert 'data-testid="alert-badge"' not in client.get(reverse("diagnosis:worklist")).content.decode()


@pytest.mark.django_db
def test_in_app_delivery_needs_no_configuration(alert):
    result = alert_service.alert_deliver(alert_id=alert.id, channel="in_app")
    assert result.status == DeliveryOutcome.SUCCEEDED


# --- what an alert means ------------------------------------------------------------------------------------------


def test_alert_meaning_comes_from_the_versions_validation_figures():
    from diagnosis.texts import alert_meaning

    meaning = alert_meaning({"covid_sensitivity": 0.98, "covid_specificity": 0.394})
    assert "does not confirm COVID-19" in meaning
    assert "fired on 98% of COVID-19 films and also on 61% of films without COVID-19" in meaning
    for unrecorded in (None, {}, {"covid_sensitivity": 0.98}, {"covid_sensitivity": 0.98, "covid_specificity": 1.4},
                       {"covid_sensitivity": "high", "covid_specificity": 0.5}):
        assert alert_meaning(unrecorded) is None


@pytest.mark.django_db
def test_the_alert_says_how_often_it_fires_without_covid_on_the_page_the_pdf_the_api_and_the_email(
    alert, client, clinician, all_channels
):
    from pypdf import PdfReader

    from diagnosis.tasks import deliver_alert

    expected = "fired on 93% of COVID-19 films and also on 12% of films without COVID-19"  # factories' figures
    client.force_login(clinician)
    page = client.get(reverse("diagnosis:study_detail", args=[alert.study_id])).content.decode()
    assert 'data-testid="alert-box"' in page and 'data-testid="alert-meaning"' in page and expected in page
    report = client.get(reverse("diagnosis:study_report", args=[alert.study_id])).content
    text = " ".join(" ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(report)).pages)
    assert expected in text
    study = client.get(f"/api/studies/{alert.study_id}/").json()
    assert expected in study["alert"]["meaning"]
    deliver_alert.apply(kwargs={"alert_id": alert.id, "channel": "email"}).get()
    assert expected in mail.outbox[0].body


@pytest.mark.django_db
def test_after_a_newer_model_reruns_the_study_the_alert_still_speaks_for_the_version_that_raised_it(
    alert, client, clinician, django_capture_on_commit_callbacks
):
    from pypdf import PdfReader

    newer = factories.model_version(covid_threshold=0.5)
    newer.metrics = {**newer.metrics, "covid_sensitivity": 0.5, "covid_specificity": 0.5}
    newer.save(update_fields=["metrics"])
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        factories.completed_prediction(study=alert.study, model=newer, covid=0.9)
    client.force_login(clinician)
    page = client.get(reverse("diagnosis:study_detail", args=[alert.study_id])).content.decode()
    report = client.get(reverse("diagnosis:study_report", args=[alert.study_id])).content
    text = " ".join(" ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(report)).pages)
    for shown in (page, text, client.get(f"/api/studies/{alert.study_id}/").json()["alert"]["meaning"]):
        assert "fired on 93% of COVID-19 films and also on 12% of films without COVID-19" in shown
        assert "fired on 50%" not in shown

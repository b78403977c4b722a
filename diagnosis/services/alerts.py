"""COVID-19 alerts: raise one per study, deliver it over each configured channel, acknowledge, withdraw.

An alert is raised inside the transaction that stores the prediction, so a prediction
and its alert commit together or not at all; the unique constraint on the study makes a
second raise (a duplicate task, a newer model) a no-op. Delivery runs after commit, one
Celery task per channel. Each attempt is written as a row *before* anything is sent and
finished after, so a worker that dies mid-attempt leaves a visible trace and the next
attempt gets the next number; a channel that has succeeded never sends again.
"""

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Max, Model, QuerySet
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from audit.services import audit_record
from diagnosis.models import Alert, AlertChannel, AlertDelivery, DeliveryOutcome, Prediction
from diagnosis.texts import CLINICAL_DISCLAIMER, clinical_disclaimer, result_warning_message

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-CXR-Signature"
DELIVERY_ID_HEADER = "X-CXR-Delivery"
# A "started" attempt older than this belongs to a worker that died; younger, another worker is on it.
STALE_ATTEMPT_AFTER = timedelta(minutes=5)
# Older alerts are not re-sent by the sweeper: past this, a late alert is noise (the list still shows it).
REDELIVER_WITHIN = timedelta(days=2)


@dataclass(frozen=True)
class DeliveryResult:
    status: str  # "succeeded" | "failed" | "already_delivered" | "withdrawn" | "in_progress"
    attempt: int = 0
    detail: str = ""


def alert_threshold_for(prediction: Prediction) -> float | None:
    """The active model's registered threshold; the prediction's own copy if the registry has none."""
    threshold = prediction.model_version.covid_threshold
    return threshold if threshold is not None else prediction.covid_threshold


def alert_raise_for_prediction(*, prediction: Prediction) -> Alert | None:
    """Raise the study's alert if this prediction reaches the threshold. Call inside the prediction's transaction."""
    threshold = alert_threshold_for(prediction)
    if threshold is None or prediction.covid_probability < threshold:
        return None
    if prediction.voided:
        # The film is probably not a radiograph and the page says to ignore its result: paging the care team
        # about it would be noise. The prediction and its warning stay on the study for the clinician.
        return None
    # get_or_create runs its insert in a savepoint, so losing a race does not break the caller's transaction.
    alert, created = Alert.objects.get_or_create(
        study_id=prediction.study_id,
        defaults={
            "prediction": prediction,
            "covid_probability": prediction.covid_probability,
            "covid_threshold": threshold,
        },
    )
    if not created:
        # The study already has its alert (a duplicate run, or an earlier model version): one alert per study.
        return None
    audit_record(
        action="alert.raise",
        username="worker",
        target=alert,
        study=prediction.study,
        details={"covid_probability": alert.covid_probability, "covid_threshold": threshold,
                 "model_version": str(prediction.model_version)},
    )
    transaction.on_commit(partial(alert_enqueue_delivery, alert_id=alert.id))
    return alert


def alert_channels_enabled() -> list[str]:
    channels = [AlertChannel.IN_APP.value]
    if settings.CXR_ALERT_EMAIL_RECIPIENTS:
        channels.append(AlertChannel.EMAIL.value)
    if settings.CXR_ALERT_WEBHOOK_URL:
        channels.append(AlertChannel.WEBHOOK.value)
    return channels


def alert_enqueue_delivery(*, alert_id: int) -> None:
    """Ring the bell once per channel. Call after commit."""
    from diagnosis.tasks import deliver_alert

    for channel in alert_channels_enabled():
        deliver_alert.delay(alert_id=alert_id, channel=channel)


def alerts_redeliver_undelivered() -> int:
    """Ring the bell again for open alerts with a channel that neither succeeded nor used up its attempts."""
    from diagnosis.tasks import deliver_alert

    rung = 0
    cutoff = timezone.now() - STALE_ATTEMPT_AFTER
    recent = timezone.now() - REDELIVER_WITHIN
    alerts = Alert.objects.filter(withdrawn_at__isnull=True, created_at__lt=cutoff, created_at__gte=recent)
    for alert in alerts.prefetch_related("deliveries"):
        for channel in alert_channels_enabled():
            attempts = [delivery for delivery in alert.deliveries.all() if delivery.channel == channel]
            if any(delivery.outcome == DeliveryOutcome.SUCCEEDED for delivery in attempts):
                continue
            if len(attempts) >= settings.CXR_ALERT_MAX_ATTEMPTS:
                continue
            if any(delivery.outcome == DeliveryOutcome.STARTED and delivery.started_at > cutoff for delivery in attempts):
                continue
            deliver_alert.delay(alert_id=alert.id, channel=channel)
            rung += 1
    return rung


def alert_retry_delay(attempt: int) -> timedelta:
    return timedelta(seconds=min(3600, settings.CXR_ALERT_RETRY_BASE_SECONDS * 2 ** max(0, attempt - 1)))


def _start_attempt(alert: Alert, channel: str) -> AlertDelivery | DeliveryResult:
    return delivery_attempt_start(
        attempts=AlertDelivery.objects.filter(alert=alert, channel=channel),
        create=lambda number: AlertDelivery.objects.create(alert=alert, channel=channel, attempt=number),
    )


def delivery_attempt_start(*, attempts: QuerySet, create: Callable[[int], Model]) -> Model | DeliveryResult:
    """Write the next attempt row of one delivery (alerts and results both), or say why there is none to make.

    `attempts` are the rows of this delivery so far; `create(number)` inserts the next one.
    """
    if attempts.filter(outcome=DeliveryOutcome.SUCCEEDED).exists():
        return DeliveryResult("already_delivered")
    now = timezone.now()
    if attempts.filter(outcome=DeliveryOutcome.STARTED, started_at__gte=now - STALE_ATTEMPT_AFTER).exists():
        return DeliveryResult("in_progress", attempts.aggregate(last=Max("attempt"))["last"] or 0)
    attempts.filter(outcome=DeliveryOutcome.STARTED).update(
        outcome=DeliveryOutcome.INTERRUPTED, finished_at=now,
        detail="The worker stopped before recording an outcome.",
    )
    number = (attempts.aggregate(last=Max("attempt"))["last"] or 0) + 1
    try:
        with transaction.atomic():
            return create(number)
    except IntegrityError:
        # Another delivery of this task took the same attempt number first.
        return DeliveryResult("in_progress", number)


def alert_deliver(*, alert_id: int, channel: str) -> DeliveryResult:
    """Make one delivery attempt over one channel, recording it before and after."""
    if channel not in AlertChannel.values:
        raise ValueError(f"unknown alert channel {channel!r}")
    alert = Alert.objects.select_related("study", "prediction__model_version").get(id=alert_id)
    if alert.withdrawn_at is not None:
        # A clinician marked the result as wrong: it does not keep alerting.
        return DeliveryResult("withdrawn")
    started = _start_attempt(alert, channel)
    if isinstance(started, DeliveryResult):
        return started
    delivery = started
    response_status = None
    try:
        if channel == AlertChannel.IN_APP:
            # The alert row is the in-app notification: the badge and list read it directly.
            detail = "Shown in the portal's alert list."
        elif channel == AlertChannel.EMAIL:
            detail = _send_email(alert)
        else:
            response_status, detail = _send_webhook(alert, delivery)
        outcome = DeliveryOutcome.SUCCEEDED
    except Exception as error:  # noqa: BLE001 - every failure is recorded on the attempt, then retried
        logger.warning("Alert %s delivery over %s failed (attempt %s): %s", alert.id, channel, delivery.attempt, error)
        outcome = DeliveryOutcome.FAILED
        detail = f"{type(error).__name__}: {error}"[:2000]
        response_status = getattr(error, "code", None) if isinstance(error, urllib.error.HTTPError) else response_status
    AlertDelivery.objects.filter(id=delivery.id).update(
        outcome=outcome, detail=detail, response_status=response_status, finished_at=timezone.now()
    )
    return DeliveryResult(outcome.value, delivery.attempt, detail)


def alert_payload(alert: Alert) -> dict:
    """What leaves the portal: identifiers and numbers, never the patient's name or MRN."""
    return {
        "event": "covid19.alert",
        "alert_id": alert.id,
        "study_id": alert.study_id,
        "accession_number": alert.study.accession_number,
        "covid_probability": round(alert.covid_probability, 4),
        "covid_threshold": round(alert.covid_threshold, 4),
        "model_version": str(alert.prediction.model_version),
        # Codes of what makes the result less reliable ("unstable", "unfamiliar", "lungs_not_found"): a receiver may
        # triage on them.
        "warnings": list(alert.prediction.warnings or []),
        "raised_at": alert.created_at.isoformat(),
        "url": settings.CXR_PUBLIC_BASE_URL.rstrip("/") + reverse("diagnosis:study_detail", args=[alert.study_id]),
        "disclaimer": CLINICAL_DISCLAIMER,
    }


def webhook_signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def webhook_signature_valid(*, body: bytes, secret: str, header: str) -> bool:
    return hmac.compare_digest(webhook_signature(body, secret), header or "")


def _send_webhook(alert: Alert, delivery: AlertDelivery) -> tuple[int, str]:
    if not settings.CXR_ALERT_WEBHOOK_SECRET:
        raise ValidationError("CXR_ALERT_WEBHOOK_SECRET is not set; unsigned webhooks are not sent.")
    body = json.dumps(alert_payload(alert), sort_keys=True, separators=(",", ":")).encode("utf-8")
    request = urllib.request.Request(
        settings.CXR_ALERT_WEBHOOK_URL,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            SIGNATURE_HEADER: webhook_signature(body, settings.CXR_ALERT_WEBHOOK_SECRET),
            # The same alert always carries the same id, so a receiver can drop a repeat.
            DELIVERY_ID_HEADER: f"alert-{alert.id}",
            "User-Agent": "CXR-Portal-Alerts/1",
        },
    )
    with urllib.request.urlopen(request, timeout=settings.CXR_ALERT_WEBHOOK_TIMEOUT_SECONDS) as response:  # noqa: S310
        return response.status, f"HTTP {response.status}"


def _send_email(alert: Alert) -> str:
    payload = alert_payload(alert)
    # Workers have no reader: e-mails go out in the portal's default language.
    with translation.override(settings.LANGUAGE_CODE):
        subject = _("[CXR Portal] COVID-19 alert for study %(accession)s") % {"accession": payload["accession_number"]}
        body = "\n\n".join([
            _("A chest X-ray analysed by %(model)s has a calibrated COVID-19 probability of %(probability).2f, "
              "at or above the alert threshold of %(threshold).2f.") % {
                "model": payload["model_version"], "probability": payload["covid_probability"],
                "threshold": payload["covid_threshold"]},
            *filter(None, [alert.meaning()]),
            *[result_warning_message(code) for code in payload["warnings"]],
            _("Review and acknowledge it: %(url)s") % {"url": payload["url"]},
            clinical_disclaimer(),
        ]) + "\n"
    recipients = list(settings.CXR_ALERT_EMAIL_RECIPIENTS)
    send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients, fail_silently=False)
    return f"Sent to {len(recipients)} recipient(s)."


def alert_acknowledge(*, alert: Alert, user) -> Alert:
    """Record who acknowledged the alert and when. Acknowledging twice keeps the first acknowledgement."""
    with transaction.atomic():
        now = timezone.now()
        updated = Alert.objects.filter(id=alert.id, acknowledged_at__isnull=True).update(
            acknowledged_by=user, acknowledged_at=now
        )
        if updated:
            audit_record(actor=user, action="alert.acknowledge", target=alert, study=alert.study,
                         details={"alert_id": alert.id})
    alert.refresh_from_db()
    return alert


def alert_withdraw_for_prediction(*, prediction: Prediction, user, reason: str) -> bool:
    """A clinician marked the alerting prediction as wrong: stop alerting. Call inside the feedback transaction."""
    updated = Alert.objects.filter(prediction=prediction, withdrawn_at__isnull=True).update(
        withdrawn_at=timezone.now(), withdrawn_by=user
    )
    if updated:
        alert = Alert.objects.get(prediction=prediction)
        audit_record(actor=user, action="alert.withdraw", target=alert, study=prediction.study,
                     details={"reason": reason})
    return bool(updated)

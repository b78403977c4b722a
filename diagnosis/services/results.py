"""Send each result to the hospital's systems: the PACS (DICOM SR, optional Secondary Capture) and the EHR (FHIR).

The same delivery discipline as alerts (diagnosis.services.alerts): queued after the prediction commits,
one Celery task per destination, each attempt written as a row before anything is sent and finished after,
retried with back-off up to CXR_RESULTS_MAX_ATTEMPTS, re-rung by a sweeper, and never sent again once a
destination has it. A clinician's correction makes a new revision, sent to the EHR as an amended report.
"""

import json
import logging
import urllib.error
import urllib.request
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from diagnosis.models import (
    DeliveryOutcome,
    Feedback,
    FeedbackRevision,
    Prediction,
    ResultDelivery,
    ResultDestination,
)
from ml.serving.labels import DISPLAY_NAMES

from .alerts import STALE_ATTEMPT_AFTER, DeliveryResult, delivery_attempt_start
from .dicom_results import PacsDeliveryError, pacs_store, prediction_secondary_capture, prediction_structured_report
from .fhir import study_fhir_bundle

logger = logging.getLogger(__name__)

FHIR_MEDIA_TYPE = "application/fhir+json"
# Results older than this are not re-sent by the sweeper.
REDELIVER_WITHIN = timedelta(days=2)


def result_destinations_for(prediction: Prediction) -> list[str]:
    """Where this prediction's result goes: the PACS only for studies that came from it (their header is kept)."""
    destinations = []
    if settings.CXR_RESULTS_PACS_HOST and prediction.study.dicom_header:
        destinations.append(ResultDestination.PACS_REPORT.value)
        if settings.CXR_RESULTS_PACS_SECONDARY_CAPTURE and prediction.heatmap_sha256:
            destinations.append(ResultDestination.PACS_IMAGE.value)
    if settings.CXR_RESULTS_FHIR_URL:
        destinations.append(ResultDestination.EHR.value)
    return destinations


def results_enqueue_for_prediction(*, prediction: Prediction) -> None:
    """Call inside the prediction's transaction: the deliveries are queued after it commits."""
    for destination in result_destinations_for(prediction):
        transaction.on_commit(partial(_ring, prediction_id=prediction.id, destination=destination, revision=1))


def results_amend_for_feedback(*, prediction: Prediction) -> None:
    """A clinician corrected the result: the EHR gets the report again as amended. Call inside the feedback transaction."""
    if not settings.CXR_RESULTS_FHIR_URL:
        return
    # Each correction recorded (a disagreeing feedback revision, this one included) is one revision of the report.
    revision = 1 + FeedbackRevision.objects.filter(feedback__prediction=prediction, agrees=False).count()
    transaction.on_commit(partial(_ring, prediction_id=prediction.id, destination=ResultDestination.EHR.value,
                                  revision=revision))


def _ring(*, prediction_id: int, destination: str, revision: int) -> None:
    from diagnosis.tasks import deliver_result

    try:
        deliver_result.delay(prediction_id=prediction_id, destination=destination, revision=revision)
    except Exception:  # noqa: BLE001 - the broker is down: the sweeper rings again, the prediction stands
        logger.exception("Could not queue the %s delivery of prediction %s", destination, prediction_id)


def results_redeliver_undelivered() -> int:
    """Ring again for each recent result revision that no destination has yet, unless its attempts are used up.

    Covers the bell lost before any attempt (a prediction with no row for a destination) as well as failed and
    interrupted attempts.
    """
    from diagnosis.tasks import deliver_result

    now = timezone.now()
    wanted: set[tuple[int, str, int]] = set()
    recent = Prediction.objects.filter(created_at__gte=now - REDELIVER_WITHIN, created_at__lt=now - STALE_ATTEMPT_AFTER)
    for prediction in recent.select_related("study"):
        wanted.update((prediction.id, destination, 1) for destination in result_destinations_for(prediction))
    wanted.update(ResultDelivery.objects.filter(started_at__gte=now - REDELIVER_WITHIN)
                  .values_list("prediction_id", "destination", "revision").distinct())
    attempts_by_delivery: dict[tuple[int, str, int], list[ResultDelivery]] = {}
    for attempt in ResultDelivery.objects.filter(prediction_id__in={key[0] for key in wanted}):
        attempts_by_delivery.setdefault((attempt.prediction_id, attempt.destination, attempt.revision), []).append(attempt)
    rung = 0
    for prediction_id, destination, revision in sorted(wanted):
        attempts = attempts_by_delivery.get((prediction_id, destination, revision), [])
        if any(attempt.outcome == DeliveryOutcome.SUCCEEDED for attempt in attempts):
            continue
        if len(attempts) >= settings.CXR_RESULTS_MAX_ATTEMPTS:
            continue
        if any(attempt.outcome == DeliveryOutcome.STARTED and attempt.started_at > now - STALE_ATTEMPT_AFTER
               for attempt in attempts):
            continue
        deliver_result.delay(prediction_id=prediction_id, destination=destination, revision=revision)
        rung += 1
    return rung


def result_retry_delay(attempt: int) -> timedelta:
    return timedelta(seconds=min(3600, settings.CXR_RESULTS_RETRY_BASE_SECONDS * 2 ** max(0, attempt - 1)))


def result_deliver(*, prediction_id: int, destination: str, revision: int = 1) -> DeliveryResult:
    """Make one attempt to send one revision of a result to one destination, recording it before and after."""
    if destination not in ResultDestination.values:
        raise ValueError(f"unknown result destination {destination!r}")
    prediction = Prediction.objects.select_related("study__patient", "model_version").get(id=prediction_id)
    started = delivery_attempt_start(
        attempts=ResultDelivery.objects.filter(prediction=prediction, destination=destination, revision=revision),
        create=lambda number: ResultDelivery.objects.create(prediction=prediction, destination=destination,
                                                            revision=revision, attempt=number),
    )
    if isinstance(started, DeliveryResult):
        return started
    delivery = started
    response_status = None
    try:
        if destination == ResultDestination.EHR:
            response_status, detail = _send_fhir(prediction, revision=revision)
        else:
            dataset = (prediction_structured_report(prediction) if destination == ResultDestination.PACS_REPORT
                       else prediction_secondary_capture(prediction))
            response_status = pacs_store(dataset)
            detail = (f"Stored in {settings.CXR_RESULTS_PACS_AE_TITLE} as {dataset.SOPInstanceUID} "
                      f"(status 0x{response_status:04X}).")
        outcome = DeliveryOutcome.SUCCEEDED
    except Exception as error:  # noqa: BLE001 - every failure is recorded on the attempt, then retried
        logger.warning("Result of prediction %s to %s failed (attempt %s): %s", prediction.id, destination,
                       delivery.attempt, error)
        outcome = DeliveryOutcome.FAILED
        detail = f"{type(error).__name__}: {error}"[:2000]
        if isinstance(error, urllib.error.HTTPError):
            response_status = error.code
        elif isinstance(error, PacsDeliveryError):
            response_status = error.status if error.status is not None and error.status >= 0 else None
    with transaction.atomic():
        ResultDelivery.objects.filter(id=delivery.id).update(
            outcome=outcome, detail=detail, response_status=response_status, finished_at=timezone.now()
        )
        if outcome == DeliveryOutcome.SUCCEEDED:
            # The result (with the patient's identifiers) left the portal: a disclosure the audit trail records.
            audit_record(action="result.deliver", username="worker", target=prediction, study=prediction.study,
                         details={"destination": destination, "revision": revision, "attempt": delivery.attempt,
                                  "detail": detail})
    return DeliveryResult(outcome.value, delivery.attempt, detail)


def result_fhir_transaction(prediction: Prediction, *, revision: int) -> dict:
    """The study's FHIR Bundle as a transaction that creates or updates each resource by its id.

    PUT by id makes a resend (a retry, an amendment) update the same resources instead of adding copies.
    """
    bundle = study_fhir_bundle(study=prediction.study)
    corrections = list(Feedback.objects.filter(prediction=prediction, agrees=False).order_by("-updated_at"))
    entries = []
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "DiagnosticReport" and revision > 1 and corrections:
            resource["status"] = "amended"
            resource["conclusion"] = (
                f"Amended: a clinician recorded the finding as {DISPLAY_NAMES.get(corrections[0].correct_label, corrections[0].correct_label)}. "
                + resource.get("conclusion", "")
            )
        entries.append({
            "fullUrl": entry["fullUrl"],
            "resource": resource,
            "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
        })
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _send_fhir(prediction: Prediction, *, revision: int) -> tuple[int, str]:
    body = json.dumps(result_fhir_transaction(prediction, revision=revision)).encode("utf-8")
    headers = {"Content-Type": FHIR_MEDIA_TYPE, "Accept": FHIR_MEDIA_TYPE, "User-Agent": "CXR-Portal-Results/1"}
    if settings.CXR_RESULTS_FHIR_AUTHORIZATION:
        headers["Authorization"] = settings.CXR_RESULTS_FHIR_AUTHORIZATION
    request = urllib.request.Request(settings.CXR_RESULTS_FHIR_URL, data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=settings.CXR_RESULTS_FHIR_TIMEOUT_SECONDS) as response:  # noqa: S310
        return response.status, f"HTTP {response.status}"

"""Celery tasks: thin doors into the services. Primitive ids in, never model instances."""

import logging

from celery import shared_task
from django.conf import settings

from diagnosis.models import Study
from diagnosis.services.alerts import alert_deliver, alert_retry_delay, alerts_redeliver_undelivered
from diagnosis.services.inference import DATABASE_ERRORS, retry_delay, studies_requeue_stale, study_run_inference
from diagnosis.services.monitoring import monitor_active_model as run_site_monitor
from diagnosis.services.results import result_deliver, result_retry_delay, results_redeliver_undelivered

logger = logging.getLogger(__name__)


@shared_task(
    name="diagnosis.run_inference",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=300,
    soft_time_limit=240,
    max_retries=None,  # bounded by Study.attempt_count in the database, not by the broker
)
def run_inference(self, *, study_id: int, resume_claim: str = "") -> str:
    try:
        outcome = study_run_inference(study_id=study_id, resume_claim=resume_claim)
    except DATABASE_ERRORS as error:
        # PostgreSQL is down before the study was claimed: ask again once it may be back.
        logger.warning("Database unavailable for study %s: %s", study_id, error)
        raise self.retry(countdown=_database_backoff(self.request.retries),
                         kwargs={"study_id": study_id, "resume_claim": resume_claim}) from None
    if outcome.status == "database_unavailable":
        raise self.retry(countdown=_database_backoff(self.request.retries),
                         kwargs={"study_id": study_id, "resume_claim": outcome.claim})
    if outcome.status == "held":
        # A pool process died and Celery redelivered at once: look again when the dead worker's lease lapses.
        raise self.retry(countdown=outcome.retry_after_seconds, kwargs={"study_id": study_id})
    if outcome.status == "retry":
        attempts = Study.objects.values_list("attempt_count", flat=True).get(id=study_id)
        raise self.retry(countdown=retry_delay(attempts).total_seconds(), kwargs={"study_id": study_id})
    return outcome.status


def _database_backoff(retries: int) -> float:
    return float(min(60, 2 * 2 ** min(retries, 5)))


@shared_task(name="diagnosis.requeue_stale_studies", time_limit=120, soft_time_limit=100)
def requeue_stale_studies() -> int:
    return studies_requeue_stale()


@shared_task(
    name="diagnosis.deliver_alert",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=60,
    soft_time_limit=45,
    max_retries=None,  # bounded by the attempts recorded in the database (CXR_ALERT_MAX_ATTEMPTS)
)
def deliver_alert(self, *, alert_id: int, channel: str) -> str:
    result = alert_deliver(alert_id=alert_id, channel=channel)
    if result.status in ("failed", "in_progress") and result.attempt < settings.CXR_ALERT_MAX_ATTEMPTS:
        raise self.retry(
            countdown=alert_retry_delay(result.attempt).total_seconds(),
            kwargs={"alert_id": alert_id, "channel": channel},
        )
    return result.status


@shared_task(name="diagnosis.redeliver_alerts", time_limit=120, soft_time_limit=100)
def redeliver_alerts() -> int:
    return alerts_redeliver_undelivered()


@shared_task(name="diagnosis.monitor_active_model", time_limit=300, soft_time_limit=240)
def monitor_active_model() -> str:
    return run_site_monitor()


# Site adaptation: slow and rare, on the "training" queue (CELERY_TASK_ROUTES), one job at a time per worker.
# Not acks_late: a job killed half-way leaves its row "running" for an administrator to see, instead of
# being redelivered into a second fit of the same candidate.
@shared_task(name="diagnosis.import_labelled_studies", time_limit=3 * 3600, soft_time_limit=3 * 3600 - 60)
def import_labelled_studies(*, label_import_id: int) -> str:
    from diagnosis.services.site_films import label_import_run

    return label_import_run(label_import_id=label_import_id).status


@shared_task(name="diagnosis.adapt_model", time_limit=3 * 3600, soft_time_limit=3 * 3600 - 60)
def adapt_model(*, adaptation_run_id: int) -> str:
    from diagnosis.services.adaptation import adaptation_run

    return adaptation_run(adaptation_run_id=adaptation_run_id).status


@shared_task(
    name="diagnosis.deliver_result",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=120,
    soft_time_limit=100,
    max_retries=None,  # bounded by the attempts recorded in the database (CXR_RESULTS_MAX_ATTEMPTS)
)
def deliver_result(self, *, prediction_id: int, destination: str, revision: int = 1) -> str:
    result = result_deliver(prediction_id=prediction_id, destination=destination, revision=revision)
    if result.status in ("failed", "in_progress") and result.attempt < settings.CXR_RESULTS_MAX_ATTEMPTS:
        raise self.retry(
            countdown=result_retry_delay(result.attempt).total_seconds(),
            kwargs={"prediction_id": prediction_id, "destination": destination, "revision": revision},
        )
    return result.status


@shared_task(name="diagnosis.redeliver_results", time_limit=120, soft_time_limit=100)
def redeliver_results() -> int:
    return results_redeliver_undelivered()

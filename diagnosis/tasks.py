"""Celery tasks: thin doors into the services. Primitive ids in, never model instances."""

from celery import shared_task

from diagnosis.models import Study
from diagnosis.services.inference import retry_delay, studies_requeue_stale, study_run_inference


@shared_task(
    name="diagnosis.run_inference",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=300,
    soft_time_limit=240,
    max_retries=None,  # bounded by Study.attempt_count in the database, not by the broker
)
def run_inference(self, *, study_id: int) -> str:
    outcome = study_run_inference(study_id=study_id)
    if outcome.status == "retry":
        attempts = Study.objects.values_list("attempt_count", flat=True).get(id=study_id)
        raise self.retry(countdown=retry_delay(attempts).total_seconds(), kwargs={"study_id": study_id})
    return outcome.status


@shared_task(name="diagnosis.requeue_stale_studies", time_limit=120, soft_time_limit=100)
def requeue_stale_studies() -> int:
    return studies_requeue_stale()

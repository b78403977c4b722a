"""What an operator needs to know: is the portal ready, how fast is it, what waits, what failed.

Health checks for /health/ready, worker heartbeats, the figures behind /metrics and the operations page.
Everything here is aggregate: no patient data.
"""

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Count, Min
from django.utils import timezone

from diagnosis.models import ModelVersion, ModelVersionStatus, Prediction, Study, StudyStatus, WorkerHeartbeat

logger = logging.getLogger(__name__)

WAITING_STATUSES = (StudyStatus.RECEIVED, StudyStatus.QUEUED, StudyStatus.PROCESSING)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


def check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return Check("database", True)
    except Exception as error:  # noqa: BLE001 - a health check reports every failure, never raises
        return Check("database", False, f"{type(error).__name__}: {error}")


def check_broker() -> Check:
    from cxr_portal.celery import app

    try:
        with app.connection_for_read() as broker:
            broker.ensure_connection(max_retries=1, timeout=settings.HEALTH_BROKER_TIMEOUT_SECONDS)
        return Check("broker", True)
    except Exception as error:  # noqa: BLE001
        return Check("broker", False, f"{type(error).__name__}: {error}")


def workers_alive(*, now: datetime | None = None):
    cutoff = (now or timezone.now()) - settings.WORKER_HEARTBEAT_STALE_AFTER
    return WorkerHeartbeat.objects.filter(last_seen_at__gte=cutoff).order_by("hostname")


def check_workers() -> Check:
    try:
        alive = list(workers_alive())
    except Exception as error:  # noqa: BLE001
        return Check("inference_worker", False, f"{type(error).__name__}: {error}")
    inference = [worker.hostname for worker in alive if "inference" in worker.queues.split(",")]
    if not inference:
        return Check("inference_worker", False, "No inference worker has sent a heartbeat recently.")
    return Check("inference_worker", True, ", ".join(inference))


def check_active_model() -> Check:
    try:
        active = ModelVersion.objects.filter(status=ModelVersionStatus.ACTIVE).first()
    except Exception as error:  # noqa: BLE001
        return Check("active_model", False, f"{type(error).__name__}: {error}")
    if active is None:
        return Check("active_model", False, "No model version is active: studies wait.")
    return Check("active_model", True, str(active))


def readiness_checks() -> list[Check]:
    database = check_database()
    if not database.ok:  # the other checks read the database too: say what is wrong, once
        return [database, Check("broker", check_broker().ok), Check("inference_worker", False, "unknown"),
                Check("active_model", False, "unknown")]
    return [database, check_broker(), check_workers(), check_active_model()]


def worker_heartbeat_record(*, hostname: str, queues: str, concurrency: int, started_at: datetime) -> None:
    """Called by a worker's main process every WORKER_HEARTBEAT_INTERVAL (cxr_portal.celery)."""
    WorkerHeartbeat.objects.update_or_create(
        hostname=hostname,
        defaults={"queues": queues, "concurrency": concurrency, "pid": os.getpid(), "started_at": started_at,
                  "last_seen_at": timezone.now()},
    )


@dataclass
class OperationsSnapshot:
    """The figures of the operations page and /metrics, all from PostgreSQL (the source of truth)."""

    studies_by_status: dict[str, int]
    oldest_waiting_seconds: float
    predictions_by_label: dict[str, int]
    failed_last_hour: int
    completed_last_hour: int
    # Per minute over the window, oldest first: (minute start, completed, failed, p50 s, p95 s upload -> result)
    per_minute: list[tuple[datetime, int, int, float | None, float | None]] = field(default_factory=list)
    inference_ms_p50: float | None = None
    inference_ms_p95: float | None = None
    result_seconds_p50: float | None = None
    result_seconds_p95: float | None = None
    workers: list[WorkerHeartbeat] = field(default_factory=list)


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def operations_snapshot(*, minutes: int = 60) -> OperationsSnapshot:
    now = timezone.now()
    since = now - timedelta(minutes=minutes)
    by_status = dict(Study.objects.values_list("status").annotate(count=Count("id")).order_by())
    oldest = Study.objects.filter(status__in=WAITING_STATUSES).aggregate(oldest=Min("created_at"))["oldest"]
    by_label = dict(Prediction.objects.values_list("predicted_label").annotate(count=Count("id")).order_by())
    finished = list(
        Study.objects.filter(completed_at__gte=since)
        .values_list("status", "created_at", "completed_at")
    )
    recent_inference_ms = list(
        Prediction.objects.filter(created_at__gte=since).values_list("inference_ms", flat=True)[:5000]
    )
    buckets: dict[datetime, list] = {}
    for minute in range(minutes):
        start = (since + timedelta(minutes=minute)).replace(second=0, microsecond=0)
        buckets[start] = [0, 0, []]
    waits = []
    for status, created_at, completed_at in finished:
        bucket = buckets.setdefault(completed_at.replace(second=0, microsecond=0), [0, 0, []])
        if status == StudyStatus.COMPLETED:
            bucket[0] += 1
            wait = (completed_at - created_at).total_seconds()
            bucket[2].append(wait)
            waits.append(wait)
        elif status == StudyStatus.FAILED:
            bucket[1] += 1
    per_minute = [
        (start, completed, failed, _percentile(latencies, 0.5), _percentile(latencies, 0.95))
        for start, (completed, failed, latencies) in sorted(buckets.items())
    ][-minutes:]
    return OperationsSnapshot(
        studies_by_status={status: by_status.get(status, 0) for status in StudyStatus.values},
        oldest_waiting_seconds=(now - oldest).total_seconds() if oldest else 0.0,
        predictions_by_label=by_label,
        failed_last_hour=sum(row[2] for row in per_minute),
        completed_last_hour=sum(row[1] for row in per_minute),
        per_minute=per_minute,
        inference_ms_p50=_percentile(recent_inference_ms, 0.5),
        inference_ms_p95=_percentile(recent_inference_ms, 0.95),
        result_seconds_p50=_percentile(waits, 0.5),
        result_seconds_p95=_percentile(waits, 0.95),
        workers=list(WorkerHeartbeat.objects.order_by("hostname")),
    )


def broker_queue_lengths() -> dict[str, int]:
    """Messages waiting in each queue; empty when the broker does not answer (readiness says so)."""
    from cxr_portal.celery import app

    lengths = {}
    try:
        with app.connection_for_read() as broker:
            broker.ensure_connection(max_retries=1, timeout=settings.HEALTH_BROKER_TIMEOUT_SECONDS)
            for queue in settings.CELERY_OBSERVED_QUEUES:
                try:
                    lengths[queue] = broker.default_channel.queue_declare(queue=queue, passive=True).message_count
                except broker.channel_errors:
                    lengths[queue] = 0  # Redis drops an empty queue's key: "no such queue" means nothing waits
    except Exception:  # noqa: BLE001 - metrics report what they can
        logger.warning("Broker queue lengths unavailable", exc_info=True)
    return lengths

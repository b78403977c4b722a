"""The Celery application. Workers start with ``celery -A cxr_portal worker``."""

import logging
import os
import threading

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    before_task_publish,
    task_postrun,
    task_prerun,
    worker_init,
    worker_ready,
    worker_shutdown,
)

from . import kombu_patch  # noqa: F401 - a worker must survive Redis dropping while it holds a task
from . import pool_start_patch  # noqa: F401 - and a pool process killed while it starts
from . import observability

logger = logging.getLogger(__name__)
_heartbeat_stop = threading.Event()

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cxr_portal.settings.local")

app = Celery("cxr_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def refuse_a_wrong_storage_key(**kwargs):
    """A worker with the wrong key would fail every film it takes; production stops it at start instead."""
    from diagnosis.services.storage import storage_key_verify_at_start

    storage_key_verify_at_start()


@task_prerun.connect
def database_connections_checked(task=None, **kwargs):
    """Before each task, what Django does before each request: drop connections that are broken (PostgreSQL
    restarted) or older than CONN_MAX_AGE, and health-check the rest on first use (CONN_HEALTH_CHECKS).
    Not for a task run in the caller's process (eager): the caller's connection is the caller's business."""
    from django.db import close_old_connections

    if task is not None and not getattr(task.request, "is_eager", False):
        close_old_connections()


# The request that queued a task names the task's log lines (X-Request-ID -> message header -> log records).
before_task_publish.connect(observability.task_publish_add_request_id, weak=False)
task_prerun.connect(observability.task_prerun_restore_request_id, weak=False)
task_postrun.connect(observability.task_postrun_forget_request_id, weak=False)
after_setup_logger.connect(observability.celery_logging_add_request_id, weak=False)
after_setup_task_logger.connect(observability.celery_logging_add_request_id, weak=False)


@worker_ready.connect
def start_heartbeat(sender=None, **kwargs):
    """Write this worker's heartbeat to PostgreSQL from its main process every WORKER_HEARTBEAT_INTERVAL.

    /health/ready and the operations page read it. The main process is the one that consumes: if it hangs or
    dies, the heartbeat stops, whatever its pool processes do.
    """
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from diagnosis.services.operations import worker_heartbeat_record

    hostname = sender.hostname
    queues = ",".join(sorted(sender.app.amqp.queues.consume_from or sender.app.amqp.queues))
    concurrency = getattr(sender.controller, "concurrency", 0) or 0
    started_at = timezone.now()
    interval = settings.WORKER_HEARTBEAT_INTERVAL.total_seconds()

    def beat():
        while not _heartbeat_stop.is_set():
            try:
                worker_heartbeat_record(hostname=hostname, queues=queues, concurrency=concurrency,
                                        started_at=started_at)
            except Exception:  # noqa: BLE001 - PostgreSQL down: readiness says so; try again next beat
                logger.warning("Worker heartbeat not written", exc_info=True)
                connection.close()
            _heartbeat_stop.wait(interval)

    threading.Thread(target=beat, name="cxr-heartbeat", daemon=True).start()


@worker_shutdown.connect
def stop_heartbeat(**kwargs):
    _heartbeat_stop.set()

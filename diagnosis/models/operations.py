from django.db import models


class WorkerHeartbeat(models.Model):
    """A Celery worker's last sign of life, written every few seconds by its main process (cxr_portal.celery).

    Readiness (/health/ready) and the operations page count a worker as alive while its heartbeat is recent.
    """

    hostname = models.CharField(max_length=200, unique=True)
    queues = models.CharField(max_length=200, blank=True)
    concurrency = models.PositiveIntegerField(default=0)
    pid = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.hostname} ({self.queues})"

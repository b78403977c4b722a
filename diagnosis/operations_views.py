"""The operations page for administrators: throughput, latency, queue depth, failures and worker health.

Aggregates only; no patient data.
"""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.access import require_capability
from accounts.roles import Capability
from audit.services import audit_record

from .charts import operations_charts_svg
from .services.operations import broker_queue_lengths, operations_snapshot, readiness_checks


@login_required
@require_GET
def operations_dashboard(request):
    require_capability(user=request.user, capability=Capability.MANAGE_USERS, action="operations.view")
    snapshot = operations_snapshot(minutes=60)
    stale_before = timezone.now() - settings.WORKER_HEARTBEAT_STALE_AFTER
    audit_record(actor=request.user, action="operations.view")
    return render(request, "diagnosis/operations.html", {
        "snapshot": snapshot,
        "checks": readiness_checks(),
        "queues": broker_queue_lengths(),
        "workers": [(worker, worker.last_seen_at >= stale_before) for worker in snapshot.workers],
        "chart": operations_charts_svg(snapshot.per_minute),
    })

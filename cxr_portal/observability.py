"""Request ids in every log line (web and the tasks a request queued), /health/live, /health/ready and /metrics."""

import contextvars
import ipaddress
import json
import logging
import re
import secrets
import time

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is kept only if it looks like one; anything else could forge log lines.
_ACCEPTABLE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

HTTP_LATENCY = Histogram(
    "cxr_http_request_duration_seconds", "Time to answer an HTTP request", ["method", "route", "status"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30),
)


class RequestIdLogFilter(logging.Filter):
    """Gives every log record the id of the request (or of the request that queued the task) it belongs to."""

    def filter(self, record):
        record.request_id = request_id_var.get()
        return True


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, for log collectors (DJANGO_LOG_FORMAT=json)."""

    def format(self, record):
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", request_id_var.get()),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class RequestIdMiddleware:
    """First in MIDDLEWARE: names the request, times it, and echoes the id in X-Request-ID."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        request.id = offered if _ACCEPTABLE_REQUEST_ID.match(offered) else secrets.token_hex(8)
        token = request_id_var.set(request.id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response[REQUEST_ID_HEADER] = request.id
            HTTP_LATENCY.labels(request.method, _route(request), str(response.status_code)).observe(
                time.perf_counter() - started
            )
            return response
        finally:
            request_id_var.reset(token)


def _route(request) -> str:
    """The URL pattern, not the path: one series per page, not per study id."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return "unmatched"
    return match.route or match.view_name or "unmatched"


# Celery: the request id travels in a message header and is restored around the task.

def task_publish_add_request_id(headers=None, **kwargs):
    if headers is not None and request_id_var.get() != "-":
        headers.setdefault("request_id", request_id_var.get())


_task_tokens: dict[str, contextvars.Token] = {}


def task_prerun_restore_request_id(task_id=None, task=None, **kwargs):
    request_id = getattr(task.request, "request_id", None) if task is not None else None
    _task_tokens[task_id] = request_id_var.set(request_id or f"task-{task_id}")


def task_postrun_forget_request_id(task_id=None, **kwargs):
    token = _task_tokens.pop(task_id, None)
    if token is not None:
        request_id_var.reset(token)


def celery_logging_add_request_id(logger=None, **kwargs):
    for handler in getattr(logger, "handlers", []):
        handler.addFilter(RequestIdLogFilter())


# Health and metrics endpoints: no session, no login; /metrics only for allowed addresses or the token.

@never_cache
@require_GET
def health_live(request):
    """The process answers. Nothing else is checked: a restart would not fix the database."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def health_ready(request):
    """Ready to take clinical work: database, broker, an inference worker's heartbeat, an active model."""
    from diagnosis.services.operations import readiness_checks

    checks = readiness_checks()
    ready = all(check.ok for check in checks)
    return JsonResponse(
        {"status": "ready" if ready else "not_ready",
         "checks": {check.name: {"ok": check.ok, "detail": check.detail} for check in checks}},
        status=200 if ready else 503,
    )


def metrics_allowed(request) -> bool:
    token = settings.METRICS_TOKEN
    if token and secrets.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}"):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network, strict=False)
               for network in settings.METRICS_ALLOWED_NETWORKS)


class DatabaseCollector:
    """Figures read from PostgreSQL at scrape time, so every web process reports the same truth."""

    def collect(self):
        from diagnosis.services.operations import broker_queue_lengths, operations_snapshot, workers_alive

        snapshot = operations_snapshot(minutes=5)
        studies = GaugeMetricFamily("cxr_studies", "Studies by status", labels=["status"])
        for status, count in snapshot.studies_by_status.items():
            studies.add_metric([status], count)
        yield studies
        yield GaugeMetricFamily("cxr_oldest_waiting_study_seconds",
                                "Age of the oldest study not yet completed or failed",
                                value=snapshot.oldest_waiting_seconds)
        predictions = CounterMetricFamily("cxr_predictions", "Predictions stored, by predicted label",
                                          labels=["label"])
        for label, count in snapshot.predictions_by_label.items():
            predictions.add_metric([label], count)
        yield predictions
        yield CounterMetricFamily("cxr_studies_failed", "Studies that failed inference",
                                  value=snapshot.studies_by_status.get("failed", 0))
        inference = GaugeMetricFamily("cxr_inference_seconds", "Model time per film over the last 5 minutes",
                                      labels=["quantile"])
        result = GaugeMetricFamily("cxr_upload_to_result_seconds",
                                   "Upload to stored result over the last 5 minutes", labels=["quantile"])
        for quantile, inference_ms, result_seconds in (
            ("0.5", snapshot.inference_ms_p50, snapshot.result_seconds_p50),
            ("0.95", snapshot.inference_ms_p95, snapshot.result_seconds_p95),
        ):
            if inference_ms is not None:
                inference.add_metric([quantile], inference_ms / 1000)
            if result_seconds is not None:
                result.add_metric([quantile], result_seconds)
        yield inference
        yield result
        queue = GaugeMetricFamily("cxr_broker_queue_length", "Messages waiting in the broker", labels=["queue"])
        for name, length in broker_queue_lengths().items():
            queue.add_metric([name], length)
        yield queue
        yield GaugeMetricFamily("cxr_workers_alive", "Workers with a recent heartbeat",
                                value=workers_alive().count())


@never_cache
@require_GET
def metrics(request):
    if not metrics_allowed(request):
        return HttpResponse("Forbidden", status=403, content_type="text/plain")
    registry = CollectorRegistry()
    registry.register(DatabaseCollector())
    body = generate_latest(REGISTRY) + generate_latest(registry)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)

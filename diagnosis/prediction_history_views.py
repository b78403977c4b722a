"""The prediction history for auditors: every prediction with its model, probabilities, threshold, feedback and
alerts, on screen and as CSV. Each read is written to the audit trail with the filters used."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.access import require_capability
from accounts.roles import Capability
from audit.services import audit_read_many, query_for_audit
from cxr_portal.csv_export import csv_download
from cxr_portal.filters import filters_for_audit, filters_given

from . import selectors
from .forms import PredictionFilterForm

PAGE_SIZE = 50


@login_required
@require_GET
def prediction_history(request):
    require_capability(user=request.user, capability=Capability.VIEW_AUDIT, action="prediction.history_view")
    form = PredictionFilterForm(request.GET or None)
    filters = filters_given(form)
    page = Paginator(selectors.prediction_history_filtered(**filters), PAGE_SIZE).get_page(request.GET.get("page"))
    audit_read_many(actor=request.user, action="prediction.history_view", query=query_for_audit(request.GET),
                    study_identifiers=[prediction.study.accession_number for prediction in page],
                    patient_identifiers=[prediction.study.patient.mrn for prediction in page],
                    details={"filters": filters_for_audit(filters)})
    return render(request, "diagnosis/prediction_history.html", {"form": form, "page": page})


PREDICTION_COLUMNS = ["prediction_id", "created_at", "patient_mrn", "accession_number", "uploaded_by", "model_name",
                      "model_version", "predicted_label", "probability_covid", "probability_normal",
                      "probability_pneumonia", "covid_threshold", "covid_alert", "feedback", "alerts"]


def _alert_state(alert) -> str:
    """The alert's state as the alert list shows it: withdrawn and acknowledged alerts were both reviewed."""
    if alert.withdrawn_at is not None:
        who = alert.withdrawn_by.username if alert.withdrawn_by else ""
        return f"withdrawn by {who} {alert.withdrawn_at:%Y-%m-%d %H:%M} (result marked wrong)"
    if alert.acknowledged_at is not None:
        return f"acknowledged by {alert.acknowledged_by.username} {alert.acknowledged_at:%Y-%m-%d %H:%M}"
    return "open"


def _prediction_row(prediction) -> list:
    study = prediction.study
    probabilities = prediction.probabilities or {}
    feedback = "; ".join(f"{item.author.username}: {item.correct_label}" + (f" ({item.note})" if item.note else "")
                         for item in prediction.feedback.all())
    alerts = "; ".join(f"{alert.created_at:%Y-%m-%d %H:%M} {_alert_state(alert)}" for alert in prediction.alerts.all())
    return [prediction.id, prediction.created_at.isoformat(), study.patient.mrn, study.accession_number,
            study.uploaded_by.username if study.uploaded_by else "", prediction.model_version.name,
            prediction.model_version.version, prediction.predicted_label, probabilities.get("covid"),
            probabilities.get("normal"), probabilities.get("pneumonia"), prediction.covid_threshold,
            prediction.covid_alert, feedback, alerts]


@login_required
@require_GET
def prediction_export(request):
    require_capability(user=request.user, capability=Capability.VIEW_AUDIT, action="prediction.history_export")
    filters = filters_given(PredictionFilterForm(request.GET or None))
    predictions = selectors.prediction_history_filtered(**filters)
    identifiers = list(predictions.values_list("study__accession_number", "study__patient__mrn"))
    audit_read_many(actor=request.user, action="prediction.history_export", query=query_for_audit(request.GET),
                    study_identifiers=[accession for accession, _mrn in identifiers],
                    patient_identifiers=[mrn for _accession, mrn in identifiers],
                    details={"filters": filters_for_audit(filters), "rows": len(identifiers)})
    # Prefetching needs a chunk size with iterator(); 500 keeps memory flat on a long history.
    rows = (_prediction_row(prediction) for prediction in predictions.iterator(chunk_size=500))
    return csv_download(rows, header=PREDICTION_COLUMNS, filename=f"prediction-history-{timezone.now():%Y%m%d-%H%M%S}.csv")

"""Pages. Each view validates, calls one access function or service, and renders."""


from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils.http import content_disposition_header, url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.roles import Capability, user_can
from audit.services import audit_record
from cxr_portal.csv_export import csv_download
from cxr_portal.form_errors import form_add_service_errors
from ml.serving.imaging import DecoderBusy, ImageDecodeError

from . import access, selectors
from .forms import FeedbackForm, PatientForm, PatientSearchForm, StudyUploadForm, WorklistFilterForm
from .models import DeliveryOutcome, StudyStatus
from .services import storage
from .services.alerts import alert_acknowledge
from .services.feedback import feedback_record
from .services.ingest import UploadBusy, image_preview, study_create
from .services.model_registry import model_version_active
from .services.monitoring import model_version_monitoring_report
from .services.patients import patient_create
from .services.reports import study_report_pdf
from .texts import alert_meaning, class_display_name, monitor_check_description, monitor_summary
from .validators import filename_part

WORKLIST_PAGE_SIZE = 25


def _analysis_state() -> dict:
    """The active model, or why there is none (analysis paused), for pages that say whether studies get analysed."""
    active = model_version_active()
    return {"active_model": active, "analysis_pause": None if active else selectors.analysis_pause()}


@login_required
def home(request):
    if user_can(request.user, Capability.VIEW_CLINICAL):
        return redirect("diagnosis:worklist")
    if user_can(request.user, Capability.MANAGE_MODELS):
        return redirect("diagnosis:model_versions")
    return render(request, "diagnosis/no_role.html", status=403)


@login_required
@require_GET
def worklist(request):
    form = WorklistFilterForm(request.GET)
    filters = form.filters()
    studies = selectors.worklist_page_studies(user=request.user, filters=filters)
    page = Paginator(studies, WORKLIST_PAGE_SIZE).get_page(request.GET.get("page"))
    access.studies_read_record(user=request.user, action="study.list", query=request.GET, studies=page)
    pending_ids = [study.id for study in page if study.is_pending]
    return render(
        request,
        "diagnosis/worklist.html",
        {"page": page, "form": form, "pending_ids": pending_ids, **_analysis_state()},
    )


WORKLIST_EXPORT_LIMIT = 10_000


@login_required
@require_GET
def worklist_export_csv(request):
    """The filtered worklist, in triage order, as CSV (at most WORKLIST_EXPORT_LIMIT rows)."""
    filters = WorklistFilterForm(request.GET).filters()
    studies = list(selectors.worklist_studies(user=request.user, filters=filters)[:WORKLIST_EXPORT_LIMIT])
    access.studies_read_record(user=request.user, action="study.export_csv", query=request.GET, studies=studies)
    return csv_download((_worklist_row(study) for study in studies), header=WORKLIST_EXPORT_COLUMNS,
                        filename="worklist.csv")


WORKLIST_EXPORT_COLUMNS = [
    "accession_number", "patient_mrn", "patient_name", "status", "predicted_label", "covid_probability",
    "suspected_covid", "alert_state", "uploaded_at", "completed_at", "model_version", "warnings",
]


def _worklist_row(study) -> list:
    predictions = list(study.predictions.all())
    latest = predictions[0] if predictions else None
    alert = getattr(study, "alert", None)
    return [
        study.accession_number, study.patient.mrn, study.patient.name, study.status,
        latest.predicted_label if latest else "",
        f"{latest.covid_probability:.4f}" if latest else "",
        "yes" if study.suspected_covid else "no",
        alert.state if alert else "",
        study.created_at.isoformat(), study.completed_at.isoformat() if study.completed_at else "",
        str(latest.model_version) if latest else "",
        " ".join(latest.warnings or []) if latest else "",
    ]


@login_required
@require_GET
def study_statuses(request):
    """Polled by the worklist and study pages while work is pending: ids in, statuses out."""
    try:
        ids = [int(value) for value in request.GET.get("ids", "").split(",") if value][:100]
    except ValueError:
        return JsonResponse({"detail": "ids must be a comma-separated list of numbers"}, status=400)
    studies = list(access.studies_for_user(user=request.user).filter(id__in=ids))
    access.studies_read_record(user=request.user, action="study.status_list", query=request.GET, studies=studies)
    return JsonResponse({"statuses": {str(study.id): study.status for study in studies}})


@login_required
@require_GET
def patient_list(request):
    patients = access.patients_for_user(user=request.user)
    form = PatientSearchForm(request.GET or None)
    query = ""
    if form.is_valid():
        query = form.cleaned_data["q"].strip()
        if query:
            patients = patients.filter(Q(name__icontains=query) | Q(mrn__icontains=query))
    page = Paginator(patients, WORKLIST_PAGE_SIZE).get_page(request.GET.get("page"))
    access.patients_read_record(user=request.user, action="patient.list", query=request.GET, patients=page)
    return render(request, "diagnosis/patient_list.html", {"page": page, "form": form, "query": query})


@login_required
@require_http_methods(["GET", "POST"])
def patient_create_view(request):
    access.require_capability(user=request.user, capability=Capability.EDIT_CLINICAL, action="patient.create")
    form = PatientForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            patient = patient_create(actor=request.user, **form.cleaned_data)
        except ValidationError as error:
            form_add_service_errors(form, error)
        else:
            messages.success(request, _("Patient %(name)s created.") % {"name": patient.name})
            return redirect("diagnosis:patient_detail", patient_id=patient.id)
    return render(request, "diagnosis/patient_form.html", {"form": form}, status=400 if form.errors else 200)


@login_required
@require_GET
def patient_detail(request, patient_id: int):
    patient = access.patient_get_for_user(user=request.user, patient_id=patient_id)
    studies = access.studies_for_user(user=request.user).filter(patient=patient).order_by("-created_at")
    return render(request, "diagnosis/patient_detail.html", {"patient": patient, "studies": studies})


@login_required
@require_http_methods(["GET", "POST"])
def study_upload(request, patient_id: int):
    patient = access.patient_for_upload(user=request.user, patient_id=patient_id)
    form = StudyUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            study = study_create(
                patient=patient,
                uploaded_by=request.user,
                data=upload.read(),
                filename=upload.name,
                accession_number=form.cleaned_data["accession_number"],
                view_position=form.cleaned_data["view_position"],
                acquisition_date=form.cleaned_data["acquisition_date"],
            )
        except ValidationError as error:
            form_add_service_errors(form, error, field="file")
            if isinstance(error, UploadBusy):
                response = render(request, "diagnosis/study_upload.html",
                                  {"form": form, "patient": patient, **_analysis_state()}, status=503)
                response["Retry-After"] = str(error.retry_after_seconds)
                return response
        else:
            messages.success(request, _("Study %(accession)s received and queued for analysis.") % {"accession": study.accession_number})
            return redirect("diagnosis:study_detail", study_id=study.id)
    return render(
        request,
        "diagnosis/study_upload.html",
        {"form": form, "patient": patient, **_analysis_state()},
        status=400 if form.errors else 200,
    )


@login_required
@require_GET
def study_detail(request, study_id: int):
    study = access.study_get_for_user(user=request.user, study_id=study_id)
    return _render_study(request, study)


def _render_study(request, study, *, feedback_form=None, status=200):
    predictions = list(study.predictions.all())
    prediction = predictions[0] if predictions else None
    feedback = list(selectors.feedback_for_study(study=study))
    my_feedback = next(
        (item for item in feedback if item.author_id == request.user.id and prediction and item.prediction_id == prediction.id),
        None,
    )
    can_give_feedback = (
        prediction is not None and study.status == StudyStatus.COMPLETED and user_can(request.user, Capability.EDIT_CLINICAL)
    )
    if feedback_form is None and can_give_feedback:
        initial = (
            {"agrees": "yes" if my_feedback.agrees else "no", "correct_label": my_feedback.correct_label,
             "note": my_feedback.note}
            if my_feedback else {}
        )
        feedback_form = FeedbackForm(initial=initial)
    alert = getattr(study, "alert", None)  # reverse one-to-one: None when the study has no alert
    return render(
        request,
        "diagnosis/study_detail.html",
        {
            "study": study,
            "prediction": prediction,
            "earlier_predictions": predictions[1:],
            **_analysis_state(),
            "alert": alert,
            "feedback": feedback,
            "my_feedback": my_feedback,
            "feedback_form": feedback_form if can_give_feedback else None,
            "validation_figures": selectors.validation_figures(prediction.model_version) if prediction else [],
            "alert_meaning": (alert.meaning() if alert is not None
                              else alert_meaning(prediction.model_version.metrics) if prediction else None),
        },
        status=status,
    )


@login_required
@require_POST
def study_feedback(request, study_id: int):
    study, prediction = access.prediction_for_feedback(user=request.user, study_id=study_id)
    form = FeedbackForm(request.POST)
    if form.is_valid():
        try:
            feedback_record(author=request.user, prediction=prediction, **form.cleaned_data)
        except ValidationError as error:
            form_add_service_errors(form, error)
        else:
            messages.success(request, _("Your feedback was recorded."))
            return redirect("diagnosis:study_detail", study_id=study.id)
    return _render_study(request, study, feedback_form=form, status=400)


@login_required
@require_GET
def alert_list(request):
    alerts = selectors.alerts_for_list(user=request.user)
    page = Paginator(alerts, WORKLIST_PAGE_SIZE).get_page(request.GET.get("page"))
    access.studies_read_record(user=request.user, action="alert.list", query=request.GET, studies=[alert.study for alert in page])
    return render(request, "diagnosis/alert_list.html", {"page": page})


@login_required
@require_POST
def alert_acknowledge_view(request, alert_id: int):
    alert = access.alert_for_acknowledgement(user=request.user, alert_id=alert_id)
    alert_acknowledge(alert=alert, user=request.user)
    messages.success(request, _("Alert acknowledged."))
    next_url = request.POST.get("next", "")
    if next_url and url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        return redirect(next_url)
    return redirect("diagnosis:alert_list")


@login_required
@require_GET
def alert_deliveries(request):
    return _deliveries_page(request, access.alert_deliveries_for_user(user=request.user),
                            template="diagnosis/alert_deliveries.html")


@login_required
@require_GET
def result_deliveries(request):
    return _deliveries_page(request, access.result_deliveries_for_user(user=request.user),
                            template="diagnosis/result_deliveries.html")


def _deliveries_page(request, deliveries, *, template: str):
    """Delivery attempts newest first, filtered by outcome, 50 a page."""
    deliveries = deliveries.order_by("-started_at")
    outcome = request.GET.get("outcome", "")
    if outcome in DeliveryOutcome.values:
        deliveries = deliveries.filter(outcome=outcome)
    page = Paginator(deliveries, 50).get_page(request.GET.get("page"))
    return render(request, template, {"page": page, "outcome": outcome, "outcomes": DeliveryOutcome.choices})


def _image_response(data: bytes, *, filename: str) -> HttpResponse:
    response = HttpResponse(data, content_type="image/png")
    response["Content-Disposition"] = content_disposition_header(False, filename)
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_GET
def study_image(request, study_id: int):
    study = access.study_get_for_user(user=request.user, study_id=study_id, action="study.image_view")
    try:
        preview = image_preview(image=study.image)
    except DecoderBusy as busy:  # a large film whose preview the worker has not made yet, and the decoder is busy
        response = HttpResponse(str(busy), status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(busy.retry_after_seconds)
        return response
    except ImageDecodeError:
        raise Http404("The stored film cannot be shown.") from None
    return _image_response(preview, filename=f"{filename_part(study.accession_number)}.png")


@login_required
@require_GET
def study_heatmap(request, study_id: int):
    study = access.study_get_for_user(user=request.user, study_id=study_id, action="study.heatmap_view")
    prediction = study.predictions.first()
    if prediction is None or not prediction.heatmap_sha256:
        raise Http404("This study has no heatmap.")
    # A heatmap with a box is a layer for the film; an older one is the model input with the heatmap blended in.
    kind = storage.HEATMAP_LAYER if prediction.heatmap_box else storage.HEATMAP
    return _image_response(storage.blob_get(prediction.heatmap_sha256, kind=kind),
                           filename=f"{filename_part(study.accession_number)}-heatmap.png")


@login_required
@require_GET
def study_report(request, study_id: int):
    study = access.study_get_for_user(user=request.user, study_id=study_id, action="study.report_download")
    response = HttpResponse(study_report_pdf(study=study), content_type="application/pdf")
    response["Content-Disposition"] = content_disposition_header(True, f"cxr-report-{filename_part(study.accession_number)}.pdf")
    response["Cache-Control"] = "private, no-store"
    return response


MONITOR_WINDOWS_DAYS = (30, 90, 365, 0)  # 0: every result of the version


def _predicted_mix(report) -> list[dict]:
    """Per class the model called: results here and validation films, for the page's case-mix table."""
    if not report.results:
        return []
    return [{"name": class_display_name(name), "site": site, "site_n": report.results,
             "validation": validation, "validation_n": report.reference.n}
            for name, site, validation in report.predicted_mix]


def _monitor_row(check, report) -> dict:
    """A check for the monitor page; one compared within predicted classes also lists each class's counts."""
    strata = []
    if check.strata is not None:
        strata = [{"name": class_display_name(name), "site": stratum[:2], "validation": stratum[2:]}
                  for name, stratum in zip(report.reference.class_names, check.strata, strict=True)]
    return {"check": check, "strata": strata,
            "description": monitor_check_description(check.code, stratified=check.strata is not None)}


@login_required
@require_GET
def model_version_monitoring(request, version_id: int):
    access.require_model_oversight(user=request.user, action="model_version.monitoring_view")
    version = selectors.model_version_get(model_version_id=version_id)
    default = settings.CXR_MONITOR_WINDOW_DAYS
    windows = [*sorted({*MONITOR_WINDOWS_DAYS, default} - {0}), 0]  # the scheduled run's window is always offered
    try:
        days = int(request.GET.get("days", default))
    except ValueError:
        days = default
    if days not in windows:
        days = default
    report = model_version_monitoring_report(model_version=version, days=days or None)
    from ml.evaluation.plots import monitoring_chart_svg  # matplotlib only for this page, not in every web process

    audit_record(actor=request.user, action="model_version.monitoring_view", target=version,
                 details={"days": days, "status": report.status})
    return render(request, "diagnosis/model_monitoring.html", {
        "report": report, "version": version, "days": days, "windows": windows,
        "rows": [_monitor_row(check, report) for check in report.checks],
        "mix": _predicted_mix(report),
        "summary": monitor_summary(report, days=days),
        "chart": monitoring_chart_svg(report.checks) if report.checks else "",
    })

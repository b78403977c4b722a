"""Pages. Each view validates, calls one access function or service, and renders."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from accounts.roles import Capability, user_can
from audit.services import audit_record

from . import access
from .forms import PatientForm, PatientSearchForm, StudyUploadForm
from .models import ModelVersion, StudyStatus
from .services import storage
from .services.ingest import study_create
from .services.model_registry import model_version_active
from .services.patients import patient_create

WORKLIST_PAGE_SIZE = 25


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
    studies = access.studies_for_user(user=request.user)
    status = request.GET.get("status", "")
    if status in StudyStatus.values:
        studies = studies.filter(status=status)
    page = Paginator(studies.order_by("-created_at"), WORKLIST_PAGE_SIZE).get_page(request.GET.get("page"))
    audit_record(actor=request.user, action="study.list", details={"page": page.number, "status": status})
    pending_ids = [study.id for study in page if study.is_pending]
    return render(
        request,
        "diagnosis/worklist.html",
        {
            "page": page,
            "status": status,
            "statuses": StudyStatus.choices,
            "pending_ids": pending_ids,
            "active_model": model_version_active(),
        },
    )


@login_required
@require_GET
def study_statuses(request):
    """Polled by the worklist and study pages while work is pending: ids in, statuses out."""
    try:
        ids = [int(value) for value in request.GET.get("ids", "").split(",") if value][:100]
    except ValueError:
        return JsonResponse({"error": "ids must be a comma-separated list of numbers"}, status=400)
    rows = access.studies_for_user(user=request.user).filter(id__in=ids).values_list("id", "status")
    return JsonResponse({"statuses": {str(study_id): status for study_id, status in rows}})


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
    audit_record(actor=request.user, action="patient.list", details={"query": query, "page": page.number})
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
            _add_errors(form, error)
        else:
            messages.success(request, f"Patient {patient.name} created.")
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
            _add_errors(form, error, field="file")
        else:
            messages.success(request, f"Study {study.accession_number} received and queued for analysis.")
            return redirect("diagnosis:study_detail", study_id=study.id)
    return render(
        request,
        "diagnosis/study_upload.html",
        {"form": form, "patient": patient, "active_model": model_version_active()},
        status=400 if form.errors else 200,
    )


@login_required
@require_GET
def study_detail(request, study_id: int):
    study = access.study_get_for_user(user=request.user, study_id=study_id)
    predictions = list(study.predictions.all())
    return render(
        request,
        "diagnosis/study_detail.html",
        {
            "study": study,
            "prediction": predictions[0] if predictions else None,
            "earlier_predictions": predictions[1:],
            "active_model": model_version_active(),
        },
    )


def _image_response(data: bytes, *, filename: str) -> HttpResponse:
    response = HttpResponse(data, content_type="image/png")
    response["Content-Disposition"] = f'inline; filename="{filename}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_GET
def study_image(request, study_id: int):
    study = access.study_get_for_user(user=request.user, study_id=study_id, action="study.image_view")
    return _image_response(
        storage.blob_get(study.image.sha256, kind=storage.PREVIEW), filename=f"{study.accession_number}.png"
    )


@login_required
@require_GET
def study_heatmap(request, study_id: int):
    study = access.study_get_for_user(user=request.user, study_id=study_id, action="study.heatmap_view")
    prediction = study.predictions.first()
    if prediction is None or not prediction.heatmap_sha256:
        raise Http404("This study has no heatmap.")
    return _image_response(
        storage.blob_get(prediction.heatmap_sha256, kind=storage.HEATMAP),
        filename=f"{study.accession_number}-heatmap.png",
    )


@login_required
@require_GET
def model_versions(request):
    if not (user_can(request.user, Capability.MANAGE_MODELS) or user_can(request.user, Capability.VIEW_AUDIT)):
        access.require_capability(user=request.user, capability=Capability.MANAGE_MODELS, action="model_version.list")
    return render(request, "diagnosis/model_versions.html", {"versions": ModelVersion.objects.all()})


def _add_errors(form, error: ValidationError, field: str | None = None) -> None:
    if hasattr(error, "error_dict"):
        for name, errors in error.message_dict.items():
            form.add_error(name if name in form.fields else None, errors)
    else:
        form.add_error(field, error.messages)


def study_url(study) -> str:
    return reverse("diagnosis:study_detail", kwargs={"study_id": study.id})

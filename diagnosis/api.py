"""REST API. Same access functions and services as the pages."""

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Q
from django.http import HttpResponse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.exceptions import ValidationError as DRFValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from accounts.roles import Capability, user_can
from cxr_portal.middleware import DATABASE_ERRORS, database_unavailable_response

from . import access, selectors
from .forms import WorklistFilterForm
from .serializers import (
    AgreementSerializer,
    AlertSerializer,
    FeedbackInputSerializer,
    FeedbackSerializer,
    PatientSerializer,
    PredictionSerializer,
    StudySerializer,
    StudyUploadSerializer,
)
from .services.alerts import alert_acknowledge
from .services.feedback import feedback_record
from .services.fhir import study_fhir_bundle
from .services.reports import study_report_pdf
from .services.ingest import UploadBusy, UploadRateLimited, UploadReplayed, study_create
from .services.patients import patient_create
from .validators import filename_part


IDEMPOTENCY_KEY_MAX_LENGTH = 128


def exception_handler(exc, context):
    """Every refusal in one shape: ``detail``, one sentence a person can read, and for a form's fields ``errors``
    (field -> messages). Django's ValidationError (raised by services) becomes a 400, never a 500.

    PostgreSQL being down becomes a 503 with Retry-After (cxr_portal.middleware.database_unavailable_response).
    """
    if isinstance(exc, DATABASE_ERRORS):
        return database_unavailable_response(context["request"])
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            errors = exc.message_dict
        else:
            errors = {"detail": exc.messages}
        response = Response(status=status.HTTP_400_BAD_REQUEST)
        if isinstance(exc, UploadBusy):
            response = Response(status=status.HTTP_503_SERVICE_UNAVAILABLE)
            response["Retry-After"] = str(exc.retry_after_seconds)
        elif isinstance(exc, UploadRateLimited):
            response = Response(status=status.HTTP_429_TOO_MANY_REQUESTS)
            response["Retry-After"] = str(settings.UPLOAD_RATE_WINDOW_SECONDS)
        response.data = error_body(errors)
        return response
    response = drf_exception_handler(exc, context)
    if response is not None:
        response.data = error_body(response.data)
    return response


def error_body(data) -> dict:
    """``{"detail": "..."}``, plus ``errors`` when the refusal names fields: ``{"file": ["The file is empty."]}``."""
    if isinstance(data, dict) and set(data) == {"detail"} and isinstance(data["detail"], str):
        return data
    if isinstance(data, dict):
        errors = {name: [str(message) for message in (messages if isinstance(messages, list) else [messages])]
                  for name, messages in data.items()}
        sentences = [message if name in ("detail", "non_field_errors") else f"{name}: {message}"
                     for name, messages in errors.items() for message in messages]
        body = {"detail": " ".join(sentences)}
        fields = {name: messages for name, messages in errors.items() if name != "detail"}
        return {**body, "errors": fields} if fields else body
    messages = [str(message) for message in (data if isinstance(data, list) else [data])]
    return {"detail": " ".join(messages)}


class PDFRenderer(BaseRenderer):
    media_type = "application/pdf"
    format = "pdf"
    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, bytes):
            return data
        # An error (403, 404) carries a dict: send it as JSON whatever was asked for.
        response = (renderer_context or {}).get("response")
        if response is not None:
            response["Content-Type"] = "application/json"
        return JSONRenderer().render(data)


class FHIRJSONRenderer(JSONRenderer):
    media_type = "application/fhir+json"
    format = "fhir"


class PatientViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet):
    serializer_class = PatientSerializer
    lookup_value_converter = "int"

    def get_queryset(self):
        patients = access.patients_for_user(user=self.request.user)
        query = self.request.query_params.get("q", "").strip()
        if query:
            patients = patients.filter(Q(name__icontains=query) | Q(mrn__icontains=query))
        return patients

    @extend_schema(parameters=[OpenApiParameter("q", str, description="Search by name or MRN")])
    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        access.patients_read_record(user=request.user, action="patient.list", query=request.query_params, patients=page)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def retrieve(self, request, pk=None):
        patient = access.patient_get_for_user(user=request.user, patient_id=pk)
        return Response(PatientSerializer(patient).data)

    def create(self, request, *args, **kwargs):
        from accounts.roles import Capability

        access.require_capability(user=request.user, capability=Capability.EDIT_CLINICAL, action="patient.create")
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        patient = patient_create(actor=request.user, **serializer.validated_data)
        return Response(PatientSerializer(patient).data, status=status.HTTP_201_CREATED)


WORKLIST_API_PARAMETERS = ("predicted_label", "date_from", "date_to", "q", "needs_my_review")


class StudyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = StudySerializer
    lookup_value_converter = "int"

    def get_queryset(self):
        params = self.request.query_params
        if params.get("ordering") == "triage" or any(params.get(name) for name in WORKLIST_API_PARAMETERS):
            # The worklist's filters and triage order (suspected COVID-19 first), as on the page.
            form = WorklistFilterForm({
                "status": params.get("status", ""), "predicted_label": params.get("predicted_label", ""),
                "date_from": params.get("date_from", ""), "date_to": params.get("date_to", ""),
                "patient": params.get("q", ""), "needs_my_review": params.get("needs_my_review") in ("1", "true", "on"),
            })
            if not form.is_valid():
                raise DRFValidationError(form.errors)
            studies = selectors.worklist_studies(user=self.request.user, filters=form.filters())
        else:
            studies = access.studies_for_user(user=self.request.user).order_by("-created_at")
        patient = params.get("patient")
        if patient and patient.isdigit():
            studies = studies.filter(patient_id=int(patient))
        study_status = self.request.query_params.get("status")
        if study_status:
            studies = studies.filter(status=study_status)
        return studies

    @extend_schema(parameters=[
        OpenApiParameter("patient", int, description="Only this patient's studies"),
        OpenApiParameter("status", str, description="received, queued, processing, completed or failed"),
        OpenApiParameter("ordering", str, enum=["triage"],
                         description="triage: suspected COVID-19 first by calibrated probability, then oldest waiting"),
        OpenApiParameter("predicted_label", str, enum=["covid", "normal", "pneumonia"],
                         description="Latest prediction's label"),
        OpenApiParameter("date_from", OpenApiTypes.DATE, description="Uploaded on or after"),
        OpenApiParameter("date_to", OpenApiTypes.DATE, description="Uploaded on or before"),
        OpenApiParameter("q", str, description="Patient name or MRN (partial)"),
        OpenApiParameter("needs_my_review", bool, description="Completed, without your feedback on the latest result"),
    ])
    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        access.studies_read_record(user=request.user, action="study.list", query=request.query_params, studies=page)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def retrieve(self, request, pk=None):
        study = access.study_get_for_user(user=request.user, study_id=pk)
        return Response(StudySerializer(study).data)

    @extend_schema(request={"multipart/form-data": StudyUploadSerializer}, responses={201: StudySerializer})
    def create(self, request):
        # The role is checked before the body is looked at: a refused user learns nothing from validation.
        access.require_capability(user=request.user, capability=Capability.EDIT_CLINICAL, action="study.upload")
        serializer = StudyUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        idempotency_key = request.headers.get("Idempotency-Key", "").strip()
        if len(idempotency_key) > IDEMPOTENCY_KEY_MAX_LENGTH:
            raise DRFValidationError({"Idempotency-Key": [f"At most {IDEMPOTENCY_KEY_MAX_LENGTH} characters."]})
        patient = access.patient_for_upload(user=request.user, patient_id=data["patient"])
        upload = data["file"]
        try:
            study = study_create(
                patient=patient,
                uploaded_by=request.user,
                data=upload.read(),
                filename=upload.name,
                accession_number=data.get("accession_number", ""),
                view_position=data.get("view_position", ""),
                acquisition_date=data.get("acquisition_date"),
                idempotency_key=idempotency_key,
            )
        except UploadReplayed as replay:
            # A retry of an upload that was stored: the first study, not a second one.
            return Response(StudySerializer(access.study_get_for_user(user=request.user, study_id=replay.study.id)).data,
                            status=status.HTTP_200_OK)
        return Response(StudySerializer(access.studies_for_user(user=request.user).get(id=study.id)).data,
                        status=status.HTTP_201_CREATED)

    def get_parsers(self):
        # Called before self.action is set: decide from the method and the route's action map.
        is_upload = getattr(self, "action", None) == "create" or (
            self.request is not None and self.request.method == "POST" and self.action_map.get("post") == "create"
        )
        if is_upload:
            return [MultiPartParser(), FormParser()]
        return super().get_parsers()

    @extend_schema(responses={200: PredictionSerializer})
    @action(detail=True, methods=["get"])
    def prediction(self, request, pk=None):
        study = access.study_get_for_user(user=request.user, study_id=pk, action="prediction.view")
        prediction = study.predictions.first()
        if prediction is None:
            raise NotFound(f"Study {study.accession_number} has no prediction yet (status: {study.status}).")
        return Response(PredictionSerializer(prediction).data)

    @extend_schema(
        methods=["GET"], responses={200: FeedbackSerializer(many=True)},
        description="Every clinician's feedback on the study, each with its revision history.",
    )
    @extend_schema(methods=["POST"], request=FeedbackInputSerializer, responses={200: FeedbackSerializer})
    @action(detail=True, methods=["get", "post"], parser_classes=[JSONParser, MultiPartParser, FormParser])
    def feedback(self, request, pk=None):
        if request.method == "POST":
            study, prediction = access.prediction_for_feedback(user=request.user, study_id=pk)
            serializer = FeedbackInputSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            feedback = feedback_record(author=request.user, prediction=prediction, **serializer.validated_data)
            return Response(FeedbackSerializer(selectors.feedback_for_study(study=study).get(id=feedback.id)).data)
        study = access.study_get_for_user(user=request.user, study_id=pk, action="feedback.view")
        return Response(FeedbackSerializer(selectors.feedback_for_study(study=study), many=True).data)

    @extend_schema(responses={(200, "application/pdf"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], url_path="report", renderer_classes=[PDFRenderer, JSONRenderer])
    def report(self, request, pk=None):
        study = access.study_get_for_user(user=request.user, study_id=pk, action="study.report_download")
        response = HttpResponse(study_report_pdf(study=study), content_type="application/pdf")
        response["Content-Disposition"] = content_disposition_header(True, f"cxr-report-{filename_part(study.accession_number)}.pdf")
        response["Cache-Control"] = "private, no-store"
        return response

    @extend_schema(
        responses={200: OpenApiTypes.OBJECT},
        description="FHIR R4 Bundle (collection): DiagnosticReport, Observations, ImagingStudy, Patient.",
    )
    @action(detail=True, methods=["get"], url_path="fhir", renderer_classes=[FHIRJSONRenderer, JSONRenderer])
    def fhir(self, request, pk=None):
        study = access.study_get_for_user(user=request.user, study_id=pk, action="study.fhir_read")
        return Response(study_fhir_bundle(study=study, base_url=request.build_absolute_uri("/")))


class AlertViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """COVID-19 alerts: open first. Clinicians acknowledge them."""

    serializer_class = AlertSerializer
    lookup_value_converter = "int"

    def get_queryset(self):
        alerts = selectors.alerts_for_list(user=self.request.user)
        state = self.request.query_params.get("state")
        if state == "open":
            alerts = alerts.filter(acknowledged_at__isnull=True, withdrawn_at__isnull=True)
        return alerts

    @extend_schema(parameters=[OpenApiParameter("state", str, description="'open' for unacknowledged alerts only")])
    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        access.studies_read_record(user=request.user, action="alert.list", query=request.query_params,
                                   studies=[alert.study for alert in page])
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(request=None, responses={200: AlertSerializer})
    @action(detail=True, methods=["post"])
    def acknowledge(self, request, pk=None):
        alert = access.alert_for_acknowledgement(user=request.user, alert_id=pk)
        return Response(AlertSerializer(alert_acknowledge(alert=alert, user=request.user)).data)


class AgreementView(APIView):
    """Share of clinician feedback agreeing with each model version (aggregates only, no patient data)."""

    @extend_schema(responses={200: AgreementSerializer(many=True)})
    def get(self, request):
        if not user_can(request.user, Capability.MANAGE_MODELS):
            access.require_capability(user=request.user, capability=Capability.VIEW_CLINICAL,
                                      action="feedback.agreement")
        return Response(AgreementSerializer(selectors.agreement_by_model_version(), many=True).data)

"""REST API. Same access functions and services as the pages."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Q
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from audit.services import audit_record

from . import access
from .serializers import PatientSerializer, PredictionSerializer, StudySerializer, StudyUploadSerializer
from .services.ingest import study_create
from .services.patients import patient_create


def exception_handler(exc, context):
    """Django's ValidationError (raised by services) becomes a 400 with its messages, never a 500."""
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        return Response(detail, status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)


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
        response = super().list(request, *args, **kwargs)
        audit_record(actor=request.user, action="patient.list", details={"query": request.query_params.get("q", ""), "api": True})
        return response

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


class StudyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = StudySerializer
    lookup_value_converter = "int"

    def get_queryset(self):
        studies = access.studies_for_user(user=self.request.user).order_by("-created_at")
        patient = self.request.query_params.get("patient")
        if patient and patient.isdigit():
            studies = studies.filter(patient_id=int(patient))
        study_status = self.request.query_params.get("status")
        if study_status:
            studies = studies.filter(status=study_status)
        return studies

    @extend_schema(parameters=[
        OpenApiParameter("patient", int, description="Only this patient's studies"),
        OpenApiParameter("status", str, description="received, queued, processing, completed or failed"),
    ])
    def list(self, request, *args, **kwargs):
        response = super().list(request, *args, **kwargs)
        audit_record(actor=request.user, action="study.list", details={"api": True})
        return response

    def retrieve(self, request, pk=None):
        study = access.study_get_for_user(user=request.user, study_id=pk)
        return Response(StudySerializer(study).data)

    @extend_schema(request={"multipart/form-data": StudyUploadSerializer}, responses={201: StudySerializer})
    def create(self, request):
        serializer = StudyUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        patient = access.patient_for_upload(user=request.user, patient_id=data["patient"])
        upload = data["file"]
        study = study_create(
            patient=patient,
            uploaded_by=request.user,
            data=upload.read(),
            filename=upload.name,
            accession_number=data.get("accession_number", ""),
            view_position=data.get("view_position", ""),
            acquisition_date=data.get("acquisition_date"),
        )
        return Response(StudySerializer(access.studies_for_user(user=request.user).get(id=study.id)).data,
                        status=status.HTTP_201_CREATED)

    def get_parsers(self):
        if getattr(self, "action", None) == "create" or self.request is not None and self.request.method == "POST":
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

from django.conf import settings
from django.utils.translation import gettext as _
from rest_framework import serializers

from .models import Alert, CorrectLabel, Feedback, FeedbackRevision, ModelVersion, Patient, Prediction, Sex, Study, ViewPosition
from .texts import clinical_disclaimer
from .validators import validate_accession_number


class PatientSerializer(serializers.ModelSerializer):
    class Meta:
        model = Patient
        fields = ["id", "mrn", "name", "birth_date", "sex", "created_at"]
        read_only_fields = ["id", "created_at"]
        extra_kwargs = {"mrn": {"validators": []}}  # uniqueness is checked by the service, with a clear message


class ModelVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        # monitor_status is the site monitor's last verdict (diagnosis.services.monitoring); "alarm": this
        # version's results here differ from its validation.
        fields = [
            "id", "name", "version", "architecture", "status", "file_sha256", "input_size",
            "class_names", "temperature", "covid_threshold", "metrics", "created_at", "activated_at",
            "monitor_status", "monitor_checked_at",
        ]
        read_only_fields = fields


class PredictionSerializer(serializers.ModelSerializer):
    model_version = ModelVersionSerializer(read_only=True)
    predicted_display = serializers.CharField(read_only=True)
    disclaimer = serializers.SerializerMethodField()
    warning_messages = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Prediction
        fields = [
            "id", "predicted_label", "predicted_display", "probabilities", "raw_probabilities",
            "covid_probability", "covid_threshold", "covid_alert", "inference_ms", "model_version",
            "warnings", "warning_messages", "created_at", "disclaimer",
        ]
        read_only_fields = fields

    def get_disclaimer(self, prediction) -> str:
        return clinical_disclaimer()


class EarlierPredictionSerializer(serializers.ModelSerializer):
    model_version = serializers.CharField(read_only=True)

    class Meta:
        model = Prediction
        fields = ["id", "model_version", "predicted_label", "probabilities", "covid_probability", "created_at"]
        read_only_fields = fields


class StudyAlertSerializer(serializers.ModelSerializer):
    state = serializers.CharField(read_only=True)
    meaning = serializers.SerializerMethodField(
        help_text="What the alert means, from its model version's validation figures (null when unrecorded)"
    )

    class Meta:
        model = Alert
        fields = ["id", "state", "covid_probability", "covid_threshold", "created_at", "acknowledged_at", "meaning"]
        read_only_fields = fields

    def get_meaning(self, alert) -> str | None:
        return alert.meaning()


class StudySerializer(serializers.ModelSerializer):
    # Nested serializers declared as fields: a list builds each once and reuses it for every row. Building one
    # per row (SerializerMethodField) rebuilt all of a ModelSerializer's fields each time, most of the CPU of
    # GET /api/studies/.
    patient = PatientSerializer(read_only=True)
    prediction = PredictionSerializer(source="latest_prediction", read_only=True, allow_null=True)
    earlier_predictions = EarlierPredictionSerializer(
        many=True, read_only=True,
        help_text="Predictions by earlier model versions, newest first, when a newer model re-ran the study",
    )
    # A study without an alert: the reverse one-to-one raises DoesNotExist, which DRF reads as null.
    alert = StudyAlertSerializer(read_only=True, allow_null=True)
    image_format = serializers.CharField(source="image.format", read_only=True)
    image_width = serializers.IntegerField(source="image.width", read_only=True)
    image_height = serializers.IntegerField(source="image.height", read_only=True)

    class Meta:
        model = Study
        fields = [
            "id", "accession_number", "patient", "view_position", "acquisition_date", "status",
            "attempt_count", "error_message", "original_filename", "image_format", "image_width",
            "image_height", "created_at", "completed_at", "prediction", "earlier_predictions", "alert",
            "source", "sop_instance_uid",
        ]
        read_only_fields = fields


class StudyUploadSerializer(serializers.Serializer):
    patient = serializers.IntegerField(help_text="Patient id")
    file = serializers.FileField(help_text="PNG, JPEG or DICOM chest X-ray")
    accession_number = serializers.CharField(max_length=64, required=False, allow_blank=True,
                                             validators=[validate_accession_number])
    view_position = serializers.ChoiceField(choices=ViewPosition.choices, required=False, allow_blank=True)
    acquisition_date = serializers.DateField(required=False, allow_null=True)

    def validate_file(self, upload):
        if upload.size == 0:
            raise serializers.ValidationError(_("The file is empty."), code="empty")
        if upload.size > settings.MAX_UPLOAD_BYTES:
            megabytes = settings.MAX_UPLOAD_BYTES // (1024 * 1024)
            raise serializers.ValidationError(_("The file is larger than %(megabytes)s MB.") % {"megabytes": megabytes},
                                              code="too_large")
        return upload


__all__ = ["PatientSerializer", "StudySerializer", "StudyUploadSerializer", "PredictionSerializer", "Sex"]


class FeedbackRevisionSerializer(serializers.ModelSerializer):
    edited_by = serializers.CharField(source="edited_by.username", read_only=True)

    class Meta:
        model = FeedbackRevision
        fields = ["number", "edited_by", "edited_at", "agrees", "correct_label", "note", "changes"]
        read_only_fields = fields


class FeedbackSerializer(serializers.ModelSerializer):
    author = serializers.CharField(source="author.username", read_only=True)
    prediction_id = serializers.IntegerField(read_only=True)
    model_version = serializers.CharField(source="prediction.model_version", read_only=True)
    revisions = FeedbackRevisionSerializer(many=True, read_only=True)

    class Meta:
        model = Feedback
        fields = ["id", "author", "prediction_id", "model_version", "agrees", "correct_label", "note",
                  "created_at", "updated_at", "revisions"]
        read_only_fields = fields


class FeedbackInputSerializer(serializers.Serializer):
    agrees = serializers.BooleanField()
    correct_label = serializers.ChoiceField(choices=CorrectLabel.choices, required=False, allow_blank=True)
    note = serializers.CharField(required=False, allow_blank=True, max_length=4000)


class AlertSerializer(serializers.ModelSerializer):
    accession_number = serializers.CharField(source="study.accession_number", read_only=True)
    acknowledged_by = serializers.CharField(source="acknowledged_by.username", read_only=True, default=None)
    withdrawn_by = serializers.CharField(source="withdrawn_by.username", read_only=True, default=None)
    state = serializers.CharField(read_only=True)

    class Meta:
        model = Alert
        fields = ["id", "study_id", "accession_number", "prediction_id", "covid_probability", "covid_threshold",
                  "state", "created_at", "acknowledged_by", "acknowledged_at", "withdrawn_by", "withdrawn_at"]
        read_only_fields = fields


class AgreementSerializer(serializers.Serializer):
    model_version_id = serializers.IntegerField(source="model_version.id")
    model_version = serializers.CharField()
    feedback_count = serializers.IntegerField()
    agree_count = serializers.IntegerField()
    agreement_rate = serializers.FloatField(allow_null=True)

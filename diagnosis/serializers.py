from django.conf import settings
from rest_framework import serializers

from .models import ModelVersion, Patient, Prediction, Sex, Study, ViewPosition


class PatientSerializer(serializers.ModelSerializer):
    class Meta:
        model = Patient
        fields = ["id", "mrn", "name", "birth_date", "sex", "created_at"]
        read_only_fields = ["id", "created_at"]
        extra_kwargs = {"mrn": {"validators": []}}  # uniqueness is checked by the service, with a clear message


class ModelVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = [
            "id", "name", "version", "architecture", "status", "file_sha256", "input_size",
            "class_names", "temperature", "covid_threshold", "metrics", "created_at", "activated_at",
        ]
        read_only_fields = fields


class PredictionSerializer(serializers.ModelSerializer):
    model_version = ModelVersionSerializer(read_only=True)
    predicted_display = serializers.CharField(read_only=True)
    disclaimer = serializers.SerializerMethodField()

    class Meta:
        model = Prediction
        fields = [
            "id", "predicted_label", "predicted_display", "probabilities", "raw_probabilities",
            "covid_probability", "covid_threshold", "covid_alert", "inference_ms", "model_version",
            "created_at", "disclaimer",
        ]
        read_only_fields = fields

    def get_disclaimer(self, prediction) -> str:
        return settings.CLINICAL_DISCLAIMER


class StudySerializer(serializers.ModelSerializer):
    patient = PatientSerializer(read_only=True)
    prediction = serializers.SerializerMethodField()
    image_format = serializers.CharField(source="image.format", read_only=True)
    image_width = serializers.IntegerField(source="image.width", read_only=True)
    image_height = serializers.IntegerField(source="image.height", read_only=True)

    class Meta:
        model = Study
        fields = [
            "id", "accession_number", "patient", "view_position", "acquisition_date", "status",
            "attempt_count", "error_message", "original_filename", "image_format", "image_width",
            "image_height", "created_at", "completed_at", "prediction",
        ]
        read_only_fields = fields

    def get_prediction(self, study) -> dict | None:
        predictions = list(study.predictions.all())
        return PredictionSerializer(predictions[0]).data if predictions else None


class StudyUploadSerializer(serializers.Serializer):
    patient = serializers.IntegerField(help_text="Patient id")
    file = serializers.FileField(help_text="PNG, JPEG or DICOM chest X-ray")
    accession_number = serializers.CharField(max_length=64, required=False, allow_blank=True)
    view_position = serializers.ChoiceField(choices=ViewPosition.choices, required=False, allow_blank=True)
    acquisition_date = serializers.DateField(required=False, allow_null=True)

    def validate_file(self, upload):
        if upload.size == 0:
            raise serializers.ValidationError("The file is empty.")
        if upload.size > settings.MAX_UPLOAD_BYTES:
            raise serializers.ValidationError(f"The file is larger than {settings.MAX_UPLOAD_BYTES // (1024 * 1024)} MB.")
        return upload


__all__ = ["PatientSerializer", "StudySerializer", "StudyUploadSerializer", "PredictionSerializer", "Sex"]

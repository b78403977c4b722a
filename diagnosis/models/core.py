from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from ml.serving.labels import CLASS_NAMES, DISPLAY_NAMES
from ml.serving.monitoring import ALARM

from ..texts import (
    RESULT_VOIDING_WARNINGS,
    class_display_name,
    result_warning_label,
    result_warning_message,
    site_not_validated_notice,
)
from ..validators import validate_accession_number


class Sex(models.TextChoices):
    FEMALE = "F", _("Female")
    MALE = "M", _("Male")
    OTHER = "O", _("Other")
    UNKNOWN = "U", _("Unknown")


class Patient(models.Model):
    mrn = models.CharField("MRN", max_length=64, unique=True, help_text="Medical record number")
    name = models.CharField(max_length=200)
    birth_date = models.DateField(null=True, blank=True)
    sex = models.CharField(max_length=1, choices=Sex.choices, default=Sex.UNKNOWN)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "mrn"]

    def __str__(self) -> str:
        return f"{self.name} ({self.mrn})"


class StoredImage(models.Model):
    """An uploaded file, stored once under its SHA-256; the client's filename is only data."""

    sha256 = models.CharField(max_length=64, unique=True)
    format = models.CharField(max_length=8)  # PNG | JPEG | DICOM
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size_bytes = models.PositiveBigIntegerField()
    colour_share = models.FloatField(
        null=True, blank=True,
        help_text="Share of the upload's pixels that are clearly coloured (None: a grey format); a colour picture "
                  "is probably not a radiograph",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.format} {self.width}x{self.height} {self.sha256[:12]}"


class ViewPosition(models.TextChoices):
    PA = "PA", "PA"
    AP = "AP", "AP"
    LATERAL = "LL", _("Lateral")
    UNKNOWN = "", _("Unknown")


class StudyStatus(models.TextChoices):
    RECEIVED = "received", _("Received")
    QUEUED = "queued", _("Queued")
    PROCESSING = "processing", _("Processing")
    COMPLETED = "completed", _("Completed")
    FAILED = "failed", _("Failed")


PENDING_STATUSES = (StudyStatus.RECEIVED, StudyStatus.QUEUED, StudyStatus.PROCESSING)


class StudySource(models.TextChoices):
    """How the film reached the portal."""

    UPLOAD = "upload", _("Upload")
    PACS = "pacs", "PACS"
    STOW = "stow", "DICOMweb"


class Study(models.Model):
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="studies")
    accession_number = models.CharField(max_length=64, unique=True, validators=[validate_accession_number])
    view_position = models.CharField(max_length=4, choices=ViewPosition.choices, blank=True)
    acquisition_date = models.DateField(null=True, blank=True)
    image = models.ForeignKey(StoredImage, on_delete=models.PROTECT, related_name="studies")
    original_filename = models.CharField(max_length=255, blank=True)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=16, choices=StudyStatus.choices, default=StudyStatus.RECEIVED, db_index=True)
    attempt_count = models.PositiveIntegerField(default=0)
    error_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=8, choices=StudySource.choices, default=StudySource.UPLOAD)
    # Received over DICOM: the instance's UID (a repeat is ignored) and its header without pixel data, in the
    # DICOM JSON model, from which results sent back to the PACS take the patient, study and reference.
    sop_instance_uid = models.CharField("SOP Instance UID", max_length=64, blank=True, default="")
    dicom_header = models.JSONField(default=dict, blank=True)
    # The worker holding a "processing" study renews this lease while it runs (settings.INFERENCE_LEASE_SECONDS);
    # once it lapses the worker is presumed gone and any delivery of the task, or the sweeper, takes the study over.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=200, blank=True, help_text="Worker and claim that hold the study")
    # A client's Idempotency-Key header on upload: a retry with the same key gets the same study back.
    idempotency_key = models.CharField(max_length=128, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "studies"
        constraints = [
            models.UniqueConstraint(
                fields=["uploaded_by", "idempotency_key"], condition=~Q(idempotency_key=""),
                name="study_idempotency_key_unique_per_user",
            ),
            models.UniqueConstraint(
                fields=["sop_instance_uid"], condition=~Q(sop_instance_uid=""), name="study_unique_sop_instance_uid"
            ),
        ]

    def __str__(self) -> str:
        return f"Study {self.accession_number}"

    @property
    def is_pending(self) -> bool:
        return self.status in PENDING_STATUSES

    # Predictions come newest first (Prediction.Meta.ordering); access.studies_for_user prefetches them.
    @property
    def latest_prediction(self) -> "Prediction | None":
        return next(iter(self.predictions.all()), None)

    @property
    def earlier_predictions(self) -> list["Prediction"]:
        """Results of earlier model versions, when a newer one re-ran the study."""
        return list(self.predictions.all())[1:]


class ModelVersionStatus(models.TextChoices):
    CANDIDATE = "candidate", _("Candidate")
    ACTIVE = "active", _("Active")
    RETIRED = "retired", _("Retired")


class ModelVersion(models.Model):
    name = models.CharField(max_length=100)
    version = models.CharField(max_length=50)
    artifact_path = models.CharField(max_length=500, help_text="Folder holding metadata.json and the model file")
    file_sha256 = models.CharField(max_length=64)
    architecture = models.CharField(max_length=100)
    class_names = models.JSONField()
    input_size = models.PositiveIntegerField()
    preprocessing = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict, blank=True)
    evaluation = models.JSONField(
        default=dict, blank=True,
        help_text="Held-out results from the artifact: its test split, leave-one-source-out runs and shortcut audit",
    )
    temperature = models.FloatField(default=1.0)
    covid_threshold = models.FloatField(null=True, blank=True)
    status = models.CharField(
        max_length=16, choices=ModelVersionStatus.choices, default=ModelVersionStatus.CANDIDATE, db_index=True
    )
    registered_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    # The site monitor's last verdict (diagnosis.services.monitoring): "ok", "alarm", "too_few" or "" (never run).
    monitor_status = models.CharField(max_length=16, blank=True, default="")
    monitor_checked_at = models.DateTimeField(null=True, blank=True)
    monitor_alarms = models.JSONField(default=list, blank=True, help_text="The checks that alarmed, with their counts")
    # Site adaptation: the version it was adapted from, the version it replaced when activated (rollback
    # returns there), whether it runs silently on new studies, and its results on the locked site test part.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    previous_active = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    shadow = models.BooleanField(default=False)
    site_evaluation = models.JSONField(
        default=dict, blank=True,
        help_text="Results on the locked site test part (and the development test split), with the paired "
                  "comparison against the version active when it was evaluated",
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="model_version_unique_name_version"),
            models.UniqueConstraint(
                fields=["status"], condition=Q(status="active"), name="model_version_at_most_one_active"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def monitor_alarming(self) -> bool:
        return self.monitor_status == ALARM

    @property
    def site_validated(self) -> bool:
        """Evaluated on at least CXR_SITE_VALIDATION_MIN_FILMS of this site's films, every class among them."""
        evaluation = self.site_evaluation or {}
        counts = evaluation.get("class_counts") or {}
        return (evaluation.get("n", 0) >= settings.CXR_SITE_VALIDATION_MIN_FILMS
                and all(counts.get(name, 0) > 0 for name in CLASS_NAMES))

    @property
    def site_validation_notice(self) -> str:
        """What every result of this version says until it is validated at this site ("" once it is)."""
        return "" if self.site_validated else site_not_validated_notice()


class Prediction(models.Model):
    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="predictions")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="predictions")
    probabilities = models.JSONField(help_text="Calibrated probability per class name")
    raw_probabilities = models.JSONField(default=dict, help_text="Uncalibrated model output per class name")
    predicted_label = models.CharField(max_length=32, choices=[(name, DISPLAY_NAMES[name]) for name in CLASS_NAMES])
    covid_probability = models.FloatField()
    covid_threshold = models.FloatField(null=True, blank=True)
    covid_alert = models.BooleanField(default=False)
    inference_ms = models.FloatField()
    heatmap_sha256 = models.CharField(max_length=64, blank=True)
    heatmap_box = models.JSONField(
        default=dict, blank=True,
        help_text="Where on the film the heatmap lies: top, bottom, left, right as fractions of its height and width "
                  "(empty: an older heatmap, the model input with the heatmap blended in)",
    )
    warnings = models.JSONField(
        default=list, blank=True, help_text="Codes of what makes this result less reliable (e.g. lungs_not_found)"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["study", "model_version"], name="prediction_unique_per_study_and_model"),
        ]

    def __str__(self) -> str:
        return f"{self.study} -> {self.predicted_label}"

    @property
    def predicted_display(self) -> str:
        return class_display_name(self.predicted_label)

    def warning_messages(self) -> list[str]:
        return [result_warning_message(code) for code in self.warnings or []]

    def warning_badges(self) -> list[dict]:
        return [{"label": result_warning_label(code), "message": result_warning_message(code),
                 "voids_result": code in RESULT_VOIDING_WARNINGS}
                for code in self.warnings or []]

    @property
    def voided(self) -> bool:
        """A warning says to ignore this result (e.g. the upload is not a radiograph)."""
        return any(code in RESULT_VOIDING_WARNINGS for code in self.warnings or [])

    def probability_rows(self) -> list[dict]:
        return [
            {"name": name, "display": class_display_name(name), "probability": self.probabilities.get(name, 0.0)}
            for name in CLASS_NAMES
        ]

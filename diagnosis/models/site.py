"""The site's own labelled films and what adapting the model to them produced.

A study is *confirmed* when the site knows its class: an imported labelled film
(``SiteLabel``, confirmed by the importing user) or a study whose latest
clinician feedback names a class (``diagnosis.selectors.confirmed_site_films``).
"""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from ml.serving.labels import CLASS_NAMES, DISPLAY_NAMES

LABEL_CHOICES = [(name, DISPLAY_NAMES[name]) for name in CLASS_NAMES]


class JobStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    DONE = "done", _("Done")
    FAILED = "failed", _("Failed")


class LabelImport(models.Model):
    """One bulk import of labelled films, with its progress and the files it skipped."""

    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    root = models.CharField(max_length=500)
    manifest = models.CharField(max_length=500, blank=True)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True, help_text="Files skipped, each with the reason")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Import {self.pk} of {self.root}"


class SiteLabel(models.Model):
    """The class of an imported study, confirmed by the user who imported it."""

    study = models.OneToOneField("diagnosis.Study", on_delete=models.PROTECT, related_name="site_label")
    label = models.CharField(max_length=16, choices=LABEL_CHOICES)
    confirmed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    label_import = models.ForeignKey(LabelImport, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="labels")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.study}: {self.label}"


class AdaptationRun(models.Model):
    """One adaptation job: from the active version (its parent) to a registered candidate."""

    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    parent = models.ForeignKey("diagnosis.ModelVersion", on_delete=models.PROTECT, related_name="adaptations")
    candidate = models.ForeignKey("diagnosis.ModelVersion", null=True, blank=True, on_delete=models.PROTECT,
                                  related_name="+")
    steps = models.CharField(max_length=16, default="head")
    options = models.JSONField(default=dict, blank=True, help_text="Site weight, target sensitivity, ...")
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True)
    stage = models.CharField(max_length=200, blank=True)
    progress = models.FloatField(default=0.0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Adaptation {self.pk} of {self.parent}"


class ShadowPrediction(models.Model):
    """A shadow candidate's answer on a live study: stored for comparison, never shown to clinicians.

    Kept out of ``Prediction`` on purpose: nothing that shows, reports, alerts or orders the worklist reads
    this table, so a shadow result cannot leak into them.
    """

    study = models.ForeignKey("diagnosis.Study", on_delete=models.CASCADE, related_name="+")
    model_version = models.ForeignKey("diagnosis.ModelVersion", on_delete=models.PROTECT, related_name="+")
    probabilities = models.JSONField()
    predicted_label = models.CharField(max_length=16, choices=LABEL_CHOICES)
    covid_probability = models.FloatField()
    would_alert = models.BooleanField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["study", "model_version"], name="shadow_prediction_unique_per_study"),
        ]

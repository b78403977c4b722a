"""Clinician feedback on a prediction, with every edit kept.

A feedback row is what retraining learns from: it names the stored image (by its
SHA-256, through the study), the prediction and model version it judged, and the
label a clinician says is correct, in the same class names the model uses.
"""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from ml.serving.labels import DISPLAY_NAMES


class CorrectLabel(models.TextChoices):
    # The first three values are the model's class names (ml.labels.CLASS_NAMES), so a
    # dataset can be built from feedback without translation; "other" is never a training label.
    COVID = "covid", _("COVID-19")
    NORMAL = "normal", _("No findings")
    PNEUMONIA = "pneumonia", _("Pneumonia")
    OTHER = "other", _("Other or indeterminate")


assert set(DISPLAY_NAMES) <= set(CorrectLabel.values)


class Feedback(models.Model):
    """One clinician's current judgement of one prediction (edits go to FeedbackRevision)."""

    study = models.ForeignKey("diagnosis.Study", on_delete=models.PROTECT, related_name="feedback")
    prediction = models.ForeignKey("diagnosis.Prediction", on_delete=models.PROTECT, related_name="feedback")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    agrees = models.BooleanField(help_text=_("Whether the clinician agrees with the model's predicted label"))
    correct_label = models.CharField(max_length=16, choices=CorrectLabel.choices)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        verbose_name_plural = "feedback"
        constraints = [
            models.UniqueConstraint(fields=["prediction", "author"], name="feedback_one_per_prediction_and_author"),
        ]

    def __str__(self) -> str:
        return f"{self.author} on {self.prediction}: {self.correct_label}"


class FeedbackRevision(models.Model):
    """An immutable snapshot written on every create and edit: who, when, and what changed."""

    feedback = models.ForeignKey(Feedback, on_delete=models.PROTECT, related_name="revisions")
    number = models.PositiveIntegerField()
    edited_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    edited_at = models.DateTimeField(auto_now_add=True)
    agrees = models.BooleanField()
    correct_label = models.CharField(max_length=16, choices=CorrectLabel.choices)
    note = models.TextField(blank=True)
    changes = models.JSONField(default=dict, help_text=_("Field name -> [before, after]; empty on the first revision"))

    class Meta:
        ordering = ["feedback", "number"]
        constraints = [
            models.UniqueConstraint(fields=["feedback", "number"], name="feedback_revision_unique_number"),
        ]

    def __str__(self) -> str:
        return f"Revision {self.number} of feedback {self.feedback_id}"

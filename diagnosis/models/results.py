"""Results sent out of the portal: to the PACS (DICOM SR, Secondary Capture) and the EHR (FHIR), one row per attempt."""

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from .alerts import DeliveryOutcome


class ResultDestination(models.TextChoices):
    PACS_REPORT = "pacs_sr", "PACS: DICOM SR"
    PACS_IMAGE = "pacs_sc", "PACS: Secondary Capture"
    EHR = "fhir", "EHR: FHIR DiagnosticReport"


class ResultDelivery(models.Model):
    """One attempt to send one revision of a prediction's result to one destination; written before, finished after.

    Revision 1 is the model's result; each clinician correction makes a new revision (FHIR status "amended").
    """

    prediction = models.ForeignKey("diagnosis.Prediction", on_delete=models.PROTECT, related_name="result_deliveries")
    destination = models.CharField(max_length=8, choices=ResultDestination.choices)
    revision = models.PositiveIntegerField(default=1)
    attempt = models.PositiveIntegerField()
    outcome = models.CharField(max_length=16, choices=DeliveryOutcome.choices, default=DeliveryOutcome.STARTED)
    detail = models.TextField(blank=True)
    response_status = models.PositiveIntegerField(null=True, blank=True, help_text=_("HTTP or DIMSE status"))
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        verbose_name_plural = "result deliveries"
        constraints = [
            models.UniqueConstraint(fields=["prediction", "destination", "revision", "attempt"],
                                    name="result_delivery_unique_attempt"),
            # Once a revision has reached a destination, nothing sends it there again.
            models.UniqueConstraint(fields=["prediction", "destination", "revision"], condition=Q(outcome="succeeded"),
                                    name="result_delivery_one_success_per_revision"),
        ]

    def __str__(self) -> str:
        return f"{self.destination} revision {self.revision} attempt {self.attempt} for prediction {self.prediction_id}"

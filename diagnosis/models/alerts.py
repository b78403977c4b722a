"""COVID-19 alerts: at most one per study (a database constraint), and a record of every delivery attempt."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from ..texts import alert_meaning, alert_state_text, alert_under_other_class


class Alert(models.Model):
    """Raised in the transaction that stores a prediction at or above the model's COVID-19 threshold."""

    study = models.OneToOneField("diagnosis.Study", on_delete=models.PROTECT, related_name="alert")
    prediction = models.ForeignKey("diagnosis.Prediction", on_delete=models.PROTECT, related_name="alerts")
    covid_probability = models.FloatField()
    covid_threshold = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    # Set when a clinician records that the prediction is wrong: the alert stops alerting.
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    withdrawn_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(acknowledged_at__isnull=True) | Q(acknowledged_by__isnull=False),
                name="alert_acknowledgement_names_a_clinician",
            ),
        ]

    def __str__(self) -> str:
        return f"COVID-19 alert for study {self.study_id}"

    @property
    def is_open(self) -> bool:
        return self.acknowledged_at is None and self.withdrawn_at is None

    @property
    def state(self) -> str:
        if self.withdrawn_at is not None:
            return "withdrawn"
        if self.acknowledged_at is not None:
            return "acknowledged"
        return "open"

    def other_class_explanation(self) -> str | None:
        """Why this alert stands under a result that is not COVID-19 (None when the result is COVID-19)."""
        return alert_under_other_class(predicted_label=self.prediction.predicted_label,
                                       covid_probability=self.covid_probability, covid_threshold=self.covid_threshold)

    def state_text(self) -> str:
        return alert_state_text(self)

    def meaning(self) -> str | None:
        """What this alert means, from the validation figures of the version that raised it (a newer model's
        result never raises a second alert, so that may be an earlier prediction's version)."""
        model_version = self.prediction.model_version
        texts = [text for text in (alert_meaning(model_version.metrics), model_version.site_validation_notice) if text]
        return " ".join(texts) or None


class AlertChannel(models.TextChoices):
    IN_APP = "in_app", _("In-app")
    EMAIL = "email", _("E-mail")
    WEBHOOK = "webhook", _("Webhook")


class DeliveryOutcome(models.TextChoices):
    STARTED = "started", _("Started")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")
    # A worker died between starting the attempt and recording its outcome.
    INTERRUPTED = "interrupted", _("Interrupted")
    SKIPPED = "skipped", _("Skipped")


class AlertDelivery(models.Model):
    """One attempt to deliver one alert over one channel, written before the attempt and finished after."""

    alert = models.ForeignKey(Alert, on_delete=models.PROTECT, related_name="deliveries")
    channel = models.CharField(max_length=16, choices=AlertChannel.choices)
    attempt = models.PositiveIntegerField()
    outcome = models.CharField(max_length=16, choices=DeliveryOutcome.choices, default=DeliveryOutcome.STARTED)
    detail = models.TextField(blank=True)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        verbose_name_plural = "alert deliveries"
        constraints = [
            models.UniqueConstraint(fields=["alert", "channel", "attempt"], name="alert_delivery_unique_attempt"),
            # Once a channel has delivered, nothing delivers on it again.
            models.UniqueConstraint(
                fields=["alert", "channel"], condition=Q(outcome="succeeded"), name="alert_delivery_one_success_per_channel"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} attempt {self.attempt} for alert {self.alert_id}: {self.outcome}"

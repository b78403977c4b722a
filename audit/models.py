from django.conf import settings
from django.db import models


class Outcome(models.TextChoices):
    SUCCESS = "success", "Success"
    DENIED = "denied", "Denied"
    FAILED = "failed", "Failed"


class AuditEvent(models.Model):
    """One thing that happened, append-only and chained to the event before it by a keyed hash (HMAC).

    PostgreSQL refuses UPDATE and DELETE on this table (see the migration's trigger), the application's
    database role may only INSERT and SELECT, and ``manage.py audit_anchor`` writes the chain's head to
    a file outside the database. ``manage.py audit_verify`` recomputes the chain against the anchors.
    """

    sequence = models.BigIntegerField(unique=True, editable=False)
    created_at = models.DateTimeField(editable=False)
    # No database constraint and no cascade: deleting a user must not UPDATE audit rows, which the
    # application's database role may not do (docs/operations.md, "Database roles").
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False,
        related_name="+",
    )
    actor_username = models.CharField(max_length=150, blank=True)
    actor_role = models.CharField(max_length=32, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    patient_identifier = models.CharField(max_length=64, blank=True, db_index=True)
    study_identifier = models.CharField(max_length=64, blank=True, db_index=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.SUCCESS)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    details = models.JSONField(default=dict, blank=True)
    previous_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["-sequence"]
        indexes = [models.Index(fields=["created_at"]), models.Index(fields=["actor_username"])]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action} by {self.actor_username or 'system'} ({self.outcome})"

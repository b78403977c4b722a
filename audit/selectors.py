import datetime
from dataclasses import dataclass

from django.db.models import Prefetch, Q, QuerySet

from .models import AuditEvent
from .services import GENESIS_HASH, compute_event_hash


@dataclass(frozen=True)
class ChainVerification:
    checked: int
    first_broken_sequence: int | None
    reason: str

    @property
    def valid(self) -> bool:
        return self.first_broken_sequence is None


def audit_chain_verify() -> ChainVerification:
    """Recompute every hash in sequence order and name the first event that does not fit."""
    previous_hash = GENESIS_HASH
    expected_sequence = 1
    checked = 0
    for event in AuditEvent.objects.order_by("sequence").iterator(chunk_size=2000):
        if event.sequence != expected_sequence:
            return ChainVerification(checked, event.sequence, f"expected event #{expected_sequence}, found #{event.sequence} (an event was removed or reordered)")
        if event.previous_hash != previous_hash:
            return ChainVerification(checked, event.sequence, "its previous_hash does not match the event before it")
        if compute_event_hash(event) != event.hash:
            return ChainVerification(checked, event.sequence, "its content does not match its hash (it was edited)")
        previous_hash = event.hash
        expected_sequence += 1
        checked += 1
    return ChainVerification(checked, None, "")


def _day_range(queryset: QuerySet, field: str, date_from: datetime.date | None, date_to: datetime.date | None) -> QuerySet:
    if date_from:
        queryset = queryset.filter(**{f"{field}__gte": datetime.datetime.combine(date_from, datetime.time.min, datetime.UTC)})
    if date_to:
        end = datetime.datetime.combine(date_to + datetime.timedelta(days=1), datetime.time.min, datetime.UTC)
        queryset = queryset.filter(**{f"{field}__lt": end})
    return queryset


def audit_events_filtered(*, user: str = "", patient: str = "", action: str = "", outcome: str = "",
                          date_from: datetime.date | None = None, date_to: datetime.date | None = None) -> QuerySet[AuditEvent]:
    """Newest first. Callers check the reader's capability (audit.views) and audit the read."""
    events = AuditEvent.objects.order_by("-sequence")
    if user:
        events = events.filter(actor_username=user)
    if patient:
        events = events.filter(patient_identifier=patient)
    if action:
        events = events.filter(action__startswith=action) if action.endswith(".") else events.filter(action=action)
    if outcome:
        events = events.filter(outcome=outcome)
    return _day_range(events, "created_at", date_from, date_to)


def prediction_history_filtered(*, user: str = "", patient: str = "", model: str = "", alert: str = "",
                                date_from: datetime.date | None = None, date_to: datetime.date | None = None):
    """Every prediction with its model version, probabilities, threshold, clinician feedback and alerts."""
    from diagnosis.models import Alert, Feedback, Prediction

    predictions = (
        Prediction.objects.select_related("study__patient", "study__uploaded_by", "model_version")
        .prefetch_related(
            Prefetch("feedback", queryset=Feedback.objects.select_related("author").order_by("created_at")),
            Prefetch("alerts", queryset=Alert.objects.select_related("acknowledged_by", "withdrawn_by").order_by("created_at")),
        )
        .order_by("-created_at", "-id")
    )
    if user:
        predictions = predictions.filter(study__uploaded_by__username=user)
    if patient:
        predictions = predictions.filter(study__patient__mrn=patient)
    if model:
        predictions = predictions.filter(Q(model_version__name__icontains=model) | Q(model_version__version=model))
    if alert == "yes":
        predictions = predictions.filter(covid_alert=True)
    elif alert == "no":
        predictions = predictions.filter(covid_alert=False)
    return _day_range(predictions, "created_at", date_from, date_to)

"""Diagnosis models, split by subject and re-exported here (``from diagnosis.models import Study``)."""

from .alerts import Alert, AlertChannel, AlertDelivery, DeliveryOutcome
from .core import (
    PENDING_STATUSES,
    ModelVersion,
    ModelVersionStatus,
    Patient,
    Prediction,
    Sex,
    StoredImage,
    Study,
    StudySource,
    StudyStatus,
    ViewPosition,
)
from .feedback import CorrectLabel, Feedback, FeedbackRevision
from .operations import WorkerHeartbeat
from .results import ResultDelivery, ResultDestination
from .site import AdaptationRun, JobStatus, LabelImport, ShadowPrediction, SiteLabel

__all__ = [
    "AdaptationRun", "JobStatus", "LabelImport", "ShadowPrediction", "SiteLabel",
    "Alert", "AlertChannel", "AlertDelivery", "CorrectLabel", "DeliveryOutcome", "Feedback", "FeedbackRevision",
    "ModelVersion", "ModelVersionStatus", "PENDING_STATUSES", "Patient", "Prediction", "Sex", "StoredImage", "Study",
    "StudySource", "StudyStatus", "ViewPosition", "ResultDelivery", "ResultDestination", "WorkerHeartbeat",
]

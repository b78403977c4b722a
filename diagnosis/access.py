"""The one door to patient data (Zulip's access_*_by_* pattern).

Every view and API endpoint fetches patients, studies, predictions and images
through these functions. Each checks the user's capability (accounts.roles),
denies by default, and writes the read (or the refused attempt) to the audit trail.
"""

from django.db.models import Prefetch, QuerySet
from django.http import Http404
from django.utils.translation import gettext as _

from accounts.access import require_capability
from accounts.roles import Capability, user_can
from audit.services import audit_record

from .models import Alert, AlertDelivery, Patient, Prediction, Study


def require_model_oversight(*, user, action: str) -> None:
    """Model versions and how they perform here: administrators manage them, auditors review them."""
    if user_can(user, Capability.MANAGE_MODELS) or user_can(user, Capability.VIEW_AUDIT):
        return
    require_capability(user=user, capability=Capability.MANAGE_MODELS, action=action)


def patients_for_user(*, user) -> QuerySet[Patient]:
    require_capability(user=user, capability=Capability.VIEW_CLINICAL, action="patient.list")
    return Patient.objects.all()


def studies_for_user(*, user) -> QuerySet[Study]:
    require_capability(user=user, capability=Capability.VIEW_CLINICAL, action="study.list")
    latest_predictions = Prediction.objects.select_related("model_version").order_by("-created_at")
    # The alert's prediction and version too: Alert.meaning() reads them for every alerted row.
    return Study.objects.select_related(
        "patient", "image", "uploaded_by", "alert__prediction__model_version"
    ).prefetch_related(
        Prefetch("predictions", queryset=latest_predictions)
    )


def patient_get_for_user(*, user, patient_id: int, action: str = "patient.view") -> Patient:
    require_capability(user=user, capability=Capability.VIEW_CLINICAL, action=action)
    try:
        patient = Patient.objects.get(id=patient_id)
    except (Patient.DoesNotExist, ValueError, TypeError):
        raise Http404(_("No such patient.")) from None
    audit_record(actor=user, action=action, target=patient, patient=patient)
    return patient


def study_get_for_user(*, user, study_id: int, action: str = "study.view") -> Study:
    require_capability(user=user, capability=Capability.VIEW_CLINICAL, action=action)
    try:
        study = studies_for_user(user=user).get(id=study_id)
    except (Study.DoesNotExist, ValueError, TypeError):
        raise Http404(_("No such study.")) from None
    audit_record(actor=user, action=action, target=study, study=study)
    return study


def patient_for_upload(*, user, patient_id: int) -> Patient:
    """The patient a new study is uploaded for; needs the right to change clinical records."""
    require_capability(user=user, capability=Capability.EDIT_CLINICAL, action="study.upload")
    try:
        return Patient.objects.get(id=patient_id)
    except (Patient.DoesNotExist, ValueError, TypeError):
        raise Http404(_("No such patient.")) from None


def prediction_for_feedback(*, user, study_id: int) -> tuple[Study, Prediction]:
    """The study's latest prediction, which a clinician's feedback judges; needs the right to change clinical records."""
    require_capability(user=user, capability=Capability.EDIT_CLINICAL, action="feedback.record")
    try:
        study = studies_for_user(user=user).get(id=study_id)
    except (Study.DoesNotExist, ValueError, TypeError):
        raise Http404(_("No such study.")) from None
    predictions = list(study.predictions.all())
    if not predictions:
        raise Http404(_("This study has no prediction to give feedback on."))
    return study, predictions[0]


def alerts_for_user(*, user) -> QuerySet[Alert]:
    require_capability(user=user, capability=Capability.VIEW_CLINICAL, action="alert.list")
    return Alert.objects.all()


def alert_for_acknowledgement(*, user, alert_id: int) -> Alert:
    require_capability(user=user, capability=Capability.EDIT_CLINICAL, action="alert.acknowledge")
    try:
        return Alert.objects.select_related("study__patient").get(id=alert_id)
    except (Alert.DoesNotExist, ValueError, TypeError):
        raise Http404(_("No such alert.")) from None


def alert_deliveries_for_user(*, user) -> QuerySet[AlertDelivery]:
    """Delivery attempts, for administrators who run the system: no patient data is joined in."""
    require_capability(user=user, capability=Capability.MANAGE_USERS, action="alert_delivery.list")
    return AlertDelivery.objects.only(
        "id", "alert_id", "channel", "attempt", "outcome", "detail", "response_status", "started_at", "finished_at"
    )

"""The one door to patient data (Zulip's access_*_by_* pattern).

Every view and API endpoint fetches patients, studies, predictions and images
through these functions. Each checks the user's capability (accounts.roles),
denies by default, and writes the read (or the refused attempt) to the audit trail.
"""

from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch, QuerySet
from django.http import Http404

from accounts.roles import Capability, user_can
from audit.models import Outcome
from audit.services import audit_record

from .models import Patient, Prediction, Study


def require_capability(*, user, capability: Capability, action: str, target=None) -> None:
    if user_can(user, capability):
        return
    if getattr(user, "is_authenticated", False):
        audit_record(actor=user, action=action, target=target, outcome=Outcome.DENIED,
                     details={"required": capability.value})
    raise PermissionDenied("Your role does not allow this.")


def patients_for_user(*, user) -> QuerySet[Patient]:
    require_capability(user=user, capability=Capability.VIEW_CLINICAL, action="patient.list")
    return Patient.objects.all()


def studies_for_user(*, user) -> QuerySet[Study]:
    require_capability(user=user, capability=Capability.VIEW_CLINICAL, action="study.list")
    latest_predictions = Prediction.objects.select_related("model_version").order_by("-created_at")
    return Study.objects.select_related("patient", "image", "uploaded_by").prefetch_related(
        Prefetch("predictions", queryset=latest_predictions)
    )


def patient_get_for_user(*, user, patient_id: int, action: str = "patient.view") -> Patient:
    require_capability(user=user, capability=Capability.VIEW_CLINICAL, action=action)
    try:
        patient = Patient.objects.get(id=patient_id)
    except (Patient.DoesNotExist, ValueError, TypeError):
        raise Http404("No such patient.") from None
    audit_record(actor=user, action=action, target=patient, patient=patient)
    return patient


def study_get_for_user(*, user, study_id: int, action: str = "study.view") -> Study:
    require_capability(user=user, capability=Capability.VIEW_CLINICAL, action=action)
    try:
        study = studies_for_user(user=user).get(id=study_id)
    except (Study.DoesNotExist, ValueError, TypeError):
        raise Http404("No such study.") from None
    audit_record(actor=user, action=action, target=study, study=study)
    return study


def patient_for_upload(*, user, patient_id: int) -> Patient:
    """The patient a new study is uploaded for; needs the right to change clinical records."""
    require_capability(user=user, capability=Capability.EDIT_CLINICAL, action="study.upload")
    try:
        return Patient.objects.get(id=patient_id)
    except (Patient.DoesNotExist, ValueError, TypeError):
        raise Http404("No such patient.") from None

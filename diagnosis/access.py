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
from audit.models import Outcome
from audit.services import audit_read_many, audit_record, query_for_audit

from .models import Alert, AlertDelivery, Patient, Prediction, ResultDelivery, Study


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
    # The alert's prediction and version too: Alert.meaning() reads them for every alerted row; and who
    # acknowledged or withdrew it, which its state text names.
    return Study.objects.select_related(
        "patient", "image", "uploaded_by", "alert__prediction__model_version", "alert__acknowledged_by",
        "alert__withdrawn_by",
    ).prefetch_related(
        Prefetch("predictions", queryset=latest_predictions)
    )


def studies_read_record(*, user, action: str, query, studies) -> None:
    """Audit a list, search or export of studies: the query parameters and every study and patient returned."""
    studies = list(studies)
    audit_read_many(actor=user, action=action, query=query_for_audit(query),
                    study_identifiers=[study.accession_number for study in studies],
                    patient_identifiers=[study.patient.mrn for study in studies])


def patients_read_record(*, user, action: str, query, patients) -> None:
    audit_read_many(actor=user, action=action, query=query_for_audit(query),
                    patient_identifiers=[patient.mrn for patient in patients])


def _not_found(*, user, action: str, kind: str, requested) -> Http404:
    """A probe for a record that does not exist leaves a trace too (a failed read), then answers 404."""
    audit_record(actor=user, action=action, outcome=Outcome.FAILED,
                 details={"reason": "not_found", kind: str(requested)[:64]})
    messages = {"patient_id": _("No such patient."), "study_id": _("No such study."), "alert_id": _("No such alert.")}
    return Http404(messages[kind])


def patient_get_for_user(*, user, patient_id: int, action: str = "patient.view") -> Patient:
    require_capability(user=user, capability=Capability.VIEW_CLINICAL, action=action)
    try:
        patient = Patient.objects.get(id=patient_id)
    except (Patient.DoesNotExist, ValueError, TypeError):
        raise _not_found(user=user, action=action, kind="patient_id", requested=patient_id) from None
    audit_record(actor=user, action=action, target=patient, patient=patient)
    return patient


def study_get_for_user(*, user, study_id: int, action: str = "study.view") -> Study:
    require_capability(user=user, capability=Capability.VIEW_CLINICAL, action=action)
    try:
        study = studies_for_user(user=user).get(id=study_id)
    except (Study.DoesNotExist, ValueError, TypeError):
        raise _not_found(user=user, action=action, kind="study_id", requested=study_id) from None
    audit_record(actor=user, action=action, target=study, study=study)
    return study


def patient_for_upload(*, user, patient_id: int) -> Patient:
    """The patient a new study is uploaded for; needs the right to change clinical records."""
    require_capability(user=user, capability=Capability.EDIT_CLINICAL, action="study.upload")
    try:
        return Patient.objects.get(id=patient_id)
    except (Patient.DoesNotExist, ValueError, TypeError):
        raise _not_found(user=user, action="study.upload", kind="patient_id", requested=patient_id) from None


def prediction_for_feedback(*, user, study_id: int) -> tuple[Study, Prediction]:
    """The study's latest prediction, which a clinician's feedback judges; needs the right to change clinical records."""
    require_capability(user=user, capability=Capability.EDIT_CLINICAL, action="feedback.record")
    try:
        study = studies_for_user(user=user).get(id=study_id)
    except (Study.DoesNotExist, ValueError, TypeError):
        raise _not_found(user=user, action="feedback.record", kind="study_id", requested=study_id) from None
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
        raise _not_found(user=user, action="alert.acknowledge", kind="alert_id", requested=alert_id) from None


def result_deliveries_for_user(*, user) -> QuerySet[ResultDelivery]:
    """Attempts to send results to the PACS and the EHR, for administrators: no patient data is joined in."""
    require_capability(user=user, capability=Capability.MANAGE_USERS, action="result_delivery.list")
    return ResultDelivery.objects.only(
        "id", "prediction_id", "destination", "revision", "attempt", "outcome", "detail", "response_status",
        "started_at", "finished_at",
    )


def alert_deliveries_for_user(*, user) -> QuerySet[AlertDelivery]:
    """Delivery attempts, for administrators who run the system: no patient data is joined in."""
    require_capability(user=user, capability=Capability.MANAGE_USERS, action="alert_delivery.list")
    return AlertDelivery.objects.only(
        "id", "alert_id", "channel", "attempt", "outcome", "detail", "response_status", "started_at", "finished_at"
    )

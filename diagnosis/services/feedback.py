"""Clinician feedback: agree or disagree with a prediction, the correct label and a note; every edit kept."""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from audit.services import audit_record
from diagnosis.models import CorrectLabel, Feedback, FeedbackRevision, Prediction, StudyStatus

from .alerts import alert_withdraw_for_prediction
from .results import results_amend_for_feedback

TRACKED_FIELDS = ("agrees", "correct_label", "note")


def _validate(*, prediction: Prediction, agrees: bool, correct_label: str) -> str:
    if prediction.study.status != StudyStatus.COMPLETED:
        raise ValidationError(_("Feedback can be recorded only on a completed study."), code="study_not_completed")
    if agrees and not correct_label:
        correct_label = prediction.predicted_label
    if correct_label not in CorrectLabel.values:
        raise ValidationError({"correct_label": ValidationError(_("Choose the correct label."), code="label_missing")})
    if agrees and correct_label != prediction.predicted_label:
        raise ValidationError({"correct_label": ValidationError(
            _("You agree with the model, so the correct label is the predicted one."), code="label_contradicts_agreement")})
    if not agrees and correct_label == prediction.predicted_label:
        raise ValidationError({"correct_label": ValidationError(
            _("You disagree with the model: choose a label other than the predicted one."),
            code="label_contradicts_disagreement")})
    return correct_label


def feedback_record(*, author, prediction: Prediction, agrees: bool, correct_label: str = "", note: str = "") -> Feedback:
    """Create the author's feedback on a prediction, or edit it; write a revision and an audit event either way.

    Marking an alerting prediction as wrong (a correct label other than COVID-19) withdraws its alert.
    """
    correct_label = _validate(prediction=prediction, agrees=agrees, correct_label=correct_label)
    note = (note or "").strip()
    with transaction.atomic():
        feedback = (
            Feedback.objects.select_for_update().filter(prediction=prediction, author=author).first()
        )
        new_values = {"agrees": agrees, "correct_label": correct_label, "note": note}
        if feedback is None:
            feedback = Feedback.objects.create(study=prediction.study, prediction=prediction, author=author, **new_values)
            changes: dict = {}
            action = "feedback.create"
            number = 1
        else:
            changes = {
                field: [getattr(feedback, field), value]
                for field, value in new_values.items()
                if getattr(feedback, field) != value
            }
            if not changes:
                return feedback
            for field, value in new_values.items():
                setattr(feedback, field, value)
            feedback.save(update_fields=[*TRACKED_FIELDS, "updated_at"])
            action = "feedback.edit"
            number = feedback.revisions.count() + 1
        FeedbackRevision.objects.create(feedback=feedback, number=number, edited_by=author, changes=changes, **new_values)
        audit_record(
            actor=author,
            action=action,
            target=feedback,
            study=prediction.study,
            details={"prediction_id": prediction.id, "model_version": str(prediction.model_version),
                     "revision": number, **new_values, "changes": changes},
        )
        if not agrees:
            results_amend_for_feedback(prediction=prediction)
        if correct_label != CorrectLabel.COVID:
            alert_withdraw_for_prediction(prediction=prediction, user=author,
                                          reason=f"Clinician feedback: correct label is {correct_label}.")
    return feedback

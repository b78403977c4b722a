"""Run the active model on a study. Safe to run twice: the database decides who does the work.

PostgreSQL is the source of truth for a study's state; the broker only rings the bell.
A task that arrives for a study that is not queued does nothing.
"""

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from audit.services import audit_record
from diagnosis.models import ModelVersion, Prediction, Study, StudyStatus
from ml.serving.imaging import ImageDecodeError, decode_image

from . import storage
from .alerts import alert_raise_for_prediction
from .model_registry import artifact_dir_for, model_version_active, same_operating_point

logger = logging.getLogger(__name__)


class InferenceRetry(Exception):
    """Inference failed but the study has attempts left; the task should retry later."""


@dataclass(frozen=True)
class InferenceOutcome:
    study_id: int
    status: str  # "completed" | "skipped" | "waiting_for_model" | "failed" | "retry"
    detail: str = ""


# One loaded model per worker process, keyed by the model file's SHA-256 and its artifact folder: two
# folders can hold the same model.tflite with different companions (one with a familiarity check).
_predictors: dict[tuple[str, str], object] = {}
_predictors_lock = threading.Lock()


def predictor_for(model_version: ModelVersion):
    artifact_dir = artifact_dir_for(model_version)
    key = (model_version.file_sha256, str(artifact_dir))
    with _predictors_lock:
        predictor = _predictors.get(key)
        if predictor is None:
            from ml.serving.predictor import Predictor

            predictor = Predictor.load(artifact_dir)
            if predictor.metadata.sha256 != model_version.file_sha256:
                raise RuntimeError(f"Model file of {model_version} changed since it was registered.")
            if not same_operating_point(model_version, predictor.metadata):
                # ml.recalibrate rewrites metadata.json in place: serving it would store another temperature and
                # threshold under this version's name.
                raise RuntimeError(
                    f"The artifact folder of {model_version} now holds another temperature or COVID-19 threshold "
                    f"(version {predictor.metadata.version}): register that version and activate it."
                )
            _predictors[key] = predictor
        return predictor


def study_enqueue(*, study_id: int) -> None:
    """Mark a study queued and ring the bell. Call after commit."""
    from diagnosis.tasks import run_inference

    Study.objects.filter(id=study_id, status=StudyStatus.RECEIVED).update(
        status=StudyStatus.QUEUED, queued_at=timezone.now()
    )
    run_inference.delay(study_id=study_id)


def studies_requeue_waiting() -> int:
    """Ring the bell again for every queued study (after a model is activated)."""
    from diagnosis.tasks import run_inference

    study_ids = list(
        Study.objects.filter(status__in=[StudyStatus.RECEIVED, StudyStatus.QUEUED]).values_list("id", flat=True)
    )
    Study.objects.filter(id__in=study_ids, status=StudyStatus.RECEIVED).update(
        status=StudyStatus.QUEUED, queued_at=timezone.now()
    )
    for study_id in study_ids:
        run_inference.delay(study_id=study_id)
    return len(study_ids)


def studies_requeue_stale() -> int:
    """Re-queue studies whose message the broker lost or whose worker died mid-task."""
    from diagnosis.tasks import run_inference

    now = timezone.now()
    cutoff = now - settings.INFERENCE_STALE_AFTER
    stale_processing = Study.objects.filter(status=StudyStatus.PROCESSING, started_at__lt=cutoff)
    stale_processing.filter(attempt_count__gte=settings.INFERENCE_MAX_ATTEMPTS).update(
        status=StudyStatus.FAILED,
        error_message="The worker stopped responding on every attempt; the study was not classified.",
        completed_at=now,
    )
    revived = list(stale_processing.values_list("id", flat=True))
    Study.objects.filter(id__in=revived, status=StudyStatus.PROCESSING).update(status=StudyStatus.QUEUED, queued_at=now)
    lost = list(
        Study.objects.filter(
            Q(status=StudyStatus.RECEIVED, created_at__lt=cutoff) | Q(status=StudyStatus.QUEUED, queued_at__lt=cutoff)
        ).values_list("id", flat=True)
    )
    Study.objects.filter(id__in=lost, status=StudyStatus.RECEIVED).update(status=StudyStatus.QUEUED, queued_at=now)
    study_ids = sorted(set(revived) | set(lost))
    if model_version_active() is not None:
        for study_id in study_ids:
            run_inference.delay(study_id=study_id)
    return len(study_ids)


def _claim(study_id: int) -> bool:
    claimed = Study.objects.filter(id=study_id, status=StudyStatus.QUEUED).update(
        status=StudyStatus.PROCESSING,
        started_at=timezone.now(),
        attempt_count=F("attempt_count") + 1,
        error_message="",
    )
    # Nothing got updated: another delivery of this task got there first, or the study is done.
    return claimed == 1


def study_run_inference(*, study_id: int) -> InferenceOutcome:
    model_version = model_version_active()
    if model_version is None:
        return InferenceOutcome(study_id, "waiting_for_model", "No model is active; the study stays queued.")
    if not _claim(study_id):
        return InferenceOutcome(study_id, "skipped", "The study is not queued.")

    study = Study.objects.select_related("image", "patient").get(id=study_id)
    try:
        predictor = predictor_for(model_version)
        data = storage.blob_get(study.image.sha256, kind=storage.ORIGINAL)
        decoded = decode_image(data, max_pixels=settings.MAX_IMAGE_PIXELS, target_size=model_version.input_size)
        result = predictor.predict_one(decoded.pixels, with_heatmap=True, check_stability=True)
        heatmap_sha = ""
        if result.heatmap is not None:
            from ml.serving.gradcam import overlay_png

            heatmap_sha = storage.blob_put(
                overlay_png(result.model_input, result.heatmap),
                kind=storage.HEATMAP,
                digest=storage.sha256_hex(f"{study.image.sha256}:{model_version.file_sha256}".encode()),
            )
    except ImageDecodeError as error:
        # A stored image that no longer decodes will not get better on retry.
        return _fail(study, f"The stored image could not be decoded: {error}", retry=False)
    except Exception as error:  # noqa: BLE001 - any failure is recorded on the study, then retried or failed
        logger.exception("Inference failed for study %s", study_id)
        return _fail(study, f"Inference failed: {type(error).__name__}: {error}", retry=True)

    try:
        with transaction.atomic():
            prediction = Prediction.objects.create(
                study=study,
                model_version=model_version,
                probabilities={name: float(value) for name, value in result.probabilities.items()},
                raw_probabilities={name: float(value) for name, value in result.raw_probabilities.items()},
                predicted_label=result.label,
                covid_probability=float(result.covid_probability),
                covid_threshold=result.covid_threshold,
                covid_alert=bool(result.covid_alert),
                inference_ms=float(result.inference_ms),
                heatmap_sha256=heatmap_sha,
                warnings=list(result.warnings),
            )
            Study.objects.filter(id=study.id).update(status=StudyStatus.COMPLETED, completed_at=timezone.now())
            audit_record(
                action="prediction.create",
                username="worker",
                target=prediction,
                study=study,
                details={
                    "model_version": str(model_version),
                    "predicted_label": prediction.predicted_label,
                    "probabilities": prediction.probabilities,
                    "covid_threshold": prediction.covid_threshold,
                    "warnings": prediction.warnings,
                    # How far the film lies from the training films (ml.familiarity; None: the model has no check).
                    "familiarity_score": result.familiarity_score,
                },
            )
            # Same transaction: the prediction and its alert commit together; delivery is queued after commit.
            alert_raise_for_prediction(prediction=prediction)
    except IntegrityError:
        # The unique (study, model version) constraint: a prediction already exists, so this run is a duplicate.
        Study.objects.filter(id=study.id).update(status=StudyStatus.COMPLETED)
        return InferenceOutcome(study_id, "skipped", "A prediction from this model already exists.")
    return InferenceOutcome(study_id, "completed", prediction.predicted_label)


def _fail(study: Study, message: str, *, retry: bool) -> InferenceOutcome:
    attempts = Study.objects.values_list("attempt_count", flat=True).get(id=study.id)
    if retry and attempts < settings.INFERENCE_MAX_ATTEMPTS:
        Study.objects.filter(id=study.id, status=StudyStatus.PROCESSING).update(
            status=StudyStatus.QUEUED, queued_at=timezone.now(), error_message=message
        )
        return InferenceOutcome(study.id, "retry", message)
    with transaction.atomic():
        Study.objects.filter(id=study.id).update(
            status=StudyStatus.FAILED, error_message=message, completed_at=timezone.now()
        )
        audit_record(action="prediction.fail", username="worker", target=study, study=study, outcome="failed",
                     details={"error": message, "attempts": attempts})
    return InferenceOutcome(study.id, "failed", message)


def retry_delay(attempts: int) -> timedelta:
    return timedelta(seconds=min(300, 10 * 2 ** max(0, attempts - 1)))

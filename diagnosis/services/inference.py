"""Run the active model on a study. Safe to run twice: the database decides who does the work.

PostgreSQL is the source of truth for a study's state; the broker only rings the bell.
A task that arrives for a study another live worker holds waits for that worker's lease; one that arrives
for a finished study does nothing.

Claims are leases: the worker holding a "processing" study renews ``lease_expires_at`` every third of
settings.INFERENCE_LEASE while it runs. A worker that dies stops renewing, and once the lease lapses the next
delivery of the task (Celery redelivers at once when a pool process dies) or the sweeper takes the study over.
"""

import logging
import os
import socket
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from audit.services import audit_record
from diagnosis.models import ModelVersion, Prediction, Study, StudyStatus
from ml.serving.imaging import ImageDecodeError, decode_image

from . import storage
from .alerts import alert_raise_for_prediction
from .ingest import image_preview
from .results import results_enqueue_for_prediction
from .model_registry import artifact_dir_for, model_version_active, same_operating_point

logger = logging.getLogger(__name__)


# What PostgreSQL being down or restarting looks like to Django: the task retries, the study is not failed.
DATABASE_ERRORS = (OperationalError, InterfaceError)


@dataclass(frozen=True)
class InferenceOutcome:
    study_id: int
    # "completed" | "skipped" | "waiting_for_model" | "failed" | "retry" (after retry_delay)
    # | "held" (another live worker holds it: look again after retry_after_seconds)
    # | "database_unavailable" (retry soon, resuming this claim)
    status: str
    detail: str = ""
    claim: str = ""
    retry_after_seconds: float = 0.0


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


def study_enqueue(*, study_id: int) -> bool:
    """Mark a study queued and ring the bell. Call after commit. Never raises for a broker outage.

    If the bell cannot ring the study goes back to "received", and the sweeper rings again within
    settings.INFERENCE_RECEIVED_GRACE plus one sweep. Returns whether the broker took the message.
    """
    from diagnosis.tasks import run_inference

    Study.objects.filter(id=study_id, status=StudyStatus.RECEIVED).update(
        status=StudyStatus.QUEUED, queued_at=timezone.now()
    )
    try:
        run_inference.delay(study_id=study_id)
    except Exception:  # noqa: BLE001 - kombu, redis-py and socket errors alike: the study is stored, that is what counts
        logger.warning("Study %s stored but not queued: the broker is unavailable; the sweeper will queue it",
                       study_id, exc_info=True)
        Study.objects.filter(id=study_id, status=StudyStatus.QUEUED).update(status=StudyStatus.RECEIVED)
        return False
    return True


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


def _lapsed_claims(now):
    # Rows claimed before leases existed have no lease: their start time plus one lease stands in for it.
    return Q(status=StudyStatus.PROCESSING) & (
        Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True, started_at__lt=now - settings.INFERENCE_LEASE)
    )


def studies_requeue_stale() -> int:
    """Ring the bell again for studies the broker never got, lost, or whose worker died mid-task.

    Runs every settings.INFERENCE_SWEEP_INTERVAL. A study whose worker died is rung again at most
    INFERENCE_LEASE + INFERENCE_SWEEP_INTERVAL after the worker's last renewal.
    """
    from diagnosis.tasks import run_inference

    now = timezone.now()
    abandoned = Study.objects.filter(_lapsed_claims(now))
    abandoned.filter(attempt_count__gte=settings.INFERENCE_MAX_ATTEMPTS).update(
        status=StudyStatus.FAILED,
        error_message="The worker stopped responding on every attempt; the study was not classified.",
        completed_at=now,
        lease_expires_at=None,
    )
    revived = list(abandoned.values_list("id", flat=True))
    Study.objects.filter(_lapsed_claims(now), id__in=revived).update(
        status=StudyStatus.QUEUED, queued_at=now, lease_expires_at=None
    )
    lost = list(
        Study.objects.filter(
            Q(status=StudyStatus.RECEIVED, created_at__lt=now - settings.INFERENCE_RECEIVED_GRACE)
            | Q(status=StudyStatus.QUEUED, queued_at__lt=now - settings.INFERENCE_STALE_AFTER)
        ).values_list("id", flat=True)
    )
    Study.objects.filter(id__in=lost, status__in=[StudyStatus.RECEIVED, StudyStatus.QUEUED]).update(
        status=StudyStatus.QUEUED, queued_at=now
    )
    study_ids = sorted(set(revived) | set(lost))
    if model_version_active() is not None:
        for study_id in study_ids:
            run_inference.delay(study_id=study_id)
    return len(study_ids)


def _new_claim() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _claim(study_id: int, *, resume_claim: str = "") -> str:
    """Take the study if it waits, if its holder's lease lapsed, or if it is our own claim resumed. "" if not."""
    now = timezone.now()
    claim = _new_claim()
    claimable = Q(status__in=[StudyStatus.RECEIVED, StudyStatus.QUEUED]) | (
        _lapsed_claims(now) & Q(attempt_count__lt=settings.INFERENCE_MAX_ATTEMPTS)
    )
    if resume_claim:
        claimable |= Q(status=StudyStatus.PROCESSING, claimed_by=resume_claim)
    claimed = Study.objects.filter(claimable, id=study_id).update(
        status=StudyStatus.PROCESSING,
        started_at=now,
        lease_expires_at=now + settings.INFERENCE_LEASE,
        claimed_by=claim,
        attempt_count=F("attempt_count") + (0 if resume_claim else 1),
        error_message="",
    )
    # Nothing got updated: another delivery holds it, or the study is done.
    return claim if claimed == 1 else ""


def _not_claimed(study_id: int) -> InferenceOutcome:
    study = Study.objects.filter(id=study_id).values("status", "lease_expires_at", "attempt_count").first()
    if study is None or study["status"] != StudyStatus.PROCESSING:
        return InferenceOutcome(study_id, "skipped", "The study is not waiting for inference.")
    lease_ends = study["lease_expires_at"]
    if lease_ends is not None and lease_ends > timezone.now():
        remaining = (lease_ends - timezone.now()).total_seconds()
        return InferenceOutcome(study_id, "held", "Another worker holds the study.", retry_after_seconds=remaining + 1)
    # The lease lapsed but the attempts are spent: the worker died on this film every time.
    Study.objects.filter(_lapsed_claims(timezone.now()), id=study_id).update(
        status=StudyStatus.FAILED, lease_expires_at=None, completed_at=timezone.now(),
        error_message="The worker stopped responding on every attempt; the study was not classified.",
    )
    return InferenceOutcome(study_id, "failed", "The worker stopped responding on every attempt.")


@contextmanager
def _lease_renewed(study_id: int, claim: str):
    """Renew the claim's lease from a background thread while the body runs (the model call can take seconds)."""
    stop = threading.Event()
    interval = settings.INFERENCE_LEASE.total_seconds() / 3

    def renew():
        try:
            while not stop.wait(interval):
                Study.objects.filter(id=study_id, status=StudyStatus.PROCESSING, claimed_by=claim).update(
                    lease_expires_at=timezone.now() + settings.INFERENCE_LEASE
                )
        except DATABASE_ERRORS:
            logger.warning("Could not renew the lease on study %s", study_id, exc_info=True)
        finally:
            connection.close()  # this thread's own connection

    renewer = threading.Thread(target=renew, name=f"lease-{study_id}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join(timeout=interval)


def study_run_inference(*, study_id: int, resume_claim: str = "") -> InferenceOutcome:
    model_version = model_version_active()
    if model_version is None:
        return InferenceOutcome(study_id, "waiting_for_model", "No model is active; the study stays queued.")
    claim = _claim(study_id, resume_claim=resume_claim)
    if not claim:
        return _not_claimed(study_id)
    try:
        with _lease_renewed(study_id, claim):
            return _run_claimed(study_id, model_version)
    except DATABASE_ERRORS as error:
        # PostgreSQL restarted or is unreachable: nothing was written, so the task retries and resumes this claim.
        logger.warning("Database unavailable during inference of study %s: %s", study_id, error)
        return InferenceOutcome(study_id, "database_unavailable", str(error), claim=claim)


def _warnings_for(study: Study, result) -> list[str]:
    """The model's warnings, after "not a radiograph" when the upload was a colour picture: the model sees only
    grey, so a photo gets an answer that must be ignored (the familiarity check may miss it)."""
    from ml.serving.colour import NOT_RADIOGRAPH, is_colour_picture

    warnings = list(result.warnings)
    return [NOT_RADIOGRAPH, *warnings] if is_colour_picture(study.image.colour_share) else warnings


HEATMAP_LAYER_MAX_SIDE = 512


def _heatmap_layer_put(study: Study, model_version: ModelVersion, result) -> tuple[str, dict]:
    """Store the heatmap as a layer at the aspect of the crop box the model saw; return its digest and the box."""
    from ml.serving.gradcam import heat_layer_png

    box = result.crop_box
    box_width = max(1.0, (box.right - box.left) * study.image.width)
    box_height = max(1.0, (box.bottom - box.top) * study.image.height)
    scale = HEATMAP_LAYER_MAX_SIDE / max(box_width, box_height)
    layer = heat_layer_png(result.heatmap, width=max(1, round(box_width * scale)),
                           height=max(1, round(box_height * scale)))
    digest = storage.blob_put(layer, kind=storage.HEATMAP_LAYER, digest=storage.sha256_hex(
        f"{study.image.sha256}:{model_version.file_sha256}".encode()))
    return digest, box.to_dict()


def _run_claimed(study_id: int, model_version: ModelVersion) -> InferenceOutcome:
    study = Study.objects.select_related("image", "patient").get(id=study_id)
    try:
        predictor = predictor_for(model_version)
        data = storage.blob_get(study.image.sha256, kind=storage.ORIGINAL)
        decoded = decode_image(data, max_pixels=settings.MAX_IMAGE_PIXELS, target_size=model_version.input_size)
        result = predictor.predict_one(decoded.pixels, with_heatmap=True, check_stability=True)
        heatmap_sha, heatmap_box = "", {}
        if result.heatmap is not None:
            heatmap_sha, heatmap_box = _heatmap_layer_put(study, model_version, result)
    except ImageDecodeError as error:
        # A stored image that no longer decodes will not get better on retry.
        return _fail(study, f"The stored image could not be decoded: {error}", retry=False)
    except DATABASE_ERRORS:
        raise
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
                heatmap_box=heatmap_box,
                warnings=_warnings_for(study, result),
            )
            Study.objects.filter(id=study.id).update(
                status=StudyStatus.COMPLETED, completed_at=timezone.now(), lease_expires_at=None
            )
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
            results_enqueue_for_prediction(prediction=prediction)
    except IntegrityError:
        # The unique (study, model version) constraint: a prediction already exists, so this run is a duplicate.
        Study.objects.filter(id=study.id).update(status=StudyStatus.COMPLETED, lease_expires_at=None)
        return InferenceOutcome(study_id, "skipped", "A prediction from this model already exists.")
    from .adaptation import shadow_predictions_record

    # After the result is committed, so it is not kept waiting: the preview a large PNG's upload left to this
    # decode. Should it fail, the study page makes it on demand.
    try:
        image_preview(image=study.image, pixels=decoded.pixels)
    except Exception:  # noqa: BLE001 - the result stands; only the preview is late
        logger.warning("Preview of study %s not made; a page will make it when asked", study_id, exc_info=True)
    # After the study's own result is committed: a shadow candidate's answer is stored, never shown.
    shadow_predictions_record(study=study, pixels=decoded.pixels)
    return InferenceOutcome(study_id, "completed", prediction.predicted_label)


def _fail(study: Study, message: str, *, retry: bool) -> InferenceOutcome:
    attempts = Study.objects.values_list("attempt_count", flat=True).get(id=study.id)
    if retry and attempts < settings.INFERENCE_MAX_ATTEMPTS:
        Study.objects.filter(id=study.id, status=StudyStatus.PROCESSING).update(
            status=StudyStatus.QUEUED, queued_at=timezone.now(), error_message=message, lease_expires_at=None
        )
        return InferenceOutcome(study.id, "retry", message)
    with transaction.atomic():
        Study.objects.filter(id=study.id).update(
            status=StudyStatus.FAILED, error_message=message, completed_at=timezone.now(), lease_expires_at=None
        )
        audit_record(action="prediction.fail", username="worker", target=study, study=study, outcome="failed",
                     details={"error": message, "attempts": attempts})
    return InferenceOutcome(study.id, "failed", message)


def retry_delay(attempts: int) -> timedelta:
    return timedelta(seconds=min(300, 10 * 2 ** max(0, attempts - 1)))

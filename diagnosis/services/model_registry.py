"""Register, activate and retire model versions. At most one is active (database constraint)."""

import logging
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from audit.services import audit_record
from diagnosis.models import ModelVersion, ModelVersionStatus
from ml.serving.labels import CLASS_NAMES

logger = logging.getLogger(__name__)


def _repository_relative(path: Path) -> str:
    """Store artifact paths relative to the project when they live inside it, so a clone elsewhere still finds them."""
    path = path.resolve()
    try:
        return str(path.relative_to(settings.BASE_DIR))
    except ValueError:
        return str(path)


def artifact_dir_for(model_version: ModelVersion) -> Path:
    path = Path(model_version.artifact_path)
    return path if path.is_absolute() else Path(settings.BASE_DIR) / path


def same_operating_point(model_version: ModelVersion, metadata) -> bool:
    def same(a, b) -> bool:
        return (a is None and b is None) or (a is not None and b is not None and abs(float(a) - float(b)) <= 1e-9)

    return same(model_version.temperature, metadata.temperature) and same(
        model_version.covid_threshold, metadata.covid_threshold
    )


def missing_evaluation_parts(model_version: ModelVersion) -> list[str]:
    from ml.serving.artifact import HELD_OUT_PARTS

    return [part for part in HELD_OUT_PARTS if part not in (model_version.evaluation or {})]


def _record_missing_evaluation(model_version: ModelVersion, *, artifact_dir: Path, actor) -> None:
    """Add the held-out results the version lacks (registered before they were kept, or recorded since in its
    unchanged folder, e.g. by ``python -m ml evaluate --record``). What it already carries is never rewritten."""
    from ml.serving.artifact import held_out_evaluation

    missing = missing_evaluation_parts(model_version)
    if not missing:
        return
    added = {part: value for part, value in held_out_evaluation(artifact_dir).items() if part in missing}
    if not added:
        return
    model_version.evaluation = {**(model_version.evaluation or {}), **added}
    model_version.save(update_fields=["evaluation"])
    audit_record(actor=actor, action="model_version.evaluation_recorded", target=model_version,
                 details={"name": model_version.name, "version": model_version.version, "evaluation": added})


@transaction.atomic
def model_version_register(*, artifact_dir: Path, actor=None, activate: bool = False) -> ModelVersion:
    from ml.serving.artifact import file_sha256, held_out_evaluation, load_metadata

    artifact_dir = Path(artifact_dir)
    try:
        metadata = load_metadata(artifact_dir)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValidationError(_("%(path)s is not a readable model artifact (%(error)s).") % {"path": artifact_dir, "error": error}) from None
    if tuple(metadata.class_names) != CLASS_NAMES:
        raise ValidationError(_("The model's classes %(found)s are not %(expected)s.") % {
            "found": metadata.class_names, "expected": list(CLASS_NAMES)})
    model_file = artifact_dir / metadata.model_file
    actual_sha = file_sha256(model_file)
    if actual_sha != metadata.sha256:
        raise ValidationError(_("%(path)s does not match the SHA-256 recorded in its metadata.") % {"path": model_file})
    existing = ModelVersion.objects.filter(name=metadata.name, version=metadata.version).first()
    if existing is not None:
        if existing.file_sha256 != actual_sha:
            raise ValidationError(_("%(name)s %(version)s is already registered with a different file.") % {
                "name": metadata.name, "version": metadata.version})
        if not same_operating_point(existing, metadata):
            # ml.recalibrate keeps the file: without this, the old temperature and threshold would stay in force.
            raise ValidationError(_(
                "%(name)s %(version)s is already registered with a different temperature or COVID-19 threshold "
                "(a recalibrated artifact): give it a new version (python -m ml recalibrate --version) and register that."
            ) % {"name": metadata.name, "version": metadata.version})
        model_version = existing
        _record_missing_evaluation(existing, artifact_dir=artifact_dir, actor=actor)
    else:
        model_version = ModelVersion.objects.create(
            name=metadata.name,
            version=metadata.version,
            artifact_path=_repository_relative(artifact_dir),
            file_sha256=actual_sha,
            architecture=metadata.architecture,
            class_names=list(metadata.class_names),
            input_size=metadata.input_size,
            preprocessing=dict(metadata.preprocessing),
            metrics=dict(metadata.metrics or {}),
            evaluation=held_out_evaluation(artifact_dir),
            temperature=float(metadata.temperature),
            covid_threshold=metadata.covid_threshold,
            registered_by=actor if getattr(actor, "is_authenticated", False) else None,
        )
        audit_record(
            actor=actor,
            action="model_version.register",
            target=model_version,
            details={"name": model_version.name, "version": model_version.version, "sha256": actual_sha},
        )
    if activate and model_version.status != ModelVersionStatus.ACTIVE:
        model_version_activate(model_version=model_version, actor=actor)
    return model_version


@transaction.atomic
def model_version_activate(*, model_version: ModelVersion, actor=None) -> ModelVersion:
    previous = list(
        ModelVersion.objects.select_for_update().filter(status=ModelVersionStatus.ACTIVE).exclude(pk=model_version.pk)
    )
    for old in previous:
        old.status = ModelVersionStatus.RETIRED
        old.save(update_fields=["status"])
    model_version.status = ModelVersionStatus.ACTIVE
    model_version.activated_at = timezone.now()
    if previous:  # what a rollback returns to
        model_version.previous_active = previous[0]
    model_version.save(update_fields=["status", "activated_at", "previous_active"])
    audit_record(
        actor=actor,
        action="model_version.activate",
        target=model_version,
        details={"previous_active": [str(old) for old in previous], "new_active": str(model_version)},
    )
    from .inference import studies_requeue_waiting

    # Studies that waited for a model can run now.
    transaction.on_commit(studies_requeue_waiting)
    return model_version


@transaction.atomic
def model_version_retire(*, model_version: ModelVersion, actor=None, reason: str,
                         pause_analysis: bool = False) -> ModelVersion:
    """Retire a version, for a reason the audit trail keeps.

    Retiring the active version leaves none: new studies then wait, unanalysed, until a version is activated.
    That happens only when the administrator chose to pause analysis (``pause_analysis``); otherwise the
    request is refused, and promoting another version is the way to replace it.
    """
    reason = reason.strip()
    if not reason:
        raise ValidationError(_("Give the reason for retiring %(model)s; it is kept in the audit trail.")
                              % {"model": model_version})
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(pk=model_version.pk)
        pauses = locked.status == ModelVersionStatus.ACTIVE
        if pauses and not pause_analysis:
            raise ValidationError(_(
                "%(model)s is the active version: retiring it leaves none, and new studies would wait unanalysed. "
                "Promote another version instead, or choose to pause analysis."
            ) % {"model": locked})
        old_status = locked.status
        locked.status = ModelVersionStatus.RETIRED
        locked.save(update_fields=["status"])
        audit_record(
            actor=actor,
            action="model_version.retire",
            target=locked,
            details={"old_status": old_status, "new_status": locked.status, "reason": reason,
                     "analysis_paused": pauses},
        )
    return locked


def model_version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersionStatus.ACTIVE).first()


def _folder_holds(model_version: ModelVersion) -> bool:
    """Whether the version's artifact folder still describes this very version (name, version and file)."""
    from ml.serving.artifact import load_metadata

    try:
        metadata = load_metadata(artifact_dir_for(model_version))
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (metadata.name, metadata.version, metadata.sha256) == (
        model_version.name, model_version.version, model_version.file_sha256)


def model_version_ensure_default() -> ModelVersion | None:
    """On first start, register and activate the shipped model when no version is active.

    An active version that lacks part of its held-out evaluation (registered before versions kept it, or
    audited since) gets it here, from its own artifact folder, when that folder still holds the registered
    file and operating point.
    """
    from ml.serving.artifact import held_out_evaluation

    active = model_version_active()
    if active is not None:
        missing = missing_evaluation_parts(active)
        # Only when the folder has something to add: registering hashes the whole model file.
        if (missing and _folder_holds(active)
                and set(missing) & set(held_out_evaluation(artifact_dir_for(active)))):
            try:
                return model_version_register(artifact_dir=artifact_dir_for(active))
            except ValidationError as error:  # the folder changed since: keep serving the version as registered
                logger.warning("Held-out evaluation of %s not recorded: %s", active, error)
        return active
    artifact_dir = Path(settings.DEFAULT_MODEL_ARTIFACT)
    if not (artifact_dir / "metadata.json").exists():
        logger.warning("No active model and no shipped model at %s: studies will wait.", artifact_dir)
        return None
    return model_version_register(artifact_dir=artifact_dir, activate=True)

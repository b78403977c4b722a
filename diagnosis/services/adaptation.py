"""Adapt the active model to this site's confirmed films, evaluate the candidate, promote, roll back, shadow.

The job (``adaptation_run``) starts from the active version, fits on the adaptation part only
(``ml.training.adapt``), evaluates the candidate and the active version on the same films of the locked site
test part and of the development test split (``ml.evaluation.site``) and registers the candidate with its
parent and evaluation. Promotion is refused when the candidate is worse there beyond the paired interval or
misses the sensitivity target, unless an administrator gives a reason.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from audit.models import Outcome
from audit.services import audit_record
from diagnosis.models import (
    AdaptationRun,
    Feedback,
    JobStatus,
    ModelVersion,
    ModelVersionStatus,
    ShadowPrediction,
)
from ml.serving.labels import CLASS_NAMES

from . import storage
from .model_registry import artifact_dir_for, model_version_activate, model_version_active, model_version_register
from .site_films import confirmed_site_films

logger = logging.getLogger(__name__)


class PromotionRefused(ValidationError):
    """The candidate is worse on the locked site test part, or misses the sensitivity target there."""


def adaptation_request(*, user, steps: str = "head", site_weight: float | None = None) -> AdaptationRun:
    """Queue an adaptation of the active version on the training queue."""
    from diagnosis.tasks import adapt_model
    from ml.training.adapt import STEPS

    parent = model_version_active()
    if parent is None:
        raise ValidationError(_("No model is active: there is nothing to adapt."))
    if steps not in STEPS:
        raise ValidationError(_("Unknown adaptation steps."))
    options = {"site_weight": settings.CXR_ADAPT_SITE_WEIGHT if site_weight is None else site_weight,
               "target_sensitivity": settings.CXR_ADAPT_TARGET_SENSITIVITY,
               "test_share": settings.CXR_SITE_TEST_SHARE}
    with transaction.atomic():
        run = AdaptationRun.objects.create(requested_by=user, parent=parent, steps=steps, options=options)
        audit_record(actor=user, action="model_version.adapt_request", target=run,
                     details={"parent": str(parent), "steps": steps, **options})
        transaction.on_commit(lambda: adapt_model.delay(adaptation_run_id=run.pk))
    return run


def _films_for_ml(films):
    from ml.serving.imaging import decode_image
    from ml.evaluation.features import LabelledFilm

    def loader(sha256: str):
        return lambda: decode_image(storage.blob_get(sha256, kind=storage.ORIGINAL),
                                    max_pixels=settings.MAX_IMAGE_PIXELS).pixels

    return [LabelledFilm(key=film.image_sha256, label=CLASS_NAMES.index(film.label), patient=film.patient_mrn,
                         load=loader(film.image_sha256), name=f"study {film.study_id}") for film in films]


def _progress_writer(run_id: int):
    last = {"at": 0.0}

    def write(stage: str, fraction: float) -> None:
        now = time.monotonic()
        if now - last["at"] < 0.5 and fraction < 1.0:
            return
        last["at"] = now
        AdaptationRun.objects.filter(id=run_id).update(stage=stage[:200], progress=round(float(fraction), 3))

    return write


def _evaluation_record(comparison: dict) -> dict:
    return {key: comparison.get(key) for key in ("data", "n", "patients", "class_counts", "skipped")} | {
        "metrics": comparison.get("candidate"), "active_metrics": comparison.get("active"),
        "paired": comparison.get("paired")}


def adaptation_run(*, adaptation_run_id: int) -> AdaptationRun:
    """Run a queued adaptation; a second delivery of the same task does nothing."""
    from ml.evaluation.site import compare_on_films, refusal_reasons
    from ml.serving.predictor import Predictor
    from ml.evaluation.features import FeatureCache
    from ml.evaluation.site import SITE_TEST
    from ml.training.adapt import AdaptationError, AdaptationSettings, adapt, dev_films

    claimed = AdaptationRun.objects.filter(id=adaptation_run_id, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING, started_at=timezone.now())
    run = AdaptationRun.objects.select_related("parent", "requested_by").get(id=adaptation_run_id)
    if not claimed:
        return run
    parent, user, options = run.parent, run.requested_by, run.options
    progress = _progress_writer(run.pk)
    films = confirmed_site_films()
    test = _films_for_ml([film for film in films if film.part == SITE_TEST])
    adaptation = _films_for_ml([film for film in films if film.part != SITE_TEST])
    parent_dir = artifact_dir_for(parent)
    out_dir = Path(settings.CXR_CANDIDATE_DIR) / f"{parent.name}-{parent.version}-site{run.pk}"
    cache = FeatureCache(settings.CXR_FEATURE_CACHE_DIR)
    try:
        dev = dev_films(parent_dir, data_root=Path(settings.CXR_DEV_DATA_DIR) if settings.CXR_DEV_DATA_DIR else None)
        result = adapt(
            parent_dir=parent_dir, out_dir=out_dir, site_films=adaptation, dev_train=dev["train"], dev_val=dev["val"],
            settings=AdaptationSettings(steps=run.steps, site_weight=options["site_weight"],
                                        target_sensitivity=options["target_sensitivity"]),
            version=f"{parent.version}-site{run.pk}", cache=cache, progress=progress,
            site_description=f"{len(adaptation)} confirmed films of this site (adaptation part)",
        )
        progress("evaluating on the locked site test part", 0.95)
        candidate_predictor, parent_predictor = Predictor.load(out_dir), Predictor.load(parent_dir)
        site = compare_on_films(candidate=candidate_predictor, active=parent_predictor, films=test, cache=cache,
                                description="locked site test part")
        development = compare_on_films(candidate=candidate_predictor, active=parent_predictor, films=dev["test"],
                                       cache=cache, description="development test split") if dev["test"] else None
    except (AdaptationError, ValueError, OSError, RuntimeError) as error:
        return _adaptation_failed(run, user=user, parent=parent, error=error)
    reasons = refusal_reasons(site, target_sensitivity=options["target_sensitivity"])
    try:
        _register_candidate(run, user=user, parent=parent, out_dir=out_dir, result=result, site=site,
                            development=development, reasons=reasons, adaptation_films=len(adaptation))
    except ValidationError as error:  # e.g. the folder no longer matches its metadata
        return _adaptation_failed(run, user=user, parent=parent, error=error)
    run.refresh_from_db()
    return run


def _adaptation_failed(run: AdaptationRun, *, user, parent: ModelVersion, error: Exception) -> AdaptationRun:
    logger.exception("Adaptation %s failed", run.pk)
    message = " ".join(error.messages) if isinstance(error, ValidationError) else str(error)
    with transaction.atomic():
        AdaptationRun.objects.filter(id=run.pk).update(status=JobStatus.FAILED, error=message[:2000],
                                                       finished_at=timezone.now())
        audit_record(actor=user, action="model_version.adapt", target=run, outcome=Outcome.FAILED,
                     details={"parent": str(parent), "error": message[:500]})
    run.refresh_from_db()
    return run


def _register_candidate(run: AdaptationRun, *, user, parent: ModelVersion, out_dir: Path, result, site: dict,
                        development: dict | None, reasons: list[str], adaptation_films: int) -> None:
    options = run.options
    with transaction.atomic():
        candidate = model_version_register(artifact_dir=out_dir, actor=user)
        candidate.parent = parent
        candidate.site_evaluation = {
            "evaluated_at": timezone.now().isoformat(timespec="seconds"),
            **_evaluation_record(site), "compared_with": {"id": parent.pk, "version": str(parent)},
            "dev_test": _evaluation_record(development) if development else None,
            "refusal_reasons": reasons, "target_sensitivity": options["target_sensitivity"],
            "adaptation": result.metadata.training["adaptation"] | {"skipped": result.skipped[:50]},
        }
        candidate.save(update_fields=["parent", "site_evaluation"])
        if site.get("n", 0) >= (parent.site_evaluation or {}).get("n", 0):
            # The same films also validate the parent at this site (item: "not validated at this site").
            parent.site_evaluation = {"evaluated_at": timezone.now().isoformat(timespec="seconds"),
                                      **{key: site.get(key) for key in ("data", "n", "patients", "class_counts")},
                                      "metrics": site.get("active")}
            parent.save(update_fields=["site_evaluation"])
        AdaptationRun.objects.filter(id=run.pk).update(status=JobStatus.DONE, candidate=candidate, progress=1.0,
                                                       stage="done", finished_at=timezone.now())
        audit_record(actor=user, action="model_version.adapt", target=candidate,
                     details={"run": run.pk, "parent": str(parent), "candidate": str(candidate), "steps": run.steps,
                              "site_test_films": site.get("n", 0), "adaptation_films": adaptation_films,
                              "refusal_reasons": reasons, "seconds": round(result.seconds, 1)})


def _refusal_reasons(model_version: ModelVersion) -> list[str]:
    from ml.evaluation.site import refusal_reasons

    evaluation = model_version.site_evaluation or {}
    comparison = {"n": evaluation.get("n"), "paired": evaluation.get("paired") or {},
                  "candidate": evaluation.get("metrics") or {"threshold": {"sensitivity": None}}}
    return refusal_reasons(comparison, target_sensitivity=evaluation.get(
        "target_sensitivity", settings.CXR_ADAPT_TARGET_SENSITIVITY))


def promotion_refusal_reasons(model_version: ModelVersion) -> list[str]:
    """Why promoting this candidate would be refused; only candidates evaluated on the site's films are judged.

    The paired comparison is against the version that was active when the candidate was evaluated; once
    another version is active it is stale, and the candidate must be evaluated again (adapt again).
    """
    evaluation = model_version.site_evaluation or {}
    if model_version.status != ModelVersionStatus.CANDIDATE or "compared_with" not in evaluation:
        return []
    reasons = _refusal_reasons(model_version)
    active = model_version_active()
    if active is not None and active.pk != evaluation["compared_with"].get("id"):
        reasons.append(_("It was compared with %(then)s, but %(now)s is active now.") % {
            "then": evaluation["compared_with"].get("version"), "now": active})
    return reasons


def model_version_promote_gated(*, model_version: ModelVersion, actor, override_reason: str = "") -> ModelVersion:
    """Activate a candidate, refusing (audited) one the site's test films speak against unless overridden."""
    reasons = promotion_refusal_reasons(model_version)
    override_reason = (override_reason or "").strip()
    if reasons and not override_reason:
        audit_record(actor=actor, action="model_version.promote", target=model_version, outcome=Outcome.DENIED,
                     details={"candidate": str(model_version), "reasons": reasons})
        raise PromotionRefused(reasons)
    with transaction.atomic():
        if reasons:
            audit_record(actor=actor, action="model_version.promote_override", target=model_version,
                         details={"candidate": str(model_version), "reasons": reasons, "override_reason": override_reason})
        if model_version.shadow:
            model_version.shadow = False
            model_version.save(update_fields=["shadow"])
        return model_version_activate(model_version=model_version, actor=actor)


def model_version_rollback(*, actor) -> ModelVersion:
    """One action: the version active before the current one becomes active again."""
    active = model_version_active()
    previous = active.previous_active if active is not None else None
    if previous is None:
        raise ValidationError(_("There is no earlier version to roll back to."))
    earlier = previous.previous_active_id
    with transaction.atomic():
        audit_record(actor=actor, action="model_version.rollback", target=previous,
                     details={"from": str(active), "to": str(previous)})
        model_version_activate(model_version=previous, actor=actor)
        # The restored version keeps the predecessor it had: a second rollback goes further back, never forth.
        ModelVersion.objects.filter(pk=previous.pk).update(previous_active=earlier)
    previous.refresh_from_db()
    return previous


@transaction.atomic
def model_version_shadow_set(*, model_version: ModelVersion, actor, enabled: bool) -> ModelVersion:
    if enabled and model_version.status != ModelVersionStatus.CANDIDATE:
        raise ValidationError(_("Only a candidate can run in shadow mode."))
    model_version.shadow = enabled
    model_version.save(update_fields=["shadow"])
    audit_record(actor=actor, action="model_version.shadow_start" if enabled else "model_version.shadow_stop",
                 target=model_version, details={"model_version": str(model_version)})
    return model_version


def shadow_predictions_record(*, study, pixels) -> int:
    """Run every shadow candidate on a study's decoded film and store its answer; returns how many.

    Runs after the study's own result is committed. A failing shadow model is logged and never touches the
    study: it exists only to be compared.
    """
    from .inference import predictor_for

    stored = 0
    for model_version in ModelVersion.objects.filter(shadow=True, status=ModelVersionStatus.CANDIDATE):
        try:
            result = predictor_for(model_version).predict_one(pixels)
            ShadowPrediction.objects.create(
                study=study, model_version=model_version, predicted_label=result.label,
                probabilities={name: float(value) for name, value in result.probabilities.items()},
                covid_probability=float(result.covid_probability), would_alert=bool(result.covid_alert))
            stored += 1
        except IntegrityError:
            continue  # already stored by an earlier delivery of the task
        except Exception:  # noqa: BLE001 - a shadow model must never fail the study
            logger.exception("Shadow model %s failed on study %s", model_version, study.pk)
    return stored


@dataclass(frozen=True)
class ShadowAgreement:
    studies: int  # shadow results on studies a clinician has since confirmed
    shadow_agrees: int
    active_agrees: int  # what the version that served those studies got right

    @property
    def shadow_rate(self) -> float | None:
        return self.shadow_agrees / self.studies if self.studies else None

    @property
    def active_rate(self) -> float | None:
        return self.active_agrees / self.studies if self.studies else None


def shadow_agreement(model_version: ModelVersion) -> ShadowAgreement:
    """Live agreement with clinicians: on studies with a shadow result and clinician feedback naming a class."""
    from .site_films import _feedback_labels

    labels = _feedback_labels()
    shadow = dict(ShadowPrediction.objects.filter(model_version=model_version, study_id__in=labels)
                  .values_list("study_id", "predicted_label"))
    served = {}
    for study_id, label in Feedback.objects.filter(study_id__in=shadow).order_by("updated_at").values_list(
            "study_id", "prediction__predicted_label"):
        served[study_id] = label
    return ShadowAgreement(
        studies=len(shadow),
        shadow_agrees=sum(label == labels[study_id] for study_id, label in shadow.items()),
        active_agrees=sum(served.get(study_id) == labels[study_id] for study_id in shadow),
    )

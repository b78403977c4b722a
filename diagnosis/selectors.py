"""Reads that shape data for pages, exports and the API. User-scoped reads start from diagnosis.access."""

from dataclasses import dataclass
from datetime import date, datetime

from django.db.models import (
    BooleanField,
    Case,
    Count,
    Exists,
    F,
    FloatField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.conf import settings
from django.http import Http404
from django.utils.formats import number_format
from django.utils.translation import gettext_lazy as _

from cxr_portal.filters import within_days

from . import access
from .models import Alert, Feedback, FeedbackRevision, ModelVersion, Prediction, Study, StudyStatus


@dataclass(frozen=True)
class WorklistFilters:
    status: str = ""
    predicted_label: str = ""
    date_from: date | None = None
    date_to: date | None = None
    patient: str = ""  # name or MRN, partial match
    needs_my_review: bool = False


def worklist_studies(*, user, filters: WorklistFilters) -> QuerySet[Study]:
    """Studies in triage order: suspected COVID-19 first, by calibrated probability; then the rest, oldest first.

    "Suspected COVID-19" means the study has an alert that no clinician withdrew; the probability
    and label are those of the study's latest prediction.
    """
    latest = Prediction.objects.filter(study=OuterRef("pk")).order_by("-created_at")
    studies = access.studies_for_user(user=user).annotate(
        latest_prediction_id=Subquery(latest.values("id")[:1]),
        latest_label=Subquery(latest.values("predicted_label")[:1]),
        latest_covid_probability=Subquery(latest.values("covid_probability")[:1], output_field=FloatField()),
        suspected_covid=Exists(Alert.objects.filter(study=OuterRef("pk"), withdrawn_at__isnull=True)),
    )
    # The most recent clinician judgement of the latest prediction: the worklist shows it beside the model's.
    latest_review = Feedback.objects.filter(prediction_id=OuterRef("latest_prediction_id")).order_by("-updated_at", "-id")
    studies = studies.annotate(
        reviewed_by_me=Exists(
            Feedback.objects.filter(prediction_id=OuterRef("latest_prediction_id"), author_id=user.id)
        ),
        review_label=Subquery(latest_review.values("correct_label")[:1]),
        review_agrees=Subquery(latest_review.values("agrees")[:1], output_field=BooleanField()),
        review_author=Subquery(latest_review.values("author__username")[:1]),
    )
    if filters.status:
        studies = studies.filter(status=filters.status)
    if filters.predicted_label:
        studies = studies.filter(latest_label=filters.predicted_label)
    if filters.date_from:
        studies = studies.filter(created_at__date__gte=filters.date_from)
    if filters.date_to:
        studies = studies.filter(created_at__date__lte=filters.date_to)
    if filters.patient:
        studies = studies.filter(Q(patient__name__icontains=filters.patient) | Q(patient__mrn__icontains=filters.patient))
    if filters.needs_my_review:
        studies = studies.filter(status=StudyStatus.COMPLETED, reviewed_by_me=False)
    # Suspected studies rank among themselves by probability; every other study by how long it has waited.
    suspected_probability = Case(
        When(suspected_covid=True, then=F("latest_covid_probability")), default=None, output_field=FloatField()
    )
    return studies.order_by(
        F("suspected_covid").desc(),
        suspected_probability.desc(nulls_last=True),
        "created_at",
        "id",
    )


def worklist_page_studies(*, user, filters: WorklistFilters) -> QuerySet[Study]:
    """worklist_studies with only what the worklist page shows of a row: the study, its patient, its latest result.

    The other joins (image, uploader, the alert with its prediction, version and clinicians) and each result's
    model version were a third of the page's CPU, in Django and in PostgreSQL, for nothing the page shows.
    """
    return (
        worklist_studies(user=user, filters=filters)
        .select_related(None).select_related("patient")
        .prefetch_related(None)
        .prefetch_related(Prefetch("predictions", queryset=Prediction.objects.order_by("-created_at")))
    )


def alerts_open_count() -> int:
    return Alert.objects.filter(acknowledged_at__isnull=True, withdrawn_at__isnull=True).count()


def alerts_for_list(*, user) -> QuerySet[Alert]:
    """Open alerts first (oldest first: they have waited longest), then the rest, newest first."""
    alerts = access.alerts_for_user(user=user).select_related(
        "study__patient", "prediction__model_version", "acknowledged_by", "withdrawn_by"
    )
    return alerts.annotate(
        open_first=Case(
            When(acknowledged_at__isnull=True, withdrawn_at__isnull=True, then=Value(True)),
            default=Value(False),
            output_field=BooleanField(),
        )
    ).order_by(F("open_first").desc(), "created_at")


@dataclass(frozen=True)
class AgreementRow:
    model_version: ModelVersion
    feedback_count: int
    agree_count: int

    @property
    def agreement_rate(self) -> float | None:
        return self.agree_count / self.feedback_count if self.feedback_count else None


def agreement_by_model_version() -> list[AgreementRow]:
    """Share of clinician feedback that agrees with each model version's predictions (current feedback, not revisions)."""
    versions = ModelVersion.objects.annotate(
        feedback_count=Count("predictions__feedback"),
        agree_count=Count("predictions__feedback", filter=Q(predictions__feedback__agrees=True)),
    ).order_by("-created_at")
    return [AgreementRow(version, version.feedback_count, version.agree_count) for version in versions]


def feedback_for_study(*, study: Study) -> QuerySet[Feedback]:
    return (
        Feedback.objects.filter(study=study)
        .select_related("author", "prediction__model_version")
        .prefetch_related(Prefetch("revisions", queryset=FeedbackRevision.objects.select_related("edited_by")))
        .order_by("-updated_at")
    )


def feedback_training_examples() -> QuerySet[Feedback]:
    """Feedback that names a class the model learns (not "other"): the rows a retraining dataset is built from."""
    from ml.serving.labels import CLASS_NAMES

    return (
        Feedback.objects.filter(correct_label__in=CLASS_NAMES)
        .select_related("study__image", "study__patient", "prediction__model_version", "author")
        .order_by("id")
    )


# The validation figures shown next to a result, in this order; keys are those of ml.calibration.classification_metrics.
VALIDATION_FIGURES = (
    ("n", _("Validation images"), "count"),
    ("accuracy", _("Accuracy"), "ratio"),
    ("macro_auc", _("Macro AUC"), "ratio"),
    ("covid_auc", _("COVID-19 AUC"), "ratio"),
    ("covid_sensitivity", _("COVID-19 sensitivity at threshold"), "ratio"),
    ("covid_specificity", _("COVID-19 specificity at threshold"), "ratio"),
    ("ece", _("Expected calibration error"), "ratio"),
)


def _number(value) -> str | None:
    """A figure to three decimals with the reader's decimal separator; None for a missing, non-numeric or NaN one."""
    if not isinstance(value, (int, float)) or value != value:
        return None
    return number_format(round(float(value), 3), 3, use_l10n=True)


def validation_figures(model_version: ModelVersion) -> list[tuple[str, str]]:
    """(label, formatted value) for each validation figure the model version recorded."""
    metrics = model_version.metrics or {}
    rows = []
    for key, label, kind in VALIDATION_FIGURES:
        value = metrics.get(key)
        number = _number(value)
        if number is None:
            continue
        rows.append((str(label), str(int(value)) if kind == "count" else number))
    if model_version.covid_threshold is not None:
        rows.append((str(_("COVID-19 alert threshold")), _number(model_version.covid_threshold)))
    return rows


# The held-out figures shown for a model version: the validation ratios, from ml.artifact.held_out_evaluation's test.
HELD_OUT_FIGURES = tuple((key, label) for key, label, kind in VALIDATION_FIGURES if kind == "ratio")


@dataclass(frozen=True)
class HeldOutFigures:
    test_n: int | None
    test: list[tuple[str, str]]  # (label, value)
    recalibrated_since: bool  # the operating point changed after the test: its dependent figures are left out
    loso: list[tuple[str, str, int | None]]  # (left-out source, COVID-19 AUC, films)
    audit_n: int | None = None
    audit: list[tuple[str, str]] = ()  # the shortcut audit (ml.evaluate --record): (label, value)
    shortcut_suspected: bool = False
    probe: list[tuple[str, str, str]] = ()  # (class, "source vs source", probe AUC on the model's features)

    @property
    def empty(self) -> bool:
        return not self.test and not self.loso and not self.audit


def _shortcut_audit_rows(audit: dict) -> list[tuple[str, str]]:
    rows = [
        (_("Accuracy with the lungs hidden (chance %(chance)s)") % {"chance": _number(audit.get("chance_accuracy"))},
         _number(audit.get("lungs_hidden_accuracy"))),
        (_("Accuracy with only the lungs visible"), _number(audit.get("lungs_only_accuracy"))),
    ]
    share, area = audit.get("gradcam_share_outside_lungs"), audit.get("gradcam_area_outside_lungs")
    if audit.get("gradcam_n") and isinstance(share, (int, float)) and isinstance(area, (int, float)):
        rows.append((_("Grad-CAM share outside the lungs (a uniform map: %(area)s)") % {"area": f"{area:.0%}"},
                     f"{share:.0%}"))
    return [(str(label), value) for label, value in rows if value is not None]


def held_out_figures(model_version: ModelVersion) -> HeldOutFigures:
    """What a model version measured on films it never trained or calibrated on, formatted for display."""
    from .texts import class_display_name

    evaluation = model_version.evaluation or {}
    test = evaluation.get("test") or {}
    rows = [(str(label), _number(test.get(key))) for key, label in HELD_OUT_FIGURES if _number(test.get(key))]
    loso = [(source, _number(run.get("covid_auc")) or "—", run.get("n"))
            for source, run in sorted((evaluation.get("loso") or {}).items())]
    audit = evaluation.get("shortcut_audit") or {}
    probe = [(class_display_name(class_name), " vs ".join(sorted(result.get("sources") or {})),
              _number(result.get("auc")))
             for class_name, result in sorted((audit.get("source_probe") or {}).items())
             if isinstance(result, dict) and _number(result.get("auc"))]
    return HeldOutFigures(test_n=test.get("n"), test=rows, recalibrated_since=bool(test.get("recalibrated_since")),
                          loso=loso, audit_n=audit.get("n"), audit=_shortcut_audit_rows(audit) if audit else [],
                          shortcut_suspected=bool(audit.get("shortcut_suspected")), probe=probe)


def model_versions_with_held_out_figures(versions) -> list[tuple[ModelVersion, HeldOutFigures]]:
    return [(version, held_out_figures(version)) for version in versions]


def model_versions_for_page() -> list[tuple[ModelVersion, HeldOutFigures]]:
    """Every version, newest first, with its held-out figures."""
    return model_versions_with_held_out_figures(ModelVersion.objects.select_related("registered_by").order_by("-created_at"))


@dataclass(frozen=True)
class AnalysisPause:
    """No version is active although one was: an administrator retired it and chose to pause analysis."""

    paused_by: str
    paused_at: datetime | None
    reason: str


def analysis_pause() -> AnalysisPause | None:
    """Why analysis is paused, from the retirement that paused it; None while a version is active (or before any)."""
    from audit.models import AuditEvent

    if ModelVersion.objects.filter(status="active").exists() or not ModelVersion.objects.exists():
        return None
    event = (AuditEvent.objects.filter(action="model_version.retire", details__analysis_paused=True)
             .order_by("-sequence").first())
    if event is None:
        return AnalysisPause(paused_by="", paused_at=None, reason="")
    return AnalysisPause(paused_by=event.actor_username, paused_at=event.created_at,
                         reason=str(event.details.get("reason", "")))


def model_version_get(*, model_version_id: int) -> ModelVersion:
    model_version = ModelVersion.objects.filter(pk=model_version_id).first()
    if model_version is None:
        raise Http404(_("No such model version."))
    return model_version


# Site adaptation (diagnosis.site_adaptation_views)
COMPARED_METRICS = (
    ("macro_auc", _("Macro AUC")), ("accuracy", _("Accuracy")), ("ece", _("Calibration error (ECE)")),
    ("covid_sensitivity", _("COVID-19 alert sensitivity")), ("covid_specificity", _("COVID-19 alert specificity")),
)


def _with_interval(value, interval) -> str:
    if value is None:
        return "—"
    low, high = (interval or [None, None])[:2]
    if low is None or high is None:
        return _number(value) or "—"
    return f"{_number(value)} ({_number(low)}–{_number(high)})"


def _summary_value(summary: dict | None, name: str) -> str:
    summary = summary or {}
    if name in ("covid_sensitivity", "covid_specificity"):
        threshold = summary.get("threshold") or {}
        key = name.removeprefix("covid_")
        return _with_interval(threshold.get(key), threshold.get(f"{key}_ci"))
    return _with_interval(summary.get(name), summary.get(f"{name}_ci"))


def comparison_table(record: dict | None) -> list[dict]:
    """Rows of candidate, active and the paired difference (each with its 95% interval) for one set of films."""
    if not record or not record.get("n"):
        return []
    rows = []
    for name, label in COMPARED_METRICS:
        paired = (record.get("paired") or {}).get(name) or {}
        rows.append({"label": label, "candidate": _summary_value(record.get("metrics"), name),
                     "active": _summary_value(record.get("active_metrics"), name),
                     "difference": _with_interval(paired.get("difference"), paired.get("difference_ci"))})
    return rows


def model_version_comparison(model_version: ModelVersion) -> dict:
    from .services.adaptation import promotion_refusal_reasons, shadow_agreement

    evaluation = model_version.site_evaluation or {}
    return {
        "model_version": model_version,
        "evaluation": evaluation,
        "compared_with": (evaluation.get("compared_with") or {}).get("version"),
        "site_rows": comparison_table(evaluation),
        "dev_rows": comparison_table(evaluation.get("dev_test")),
        "refusal_reasons": promotion_refusal_reasons(model_version),
        "shadow": shadow_agreement(model_version),
        "adaptation": evaluation.get("adaptation") or {},
    }


def site_adaptation_overview() -> dict:
    from diagnosis.models import AdaptationRun, JobStatus, LabelImport

    from .services.site_films import site_film_counts

    imports = list(LabelImport.objects.select_related("started_by")[:10])
    runs = list(AdaptationRun.objects.select_related("requested_by", "parent", "candidate")[:10])
    running = any(job.status in (JobStatus.QUEUED, JobStatus.RUNNING) for job in [*imports, *runs])
    return {"counts": site_film_counts(), "imports": imports, "runs": runs, "running": running,
            "import_dir": settings.CXR_SITE_IMPORT_DIR, "test_share": settings.CXR_SITE_TEST_SHARE,
            "agreement": settings.CXR_SITE_LABEL_AGREEMENT,
            "active": ModelVersion.objects.filter(status="active").first()}


def prediction_history_filtered(*, user: str = "", patient: str = "", model: str = "", alert: str = "",
                                date_from: date | None = None, date_to: date | None = None):
    """Every prediction with its model version, probabilities, threshold, clinician feedback and alerts, newest first.

    Callers check the reader's capability (VIEW_AUDIT) and audit the read."""
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
    return within_days(predictions, "created_at", date_from, date_to)

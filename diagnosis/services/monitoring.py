"""The site monitor (ml.serving.monitoring) run on this site's results.

A model version's results here, and the clinician feedback on them, are
compared with what the version did on its own validation films. The
scheduler runs it on the active version every hour (``diagnosis.monitor_active_model``);
administrators and auditors see the live report on the model versions page.
When a check starts to alarm, the version's monitor state changes, the audit
trail records it, administrators get an e-mail, and every result page of the
version says so until the checks clear.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from accounts.roles import RoleName
from audit.services import audit_record
from diagnosis.models import Feedback, ModelVersion, Prediction
from ml.serving.labels import CLASS_NAMES
from ml.serving.monitoring import (
    ALARM,
    Breach,
    Check,
    Film,
    Limits,
    Reference,
    load_reference,
    overall_status,
    reference_breaches,
    run_checks,
)

from .model_registry import artifact_dir_for, model_version_active, same_operating_point

logger = logging.getLogger(__name__)

NO_REFERENCE = "no_reference"
MONITOR_ACTOR = "site-monitor"


@dataclass
class MonitoringReport:
    model_version: ModelVersion
    since: datetime | None
    status: str  # ok | alarm | too_few | no_reference
    checks: list[Check] = field(default_factory=list)
    results: int = 0
    confirmed: int = 0  # results whose clinician feedback names one of the model's classes
    problem: str = ""  # why there is no reference to compare with
    reference: Reference | None = None
    # Limits the validation films already break: a failure the comparisons with validation cannot show.
    breaches: list[Breach] = field(default_factory=list)
    # Results here per class the model called: the case mix that the warning checks are weighted by and
    # that the ceiling on alerts assumes.
    predicted: dict[str, int] = field(default_factory=dict)

    @property
    def alarms(self) -> list[Check]:
        return [check for check in self.checks if check.status == ALARM]

    @property
    def predicted_mix(self) -> list[tuple[str, int, int]]:
        """(class, results here the model called it, validation films it called it), in the reference's order."""
        if self.reference is None:
            return []
        validation = self.reference.predicted_counts()
        return [(name, self.predicted.get(name, 0), validation[index])
                for index, name in enumerate(self.reference.class_names)]


def site_films(*, model_version: ModelVersion, since: datetime | None = None) -> list[Film]:
    """The version's results here; the truth where the latest clinician feedback names a class."""
    predictions = Prediction.objects.filter(model_version=model_version)
    if since is not None:
        predictions = predictions.filter(created_at__gte=since)
    confirmed: dict[int, str] = {}
    feedback = Feedback.objects.filter(prediction__in=predictions.values("id")).order_by("prediction_id", "updated_at")
    for prediction_id, label in feedback.values_list("prediction_id", "correct_label"):
        confirmed[prediction_id] = label  # several clinicians: the latest judgement counts
    return [
        Film(predicted=label, alert=alert, warnings=tuple(warnings or ()),
             confirmed=confirmed.get(prediction_id) if confirmed.get(prediction_id) in CLASS_NAMES else None)
        for prediction_id, label, alert, warnings in predictions.values_list(
            "id", "predicted_label", "covid_alert", "warnings")
    ]


def reference_for(model_version: ModelVersion) -> tuple[Reference | None, Limits, str]:
    """The version's validation reference and the limits it is held to, or None and the reason in words.

    The sensitivity limit is the one the version promises (its target sensitivity); the
    false-alert limit (CXR_MONITOR_MAX_FALSE_ALERTS) and the highest COVID-19 share
    (CXR_MONITOR_MAX_PREVALENCE) are the site's, 0 meaning none.
    """
    from ml.serving.artifact import load_metadata

    artifact_dir = artifact_dir_for(model_version)
    try:
        metadata = load_metadata(artifact_dir)
        reference = load_reference(metadata)
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("No monitoring reference for %s: %s", model_version, error)
        return None, Limits(), _("The model's artifact folder could not be read.")
    if metadata.sha256 != model_version.file_sha256:
        return None, Limits(), _("The artifact folder now holds another model than this version.")
    if reference is None:
        return None, Limits(), _(
            "This model version has no validation reference: run python -m ml monitor --model %(path)s."
        ) % {"path": model_version.artifact_path}
    if reference.operating_point is not None and not same_operating_point(model_version, reference.operating_point):
        return None, Limits(), _(
            "This model version's validation reference was counted at another temperature or threshold: rebuild it "
            "with python -m ml monitor --model %(path)s (or python -m ml recalibrate on the films it was refitted on)."
        ) % {"path": model_version.artifact_path}
    limits = Limits(min_sensitivity=metadata.target_sensitivity,
                    max_false_alerts=settings.CXR_MONITOR_MAX_FALSE_ALERTS or None,
                    max_prevalence=settings.CXR_MONITOR_MAX_PREVALENCE or None)
    return reference, limits, ""


def model_version_reference_breaches(model_version: ModelVersion) -> list[Breach]:
    """The site's fixed limits that the version's validation films already break ([] without a usable reference)."""
    reference, limits, _problem = reference_for(model_version)
    return reference_breaches(reference, limits) if reference is not None else []


def model_version_monitoring_report(*, model_version: ModelVersion, days: int | None = None) -> MonitoringReport:
    """The monitor's checks on the version's results of the last ``days`` days (None: all of them)."""
    since = timezone.now() - timedelta(days=days) if days else None
    reference, limits, problem = reference_for(model_version)
    films = site_films(model_version=model_version, since=since)
    confirmed = sum(film.confirmed is not None for film in films)
    if reference is None:
        return MonitoringReport(model_version=model_version, since=since, status=NO_REFERENCE, results=len(films),
                                confirmed=confirmed, problem=problem)
    checks = run_checks(reference, films, limits=limits, alpha=settings.CXR_MONITOR_ALPHA,
                        min_films=settings.CXR_MONITOR_MIN_FILMS)
    predicted = {name: sum(film.predicted == name for film in films) for name in reference.class_names}
    return MonitoringReport(model_version=model_version, since=since, status=overall_status(checks), checks=checks,
                            results=len(films), confirmed=confirmed, reference=reference,
                            breaches=reference_breaches(reference, limits), predicted=predicted)


def _alarm_summary(report: MonitoringReport) -> list[dict]:
    return [{"code": check.code, "site": [check.site_hits, check.site_n],
             "validation": [check.reference_hits, check.reference_n], "limit": check.limit, "p_value": check.p_value,
             # compared within predicted classes: validation's rate at this site's mix of them
             "validation_rate_at_site_mix": check.reference_rate if check.strata is not None else None}
            for check in report.alarms]


def model_version_monitor_record(*, report: MonitoringReport) -> bool:
    """Store the report's verdict on its version; True when the alarm started, changed or cleared.

    A change writes an audit event and, when checks alarm, e-mails the administrators
    after commit. Running it twice on the same results changes nothing the second time.
    A report without a reference cannot judge anything, so it never clears an alarm.
    """
    alarms = _alarm_summary(report)
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=report.model_version.pk)
        was_alarming = version.monitor_status == ALARM
        if report.status == NO_REFERENCE and was_alarming:
            logger.warning("Site monitor on %s cannot judge (%s); its alarm stands.", version, report.problem)
            return False
        before = sorted(alarm["code"] for alarm in version.monitor_alarms or [])
        version.monitor_status = report.status
        version.monitor_checked_at = timezone.now()
        version.monitor_alarms = alarms
        version.save(update_fields=["monitor_status", "monitor_checked_at", "monitor_alarms"])
        alarming = report.status == ALARM
        changed = alarming != was_alarming or (alarming and sorted(a["code"] for a in alarms) != before)
        if changed:
            audit_record(
                action="model_version.monitor_alarm" if alarming else "model_version.monitor_clear",
                target=version, username=MONITOR_ACTOR,
                details={"status": report.status, "alarms": alarms, "results": report.results,
                         "confirmed": report.confirmed, "since": report.since.isoformat() if report.since else None},
            )
            if alarming:
                transaction.on_commit(lambda: _mail_administrators(version_id=version.pk, alarms=alarms))
    return changed


def _mail_administrators(*, version_id: int, alarms: list[dict]) -> None:
    version = ModelVersion.objects.get(pk=version_id)
    recipients = sorted(set(settings.CXR_MONITOR_EMAIL_RECIPIENTS) | set(
        User.objects.filter(role__name=RoleName.ADMINISTRATOR, is_active=True).exclude(email="")
        .values_list("email", flat=True)))
    if not recipients:
        logger.warning("Site monitor alarm on %s, but no administrator has an e-mail address.", version)
        return
    def held_to(alarm: dict) -> str:
        if alarm.get("limit") is not None:
            return f"a limit of {alarm['limit']:.0%}"
        text = f"{alarm['validation'][0]}/{alarm['validation'][1]} on validation"
        if alarm.get("validation_rate_at_site_mix") is not None:
            text += f" ({alarm['validation_rate_at_site_mix']:.1%} at this site's mix of predicted classes)"
        return text

    lines = [f"- {alarm['code']}: {alarm['site'][0]}/{alarm['site'][1]} here against {held_to(alarm)} "
             f"(p = {alarm['p_value']:.2g})" for alarm in alarms]
    body = "\n".join([
        f"The site monitor found {version} behaving unlike its validation at this site:", "", *lines, "",
        "Result pages of this version now carry a warning. Review the model versions page in CXR Portal; "
        "consider retiring the version if clinicians confirm the results are wrong.",
    ])
    try:
        send_mail(f"CXR Portal: site monitor alarm on {version}", body, settings.DEFAULT_FROM_EMAIL, recipients,
                  fail_silently=False)
    except OSError:
        logger.exception("Could not e-mail the site monitor alarm on %s", version)


def monitor_active_model() -> str:
    """The scheduled run: check the active version on the configured window and record the verdict."""
    version = model_version_active()
    if version is None:
        return "no_active_model"
    report = model_version_monitoring_report(model_version=version, days=settings.CXR_MONITOR_WINDOW_DAYS or None)
    model_version_monitor_record(report=report)
    return report.status

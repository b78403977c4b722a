"""Texts that must read the same everywhere a result is shown (pages, API, PDF, e-mail), in the reader's language."""

from django.utils import timezone
from django.utils.formats import date_format, number_format
from django.utils.translation import gettext, gettext_lazy, gettext_noop, ngettext

# In English for machine receivers (the alert webhook); people read clinical_disclaimer() in their language.
CLINICAL_DISCLAIMER = gettext_noop(
    "This result supports, and does not replace, the judgement of a qualified clinician. "
    "CXR Portal is not a medical device and does not make a diagnosis."
)


def clinical_disclaimer() -> str:
    return gettext(CLINICAL_DISCLAIMER)


# The model's class names (ml.labels.DISPLAY_NAMES) in the reader's language; ml/ itself stays free of Django.
CLASS_DISPLAY_NAMES = {
    "covid": gettext_lazy("COVID-19"),
    "normal": gettext_lazy("No findings"),
    "pneumonia": gettext_lazy("Pneumonia"),
}


def class_display_name(name: str) -> str:
    return str(CLASS_DISPLAY_NAMES.get(name, name))


def alert_meaning(metrics: dict | None) -> str | None:
    """What a COVID-19 alert of this model version means, from its validation figures; None when unrecorded.

    The alert's threshold favours sensitivity, so it also fires on many films without COVID-19: whoever reads
    an alert should know how many before acting on it.
    """
    metrics = metrics or {}
    sensitivity, specificity = metrics.get("covid_sensitivity"), metrics.get("covid_specificity")
    if not all(isinstance(value, (int, float)) and 0 <= value <= 1 for value in (sensitivity, specificity)):
        return None
    return gettext(
        "The alert asks for a review; it does not confirm COVID-19. On this model version's validation films it "
        "fired on %(caught)d%% of COVID-19 films and also on %(false)d%% of films without COVID-19."
    ) % {"caught": round(100 * sensitivity), "false": round(100 * (1 - specificity))}


def site_not_validated_notice() -> str:
    """Said on every result, alert and report of a version not yet validated on this site's films (issue 20)."""
    return gettext(
        "Not validated at this site: this model version's probabilities and COVID-19 alert threshold were set on "
        "the development pool and have not been checked on this hospital's films."
    )


def alert_under_other_class(*, predicted_label: str, covid_probability: float, covid_threshold: float | None) -> str | None:
    """Why a COVID-19 alert stands under another result, in plain words; None when the result is COVID-19 itself.

    The result is the class with the highest probability; the alert fires from a lower COVID-19 probability on
    purpose, so that fewer COVID-19 films are missed. Without this sentence a red alert under "Pneumonia" reads
    as a contradiction.
    """
    if predicted_label == "covid" or covid_threshold is None or covid_probability < covid_threshold:
        return None
    return gettext(
        "Why an alert when the result is %(result)s: the result is the class with the highest probability, but the "
        "COVID-19 alert is raised on purpose from a lower probability (%(threshold)s), so that fewer COVID-19 cases "
        "are missed. This film's COVID-19 probability (%(probability)s) is below that of %(result)s but above the "
        "alert threshold: review it for COVID-19 as well."
    ) % {"result": class_display_name(predicted_label),
         "threshold": number_format(round(covid_threshold, 3), 3, use_l10n=True),
         "probability": number_format(round(covid_probability, 3), 3, use_l10n=True)}


def _when(moment) -> str:
    return date_format(timezone.localtime(moment), "SHORT_DATETIME_FORMAT")


def alert_state_text(alert) -> str:
    """Who did what to an alert and when, in the same words on the study page, the alert list, the prediction
    history and the PDF: a withdrawn alert was reviewed too, and must never read as "unacknowledged"."""
    if alert.withdrawn_at is not None:
        return gettext("Withdrawn: %(user)s recorded a finding other than COVID-19 (%(when)s).") % {
            "user": alert.withdrawn_by.get_username() if alert.withdrawn_by else "—", "when": _when(alert.withdrawn_at)}
    if alert.acknowledged_at is not None:
        return gettext("Acknowledged by %(user)s (%(when)s).") % {
            "user": alert.acknowledged_by.get_username(), "when": _when(alert.acknowledged_at)}
    return gettext("Open: not yet acknowledged by a clinician.")


# Why a result is less reliable than usual (codes from ml.preprocess and ml.stability), in the reader's language.
RESULT_WARNINGS = {
    "not_radiograph": gettext_lazy(
        "This is probably not a chest radiograph: the uploaded picture is in colour, and radiographs are grey. "
        "The model analyses any picture it is given, so ignore this result and upload the chest film itself."
    ),
    "lungs_not_found": gettext_lazy(
        "The lung fields could not be found on this image (not a frontal chest film, an unusual view, or a very "
        "abnormal film). The model looked at a standard chest region instead: treat this result as unreliable."
    ),
    "unfamiliar": gettext_lazy(
        "This film looks unlike the films the model was trained on (rotated, upside down, inverted grey "
        "scale, or an unusual view or detector?). Its accuracy was never measured on films like this one: "
        "check the image and treat this result as unreliable."
    ),
    "unstable": gettext_lazy(
        "This result is borderline: the model's answer changed when the image was altered in ways that should "
        "not matter (re-encoded, at lower resolution or with another brightness curve). Give it less weight "
        "than its probabilities suggest."
    ),
}


# The same warnings in a word, for lists (the full message is the badge's tooltip).
RESULT_WARNING_LABELS = {
    "not_radiograph": gettext_lazy("not a radiograph: ignore"),
    "lungs_not_found": gettext_lazy("unreliable"),
    "unfamiliar": gettext_lazy("unfamiliar film"),
    "unstable": gettext_lazy("borderline"),
}


# Warnings that void the result, not merely weaken it: shown first, in red.
RESULT_VOIDING_WARNINGS = frozenset({"not_radiograph"})


def result_warning_message(code: str) -> str:
    return str(RESULT_WARNINGS.get(code, code))


def result_warning_label(code: str) -> str:
    return str(RESULT_WARNING_LABELS.get(code, code))


# The site monitor's checks (ml.monitoring) in the reader's language.
MONITOR_CHECKS = {
    "sensitivity": gettext_lazy("Films confirmed COVID-19 that raised the alert (lower than validation alarms)"),
    "false_alerts": gettext_lazy("Films confirmed not COVID-19 that raised the alert (higher than validation alarms)"),
    "sensitivity_target": gettext_lazy(
        "Films confirmed COVID-19 that raised the alert (below the sensitivity the version promises alarms)"),
    "false_alert_limit": gettext_lazy(
        "Films confirmed not COVID-19 that raised the alert (above the site's limit alarms)"),
    "alert_rate_limit": gettext_lazy(
        "All results that raised the alert (above what the site's highest COVID-19 share and false-alert limit "
        "allow alarms: more COVID-19 than expected, or too many false alerts)"),
}


def monitor_check_description(code: str, *, stratified: bool = False) -> str:
    """What a site-monitor check counts; ``stratified``: compared within each class the model called."""
    kind, _separator, name = code.partition(":")
    if kind == "recall":
        return gettext("Films confirmed %(class)s that the model called %(class)s (lower than validation alarms)") % {
            "class": class_display_name(name)}
    if kind == "warning" and stratified:
        return gettext(
            "Results marked “%(warning)s”, compared within each class the model called, since the warning is "
            "commoner for some classes than others (higher than validation alarms)") % {
            "warning": result_warning_label(name)}
    if kind == "warning":
        return gettext("Results marked “%(warning)s” (higher than validation alarms)") % {
            "warning": result_warning_label(name)}
    return str(MONITOR_CHECKS.get(code, code))


def _monitor_finding(code: str) -> str:
    """What an alarming site-monitor check means, as the end of "this model ..."."""
    kind, _separator, name = code.partition(":")
    if kind == "recall":
        return gettext("recognises fewer %(class)s films than on validation") % {"class": class_display_name(name)}
    if kind == "warning":
        return gettext("marks more results “%(warning)s” than on validation") % {"warning": result_warning_label(name)}
    return str(MONITOR_FINDINGS.get(code, code))


MONITOR_FINDINGS = {
    "sensitivity": gettext_lazy("misses more COVID-19 cases than on validation"),
    "sensitivity_target": gettext_lazy("misses more COVID-19 cases than this version promises"),
    "false_alerts": gettext_lazy("raises more false COVID-19 alerts than on validation"),
    "false_alert_limit": gettext_lazy("raises more false COVID-19 alerts than this site allows"),
    "alert_rate_limit": gettext_lazy("raises more COVID-19 alerts overall than this site's limits allow"),
}


def monitor_summary(report, *, days: int) -> str:
    """The site monitor's answer in one plain paragraph: does this model behave here as on validation?"""
    period = (ngettext("In the last %(days)d day", "In the last %(days)d days", days) % {"days": days} if days
              else gettext("Over all its results"))
    counts = gettext("%(results)d results, %(confirmed)d of them confirmed by clinician feedback") % {
        "results": report.results, "confirmed": report.confirmed}
    if report.status == "alarm":
        findings = [_monitor_finding(check.code) for check in report.alarms]
        return gettext(
            "%(period)s (%(counts)s), this model behaves differently here than on its validation films: it "
            "%(findings)s. Review its results with extra care; administrators should consider retiring it or "
            "adapting it to this site."
        ) % {"period": period, "counts": counts, "findings": "; ".join(findings)}
    if report.status == "ok":
        return gettext(
            "%(period)s (%(counts)s), this model behaves here as it did on its validation films: no check finds a "
            "difference too large to be chance. That does not make every result right; only what clinicians "
            "confirmed can be checked."
        ) % {"period": period, "counts": counts}
    if report.status == "no_reference":
        return gettext("This model version cannot be compared with its validation yet: %(problem)s") % {
            "problem": report.problem}
    return gettext(
        "%(period)s (%(counts)s), there is too little to tell yet whether this model behaves here as on its "
        "validation films. Clinician feedback on results (agree or correct) is what the checks need."
    ) % {"period": period, "counts": counts}

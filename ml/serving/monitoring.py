"""Is the model still doing at this site what it did on validation?

The familiarity check looks at one film at a time and cannot tell a new
hospital's films from the development pool's (the leave-one-source-out runs
show it). A new site shows itself in the results it produces instead: the
leave-one-source-out run that never saw the NIH collection raised a COVID-19
alert on 93% of NIH films, none of them COVID-19. This monitor compares what
a model version does at a site with what it did on its own validation films,
where the truth was known, and raises an alarm when the difference is too
large to be chance.

Two kinds of evidence, each tested one-sided: with Fisher's exact test
against the validation counts (the reference is a sample too, so its size
counts), or with an exact binomial test against a fixed limit:

- **Clinician feedback**, the site's truth. Judged only on films whose
  feedback names one of the model's classes, so the checks do not depend on
  how common each disease is at the site:

  - ``sensitivity``: the share of films confirmed COVID-19 that raised the
    alert, lower than on validation;
  - ``false_alerts``: the share of films confirmed not COVID-19 that raised
    the alert, higher than on validation;
  - ``recall:<class>``: the share of films confirmed as a class that the
    model called that class, lower than on validation;
  - ``sensitivity_target`` and ``false_alert_limit`` (exact binomial tests
    against fixed rates, ``Limits``): the sensitivity the version promises,
    and a false-alert share no site should accept (default 0.8). Validation
    cannot show what it never held: the leave-one-source-out run without NIH
    had only 20 non-COVID-19 validation films and alerted on all of them, so
    at NIH it did no worse than on validation, and only the limit alarms.

  Clinicians choose which films to give feedback on; if they mostly correct
  the wrong ones, these checks alarm early. That is the safe direction.

- **Warnings** on every result, no feedback needed: the share of results
  carrying ``lungs_not_found``, ``unfamiliar`` or ``unstable``, higher than on
  validation. How often a warning appears depends on what the model called the
  film (on the production model's validation films ``unfamiliar`` marked 9 of
  106 films called COVID-19 and 5 of 166 others, ``unstable`` the reverse), so
  a site with more COVID-19 than validation would see more ``unfamiliar``
  results with nothing wrong. The comparison is therefore made within each
  predicted class (Fisher's exact test stratified by predicted class: the
  site's hits summed over the classes, each class's hits hypergeometric given
  its totals), and the validation rate shown is the one validation's per-class
  rates give for the site's own mix of predicted classes. References stored
  before the per-class counts were kept are compared as a whole.

- **Alerts** on every result, no feedback needed (``alert_rate_limit``, an
  exact binomial test against a ceiling). If at most ``max_prevalence`` of the
  site's films are COVID-19 and the alert fires on at most ``max_false_alerts``
  of the others, then at most ``max_prevalence + (1 - max_prevalence) *
  max_false_alerts`` of all results raise it, whatever the sensitivity. More
  alerts than that mean one of the two does not hold here: the site sends more
  COVID-19 than it expects, or the alert fires on too many other films. Both
  need a look; the check cannot say which. The share of alerts is no use
  against validation, whose COVID-19 share is not the site's.

A check with fewer than ``min_films`` films at the site says "too few" rather
than guess. Each check alarms at ``alpha`` (default 0.001, so that running the
monitor after every film on a site like the validation films rarely alarms;
``python -m ml monitor --simulate`` measures how rarely).

These are the rules the portal serves (``diagnosis.services.monitoring``) and the
reference an artifact carries (``add_reference``: the validation films' confusion
matrix, alerts and warnings, found exactly as the worker finds them, stored in
metadata.json under ``monitoring``). ``python -m ml monitor`` stores it;
``ml.evaluation.monitor_replay`` (``python -m ml monitor --simulate``) replays a
labelled collection as a site's stream to measure how often the monitor alarms
falsely and how soon it alarms at a new hospital.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ml.serving.artifact import load_metadata, save_metadata
from ml.serving.binomial import binomial_tail, log_choose
from ml.serving.imaging import decode_path
from ml.serving.labels import CLASS_NAMES, POSITIVE_CLASS

REFERENCE_KEY = "monitoring"
MONITORED_WARNINGS = ("lungs_not_found", "unfamiliar", "unstable")
DEFAULT_ALPHA = 0.001
DEFAULT_MIN_FILMS = 10
DEFAULT_MAX_FALSE_ALERTS = 0.8
DEFAULT_MAX_PREVALENCE = 0.3

OK = "ok"
ALARM = "alarm"
TOO_FEW = "too_few"


@dataclass(frozen=True)
class Film:
    """One result as the monitor sees it: what the model said and, when a clinician said, the truth."""

    predicted: str
    alert: bool
    warnings: tuple[str, ...] = ()
    confirmed: str | None = None  # a class name from clinician feedback (or the dataset label); None: unknown


@dataclass(frozen=True)
class OperatingPoint:
    """The temperature and COVID-19 threshold a reference's films were run at."""

    temperature: float
    covid_threshold: float


@dataclass
class Reference:
    """What the model did on its validation films, where every label was known."""

    class_names: list[str]
    confusion: list[list[int]]  # [true][predicted] film counts
    alerts: dict[str, int]  # films of each true class that raised the COVID-19 alert
    warnings: dict[str, int]  # films carrying each monitored warning
    n: int
    subset: str = "val"
    # Stamped by add_reference; None: stored before references carried it.
    operating_point: OperatingPoint | None = None
    # Films carrying each monitored warning, per predicted class (class_names order); None: stored before
    # references kept it, and the warning checks compare the whole of the films instead.
    warnings_by_predicted: dict[str, list[int]] | None = None

    def class_count(self, name: str) -> int:
        return int(sum(self.confusion[self.class_names.index(name)]))

    def predicted_counts(self) -> list[int]:
        """The films the model called each class (the confusion matrix's columns)."""
        return [int(sum(row[index] for row in self.confusion)) for index in range(len(self.class_names))]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Reference":
        return cls(
            class_names=list(data["class_names"]), confusion=[[int(v) for v in row] for row in data["confusion"]],
            alerts={k: int(v) for k, v in data["alerts"].items()},
            warnings={k: int(v) for k, v in data["warnings"].items()}, n=int(data["n"]),
            subset=data.get("subset", "val"),
            operating_point=OperatingPoint(**data["operating_point"]) if data.get("operating_point") else None,
            warnings_by_predicted={code: [int(v) for v in counts]
                                   for code, counts in data["warnings_by_predicted"].items()}
            if data.get("warnings_by_predicted") else None,
        )


def reference_from_films(films: Sequence[Film], *, class_names: Sequence[str] = CLASS_NAMES,
                         subset: str = "val") -> Reference:
    """The reference from labelled films (every film needs ``confirmed``)."""
    names = list(class_names)
    confusion = [[0] * len(names) for _ in names]
    alerts = {name: 0 for name in names}
    warnings = {code: 0 for code in MONITORED_WARNINGS}
    by_predicted = {code: [0] * len(names) for code in MONITORED_WARNINGS}
    for film in films:
        if film.confirmed not in names:
            raise ValueError("every reference film needs its true class")
        confusion[names.index(film.confirmed)][names.index(film.predicted)] += 1
        alerts[film.confirmed] += int(film.alert)
        for code in MONITORED_WARNINGS:
            warnings[code] += int(code in film.warnings)
            by_predicted[code][names.index(film.predicted)] += int(code in film.warnings)
    return Reference(class_names=names, confusion=confusion, alerts=alerts, warnings=warnings, n=len(films),
                     subset=subset, warnings_by_predicted=by_predicted)


def fisher_one_sided(*, site_hits: int, site_n: int, reference_hits: int, reference_n: int, site_higher: bool) -> float:
    """One-sided p-value of Fisher's exact test that the site's rate is higher (or lower) than the reference's.

    Conditional on the total hits, the site's hits are hypergeometric; the
    p-value is the probability of a split at least as extreme as the one seen.
    """
    low, high = _site_hits_range(site_hits=site_hits, site_n=site_n, reference_hits=reference_hits,
                                 reference_n=reference_n)
    outcomes = np.arange(site_hits, high + 1) if site_higher else np.arange(low, site_hits + 1)
    if len(outcomes) == 0:
        return 1.0
    logs = _log_hypergeometric(outcomes, site_n=site_n, reference_n=reference_n,
                               total_hits=site_hits + reference_hits)
    top = logs.max()
    return float(min(1.0, np.exp(top) * np.exp(logs - top).sum()))


def _site_hits_range(*, site_hits: int, site_n: int, reference_hits: int, reference_n: int) -> tuple[int, int]:
    """The fewest and the most hits the site can hold, given both samples' sizes and their hits together."""
    total_hits = site_hits + reference_hits
    return max(0, total_hits - reference_n), min(total_hits, site_n)


def _log_hypergeometric(outcomes: np.ndarray, *, site_n: int, reference_n: int, total_hits: int) -> np.ndarray:
    """log P(the site holds ``outcomes`` of the ``total_hits``), the split being random."""
    total_n = site_n + reference_n
    return (log_choose(total_hits, outcomes) + log_choose(total_n - total_hits, site_n - outcomes)
            - log_choose(total_n, site_n))


def stratified_fisher_one_sided(strata: Sequence[tuple[int, int, int, int]], *, site_higher: bool) -> float:
    """One-sided exact test that the site's rate is higher (or lower) than the reference's within strata.

    ``strata`` holds (site_hits, site_n, reference_hits, reference_n) per
    stratum. Under the null hypothesis the rate may differ between strata but
    not between site and reference within one; given each stratum's totals,
    the site's hits in it are hypergeometric and independent of the other
    strata, so their sum has the convolution of those distributions (the exact
    conditional test of a common odds ratio of 1, as in Mantel and Haenszel's
    test). With one stratum it is ``fisher_one_sided``.
    """
    distribution, offset, observed = np.ones(1), 0, 0
    for site_hits, site_n, reference_hits, reference_n in strata:
        if not site_n:
            continue
        low, high = _site_hits_range(site_hits=site_hits, site_n=site_n, reference_hits=reference_hits,
                                     reference_n=reference_n)
        logs = _log_hypergeometric(np.arange(low, high + 1), site_n=site_n, reference_n=reference_n,
                                   total_hits=site_hits + reference_hits)
        probabilities = np.exp(logs - logs.max())
        distribution = np.convolve(distribution, probabilities / probabilities.sum())
        offset += low
        observed += site_hits
    index = observed - offset
    tail = distribution[index:] if site_higher else distribution[:index + 1]
    return float(min(1.0, tail.sum()))


def critical_hits(*, site_n: int, p_value: Callable[[int], float], site_higher: bool, alpha: float) -> int:
    """The fewest hits among ``site_n`` that alarm (site_higher), or the most that alarm (lower).

    ``p_value(hits)`` is the check's test; site_n + 1 (or -1) when no count
    alarms. The p-value moves monotonically with the site's hits, so a
    bisection finds the boundary.
    """
    def alarms(hits: int) -> bool:
        return p_value(hits) < alpha

    if site_higher:
        if not alarms(site_n):
            return site_n + 1
        low, high = -1, site_n  # alarms(high) holds; alarms(low) does not (low = -1 stands for "none")
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if alarms(middle) else (middle, high)
        return high
    if not alarms(0):
        return -1
    low, high = 0, site_n + 1  # alarms(low) holds; alarms(high) does not
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if alarms(middle) else (low, middle)
    return low


def wilson_interval(hits: int, n: int, *, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval (95% by default) for a share of hits/n; None without films."""
    if n <= 0:
        return None
    share = hits / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Check:
    code: str
    description: str
    site_hits: int
    site_n: int
    reference_hits: int
    reference_n: int
    alarm_if_higher: bool
    p_value: float | None
    status: str
    limit: float | None = None  # a fixed rate the site is held to, instead of the validation films' rate
    # For a check compared within predicted classes: [site_hits, site_n, reference_hits, reference_n] per class.
    strata: list[list[int]] | None = None

    @property
    def site_rate(self) -> float | None:
        return self.site_hits / self.site_n if self.site_n else None

    def _stratum_rates(self) -> list[tuple[float, int, float, int]]:
        """(site share of films, site films, validation rate, validation films) per class the site has films in.

        A class validation never predicted takes validation's overall rate (it adds nothing to the test).
        """
        overall = self.reference_hits / self.reference_n if self.reference_n else 0.0
        return [(site_n / self.site_n, site_n, reference_hits / reference_n if reference_n else overall, reference_n)
                for _hits, site_n, reference_hits, reference_n in self.strata if site_n]

    @property
    def reference_rate(self) -> float | None:
        """The limit; or validation's rate, within predicted classes weighted by the site's own mix of them."""
        if self.limit is not None:
            return self.limit
        if self.strata is not None and self.site_n:
            return sum(share * rate for share, _n, rate, _m in self._stratum_rates())
        return self.reference_hits / self.reference_n if self.reference_n else None

    @property
    def site_interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.site_hits, self.site_n)

    @property
    def reference_interval(self) -> tuple[float, float] | None:
        """The validation rate's own 95% interval (the validation films are a sample too); None for a limit.

        Within predicted classes, a normal approximation: each class's rate varies with its own validation films.
        """
        if self.limit is not None:
            return None
        if self.strata is None or not self.site_n:
            return wilson_interval(self.reference_hits, self.reference_n)
        variance = sum(share * share * rate * (1.0 - rate) / reference_n
                       for share, _n, rate, reference_n in self._stratum_rates() if reference_n)
        rate, half = self.reference_rate, 1.96 * math.sqrt(variance)
        return max(0.0, rate - half), min(1.0, rate + half)

    def to_dict(self) -> dict:
        return {**asdict(self), "site_rate": self.site_rate, "reference_rate": self.reference_rate}


@dataclass(frozen=True)
class Limits:
    """Fixed rates a site holds the model to, whatever its validation films showed."""

    # The sensitivity the version promises (its target_sensitivity): alarms when confirmed COVID-19 films
    # raise the alert less often than this.
    min_sensitivity: float | None = None
    # A false-alert share no site should accept: validation cannot show what it never held (a model that
    # alerted on every non-COVID-19 validation film passes the relative check wherever it goes).
    max_false_alerts: float | None = None
    # The highest share of COVID-19 among the site's films. With max_false_alerts it caps the share of all
    # results that may raise the alert, a check that needs no feedback.
    max_prevalence: float | None = None

    @property
    def max_alert_rate(self) -> float | None:
        """The most results that may raise the alert: every COVID-19 film, and the limit's share of the rest."""
        if self.max_prevalence is None or self.max_false_alerts is None:
            return None
        return self.max_prevalence + (1.0 - self.max_prevalence) * self.max_false_alerts


@dataclass(frozen=True)
class _Rule:
    """One check: which site films it counts (member), which of those are hits, and what they are held to."""

    code: str
    description: str
    reference_hits: int
    reference_n: int
    alarm_if_higher: bool
    member: Callable[[Film], bool]
    hit: Callable[[Film], bool]
    limit: float | None = None
    # Whether the validation films' own rate means the same as the site's: not for the share of all results
    # that alert, which depends on how many of the films are COVID-19.
    reference_comparable: bool = True
    # Compared within strata: each film's stratum, and the reference's (hits, films) in each.
    stratum: Callable[[Film], int] | None = None
    reference_strata: tuple[tuple[int, int], ...] | None = None

    @property
    def usable(self) -> bool:
        return self.limit is not None or self.reference_n > 0

    def p_value(self, hits: int, n: int) -> float:
        if self.limit is not None:
            return binomial_tail(hits=hits, n=n, rate=self.limit, at_least=self.alarm_if_higher)
        return fisher_one_sided(site_hits=hits, site_n=n, reference_hits=self.reference_hits,
                                reference_n=self.reference_n, site_higher=self.alarm_if_higher)

    def stratified_p_value(self, site: Sequence[tuple[int, int]]) -> float:
        """The p-value from the site's (hits, films) in each stratum."""
        return stratified_fisher_one_sided(
            [(hits, n, reference_hits, reference_n)
             for (hits, n), (reference_hits, reference_n) in zip(site, self.reference_strata, strict=True)],
            site_higher=self.alarm_if_higher)


def _rules(reference: Reference, limits: Limits) -> list[_Rule]:
    names = reference.class_names
    not_covid = [name for name in names if name != POSITIVE_CLASS]

    def is_covid(film: Film) -> bool:
        return film.confirmed == POSITIVE_CLASS

    def is_not_covid(film: Film) -> bool:
        return film.confirmed in not_covid

    def alerted(film: Film) -> bool:
        return film.alert

    covid_alerts = (reference.alerts[POSITIVE_CLASS], reference.class_count(POSITIVE_CLASS))
    false_alerts = (sum(reference.alerts[name] for name in not_covid), sum(reference.class_count(n) for n in not_covid))
    rules = [
        _Rule("sensitivity", "Films confirmed COVID-19 that raised the alert", *covid_alerts, False,
              member=is_covid, hit=alerted),
        _Rule("false_alerts", "Films confirmed not COVID-19 that raised the alert", *false_alerts, True,
              member=is_not_covid, hit=alerted),
    ]
    if limits.min_sensitivity is not None:
        rules.append(_Rule("sensitivity_target", "Films confirmed COVID-19 that raised the alert, against the "
                           "sensitivity the version promises", *covid_alerts, False, member=is_covid, hit=alerted,
                           limit=limits.min_sensitivity))
    if limits.max_false_alerts is not None:
        rules.append(_Rule("false_alert_limit", "Films confirmed not COVID-19 that raised the alert, against the "
                           "site's limit", *false_alerts, True, member=is_not_covid, hit=alerted,
                           limit=limits.max_false_alerts))
    if limits.max_alert_rate is not None:
        rules.append(_Rule("alert_rate_limit", "Results that raised the alert, against the most that the site's "
                           "highest COVID-19 share and its false-alert limit allow", sum(reference.alerts.values()),
                           reference.n, True, member=lambda film: True, hit=alerted, limit=limits.max_alert_rate,
                           reference_comparable=False))
    for index, name in enumerate(names):
        rules.append(_Rule(
            f"recall:{name}", f"Films confirmed {name} that the model called {name}",
            reference.confusion[index][index], reference.class_count(name), False,
            member=lambda film, name=name: film.confirmed == name, hit=lambda film, name=name: film.predicted == name,
        ))
    predicted = reference.predicted_counts()
    by_predicted = reference.warnings_by_predicted or {}
    for code in MONITORED_WARNINGS:
        stratified = code in by_predicted
        rules.append(_Rule(
            f"warning:{code}", f"Results carrying the warning {code}"
            + (", compared within each class the model called" if stratified else ""),
            reference.warnings.get(code, 0), reference.n, True,
            # a result whose class the reference does not know has no stratum (it cannot happen for the
            # version's own results, but a page must not fail on one)
            member=(lambda film: film.predicted in names) if stratified else (lambda film: True),
            hit=lambda film, code=code: code in film.warnings,
            stratum=(lambda film: names.index(film.predicted)) if stratified else None,
            reference_strata=tuple(zip(by_predicted[code], predicted)) if stratified else None,
        ))
    return rules


def run_checks(reference: Reference, films: Iterable[Film], *, limits: Limits = Limits(),
               alpha: float = DEFAULT_ALPHA, min_films: int = DEFAULT_MIN_FILMS) -> list[Check]:
    """Every check of the module docstring, for the films seen at a site."""
    films = list(films)
    checks = []
    for rule in _rules(reference, limits):
        members = [film for film in films if rule.member(film)]
        member_hits = [bool(rule.hit(film)) for film in members]
        hits = sum(member_hits)
        site_strata = None
        if rule.stratum is not None:
            site_strata = [[0, 0] for _ in rule.reference_strata]
            for film, hit in zip(members, member_hits):
                stratum = site_strata[rule.stratum(film)]
                stratum[0] += hit
                stratum[1] += 1
        if len(members) < min_films or not rule.usable:
            p_value, status = None, TOO_FEW
        else:
            p_value = (rule.p_value(hits, len(members)) if site_strata is None
                       else rule.stratified_p_value(site_strata))
            status = ALARM if p_value < alpha else OK
        strata = None if site_strata is None else [
            [*site, *reference] for site, reference in zip(site_strata, rule.reference_strata, strict=True)]
        checks.append(Check(code=rule.code, description=rule.description, site_hits=hits, site_n=len(members),
                            reference_hits=rule.reference_hits, reference_n=rule.reference_n,
                            alarm_if_higher=rule.alarm_if_higher, p_value=p_value, status=status, limit=rule.limit,
                            strata=strata))
    return checks


@dataclass(frozen=True)
class Breach:
    """A fixed limit that the validation films themselves already break."""

    code: str
    reference_hits: int
    reference_n: int
    limit: float
    alarm_if_higher: bool


def reference_breaches(reference: Reference, limits: Limits) -> list[Breach]:
    """The limits the reference already breaks, on its point estimate.

    A failure that validation already showed is invisible to the comparisons
    with validation (the LOSO run without NIH alerted on 20 of 20 non-COVID-19
    validation films); only the limit checks can catch it at a site, so whoever
    activates such a version should know before the first film.
    """
    breaches = []
    for rule in _rules(reference, limits):
        if rule.limit is None or not rule.reference_comparable or not rule.reference_n:
            continue
        rate = rule.reference_hits / rule.reference_n
        if (rate > rule.limit) if rule.alarm_if_higher else (rate < rule.limit):
            breaches.append(Breach(code=rule.code, reference_hits=rule.reference_hits, reference_n=rule.reference_n,
                                   limit=rule.limit, alarm_if_higher=rule.alarm_if_higher))
    return breaches


def overall_status(checks: Sequence[Check]) -> str:
    statuses = {check.status for check in checks}
    if ALARM in statuses:
        return ALARM
    return OK if OK in statuses else TOO_FEW


def films_from_pixels(predictor, films: Iterable[np.ndarray], labels: Sequence[str], *, progress: bool = False,
                      desc: str = "films") -> list[Film]:
    """Each decoded, labelled film classified exactly as the worker classifies it (stability check included)."""
    from tqdm import tqdm

    results = []
    for pixels, label in tqdm(zip(films, labels), total=len(labels), desc=desc, unit="image", disable=not progress):
        result = predictor.predict_one(pixels, check_stability=True)
        results.append(Film(predicted=result.label, alert=result.covid_alert, warnings=tuple(result.warnings),
                            confirmed=label))
    return results


def films_from_samples(predictor, samples, *, progress: bool = True, desc: str = "films") -> list[Film]:

    return films_from_pixels(predictor, (decode_path(sample.path).pixels for sample in samples),
                             [sample.label for sample in samples], progress=progress, desc=desc)


def add_reference(artifact_dir: Path, reference: Reference) -> None:

    metadata = load_metadata(artifact_dir)
    point = OperatingPoint(temperature=float(metadata.temperature), covid_threshold=float(metadata.covid_threshold))
    metadata.monitoring = replace(reference, operating_point=point).to_dict()
    save_metadata(artifact_dir=artifact_dir, metadata=metadata)


def load_reference(metadata) -> Reference | None:
    """The reference stored with an artifact (None: ``python -m ml monitor`` has not been run on it)."""
    data = getattr(metadata, REFERENCE_KEY, None)
    return Reference.from_dict(data) if data else None



"""The site monitor's rules: Fisher's exact test, the checks and the alarm boundaries."""

import math

import numpy as np
import pytest

from ml.serving.monitoring import (
    ALARM,
    OK,
    TOO_FEW,
    Film,
    Limits,
    Reference,
    critical_hits,
    fisher_one_sided,
    overall_status,
    reference_breaches,
    reference_from_films,
    run_checks,
    stratified_fisher_one_sided,
)


def _films(rng, n: int, *, accuracy: float, alert_if_not_covid: float, unfamiliar: float = 0.05,
           classes=("covid", "normal", "pneumonia"), confirmed: bool = True) -> list[Film]:
    films = []
    for _ in range(n):
        truth = str(rng.choice(classes))
        predicted = truth if rng.random() < accuracy else str(rng.choice([c for c in classes if c != truth]
                                                                          or ["covid"]))
        alert = rng.random() < (0.97 if truth == "covid" else alert_if_not_covid)
        warnings = ("unfamiliar",) if rng.random() < unfamiliar else ()
        films.append(Film(predicted=predicted, alert=alert, warnings=warnings, confirmed=truth if confirmed else None))
    return films


@pytest.fixture
def reference() -> Reference:
    return reference_from_films(_films(np.random.default_rng(0), 300, accuracy=0.8, alert_if_not_covid=0.3))


def _hypergeometric_tail(site_hits, site_n, reference_hits, reference_n, higher):
    total_n, total_hits = site_n + reference_n, site_hits + reference_hits
    outcomes = range(site_hits, min(total_hits, site_n) + 1) if higher else range(max(0, total_hits - reference_n),
                                                                                    site_hits + 1)
    return sum(math.comb(total_hits, k) * math.comb(total_n - total_hits, site_n - k) for k in outcomes) / math.comb(
        total_n, site_n)


def test_fisher_matches_the_lady_tasting_tea():
    # Fisher's own example: 3 of 4 cups right against 1 of 4 gives p = 17/70 one-sided.
    assert fisher_one_sided(site_hits=3, site_n=4, reference_hits=1, reference_n=4, site_higher=True) == \
        pytest.approx(17 / 70)


@pytest.mark.parametrize("higher", [True, False])
def test_fisher_matches_exact_integer_arithmetic(higher):
    rng = np.random.default_rng(3)
    for _ in range(50):
        site_n, reference_n = int(rng.integers(1, 80)), int(rng.integers(1, 300))
        site_hits, reference_hits = int(rng.integers(0, site_n + 1)), int(rng.integers(0, reference_n + 1))
        expected = _hypergeometric_tail(site_hits, site_n, reference_hits, reference_n, higher)
        assert fisher_one_sided(site_hits=site_hits, site_n=site_n, reference_hits=reference_hits,
                                reference_n=reference_n, site_higher=higher) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("higher", [True, False])
def test_alarm_boundary_is_where_the_p_value_crosses_alpha(higher):
    for site_n in (0, 1, 10, 37, 120):
        def p_value(hits, site_n=site_n):
            return fisher_one_sided(site_hits=hits, site_n=site_n, reference_hits=30, reference_n=100,
                                    site_higher=higher)

        boundary = critical_hits(site_n=site_n, p_value=p_value, site_higher=higher, alpha=0.01)
        alarming = [k for k in range(site_n + 1) if p_value(k) < 0.01]
        if higher:
            assert boundary == (min(alarming) if alarming else site_n + 1)
            assert alarming == list(range(boundary, site_n + 1))
        else:
            assert boundary == (max(alarming) if alarming else -1)
            assert alarming == list(range(0, boundary + 1))


def test_reference_counts_confusion_alerts_and_warnings():
    films = [Film("covid", True, (), "covid"), Film("normal", True, ("unfamiliar",), "normal"),
             Film("pneumonia", False, ("unstable",), "normal")]
    reference = reference_from_films(films)
    assert reference.confusion == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    assert reference.alerts == {"covid": 1, "normal": 1, "pneumonia": 0}
    assert reference.warnings == {"lungs_not_found": 0, "unfamiliar": 1, "unstable": 1}
    assert Reference.from_dict(reference.to_dict()) == reference


def test_reference_counts_warnings_per_predicted_class():
    films = [Film("covid", True, ("unfamiliar",), "covid"), Film("covid", True, ("unfamiliar", "unstable"), "normal"),
             Film("normal", False, ("unstable",), "normal"), Film("pneumonia", False, (), "pneumonia")]
    reference = reference_from_films(films)
    assert reference.predicted_counts() == [2, 1, 1]
    assert reference.warnings_by_predicted == {"lungs_not_found": [0, 0, 0], "unfamiliar": [2, 0, 0],
                                               "unstable": [1, 1, 0]}
    assert Reference.from_dict(reference.to_dict()) == reference


def _stratified_tail(strata, higher):
    """The exact one-sided p-value by enumerating every split of every stratum, in integers."""
    from fractions import Fraction
    from itertools import product

    tables = []
    for site_hits, site_n, reference_hits, reference_n in strata:
        total_hits, total_n = site_hits + reference_hits, site_n + reference_n
        tables.append({k: Fraction(math.comb(total_hits, k) * math.comb(total_n - total_hits, site_n - k),
                                   math.comb(total_n, site_n))
                       for k in range(max(0, total_hits - reference_n), min(total_hits, site_n) + 1)})
    observed = sum(stratum[0] for stratum in strata)
    tail = Fraction(0)
    for split in product(*(table.items() for table in tables)):
        total = sum(k for k, _ in split)
        if (total >= observed) if higher else (total <= observed):
            tail += math.prod((probability for _, probability in split), start=Fraction(1))
    return float(tail)


@pytest.mark.parametrize("higher", [True, False])
def test_stratified_fisher_matches_exact_integer_arithmetic(higher):
    rng = np.random.default_rng(11)
    for _ in range(30):
        strata = []
        for _stratum in range(int(rng.integers(1, 4))):
            site_n, reference_n = int(rng.integers(0, 15)), int(rng.integers(0, 40))
            strata.append((int(rng.integers(0, site_n + 1)), site_n, int(rng.integers(0, reference_n + 1)),
                           reference_n))
        assert stratified_fisher_one_sided(strata, site_higher=higher) == pytest.approx(
            _stratified_tail(strata, higher), rel=1e-9, abs=1e-15)


def test_stratified_fisher_with_one_stratum_is_fisher():
    for site_hits, site_n, reference_hits, reference_n in ((3, 4, 1, 4), (12, 95, 9, 102), (0, 10, 5, 50)):
        for higher in (True, False):
            assert stratified_fisher_one_sided([(site_hits, site_n, reference_hits, reference_n)],
                                               site_higher=higher) == pytest.approx(
                fisher_one_sided(site_hits=site_hits, site_n=site_n, reference_hits=reference_hits,
                                 reference_n=reference_n, site_higher=higher), rel=1e-12)


def _mixed_films(rng, n: int, *, covid_share: float, unfamiliar_if_covid: float, unfamiliar_otherwise: float):
    """Films whose ``unfamiliar`` rate depends on what the model called them, as the production model's do."""
    films = []
    for _ in range(n):
        covid = rng.random() < covid_share
        label = "covid" if covid else str(rng.choice(["normal", "pneumonia"]))
        unfamiliar = rng.random() < (unfamiliar_if_covid if covid else unfamiliar_otherwise)
        films.append(Film(predicted=label, alert=covid, warnings=("unfamiliar",) if unfamiliar else (),
                          confirmed=label))
    return films


def test_warnings_are_compared_within_predicted_classes_so_a_covid_heavy_site_is_not_an_alarm():
    # Validation: 30% COVID-19, unfamiliar on 20% of films called COVID-19 and 1% of the others.
    validation = _mixed_films(np.random.default_rng(12), 800, covid_share=0.3, unfamiliar_if_covid=0.2,
                              unfamiliar_otherwise=0.01)
    reference = reference_from_films(validation)
    # A site with the same per-class rates but 95% COVID-19: more unfamiliar results, nothing wrong.
    site = [Film(f.predicted, f.alert, f.warnings) for f in _mixed_films(
        np.random.default_rng(13), 800, covid_share=0.95, unfamiliar_if_covid=0.2, unfamiliar_otherwise=0.01)]
    check = next(c for c in run_checks(reference, site) if c.code == "warning:unfamiliar")
    assert check.status == OK
    assert "within each class" in check.description
    assert check.site_rate > 2 * check.reference_hits / check.reference_n
    # Validation's rate shown for the site is its per-class rates at the site's mix of predicted classes.
    (covid_hits, covid_n, covid_ref_hits, covid_ref_n), *others = check.strata
    other_n = sum(stratum[1] for stratum in others)
    expected = (covid_n * covid_ref_hits / covid_ref_n
                + sum(stratum[1] * stratum[2] / stratum[3] for stratum in others)) / (covid_n + other_n)
    assert check.reference_rate == pytest.approx(expected)
    low, high = check.reference_interval
    assert low < check.reference_rate < high
    # The same reference without the per-class counts (stored before they were kept) compares the whole.
    whole = Reference.from_dict({**reference.to_dict(), "warnings_by_predicted": None})
    old = next(c for c in run_checks(whole, site) if c.code == "warning:unfamiliar")
    assert old.status == ALARM and old.strata is None
    # And a site whose films called COVID-19 are unfamiliar twice as often alarms.
    worse = [Film(f.predicted, f.alert, f.warnings) for f in _mixed_films(
        np.random.default_rng(14), 800, covid_share=0.3, unfamiliar_if_covid=0.4, unfamiliar_otherwise=0.01)]
    assert next(c for c in run_checks(reference, worse) if c.code == "warning:unfamiliar").status == ALARM


def test_a_result_of_an_unknown_class_is_left_out_of_the_warning_checks_instead_of_failing(reference):
    films = [Film("covid", True, ("unfamiliar",))] * 12 + [Film("retired-label", False, ("unfamiliar",))]
    check = next(c for c in run_checks(reference, films) if c.code == "warning:unfamiliar")
    assert (check.site_hits, check.site_n) == (12, 12)


def test_reference_refuses_films_without_truth():
    with pytest.raises(ValueError, match="true class"):
        reference_from_films([Film("covid", True)])


def test_a_site_like_validation_raises_no_alarm(reference):
    site = _films(np.random.default_rng(1), 400, accuracy=0.8, alert_if_not_covid=0.3)
    checks = run_checks(reference, site)
    assert overall_status(checks) == OK
    assert all(check.status == OK for check in checks)


def test_a_new_hospital_that_alerts_on_everything_alarms(reference):
    # The NIH failure: normal and pneumonia films, most of them raising the COVID-19 alert.
    site = _films(np.random.default_rng(2), 60, accuracy=0.2, alert_if_not_covid=0.9, classes=("normal", "pneumonia"))
    checks = {check.code: check for check in run_checks(reference, site)}
    assert checks["false_alerts"].status == ALARM
    assert checks["false_alerts"].site_rate > 0.8
    assert checks["recall:normal"].status == ALARM
    assert checks["sensitivity"].status == TOO_FEW  # no confirmed COVID-19 film at this site
    assert checks["warning:unfamiliar"].status == OK


def test_without_feedback_only_the_warnings_are_judged(reference):
    site = _films(np.random.default_rng(4), 100, accuracy=0.2, alert_if_not_covid=0.9, unfamiliar=0.4,
                  confirmed=False)
    checks = {check.code: check for check in run_checks(reference, site)}
    assert checks["false_alerts"].status == TOO_FEW
    assert checks["warning:unfamiliar"].status == ALARM
    assert checks["warning:unfamiliar"].site_n == 100


def test_too_few_films_never_alarm(reference):
    site = _films(np.random.default_rng(5), 5, accuracy=0.0, alert_if_not_covid=1.0, unfamiliar=1.0)
    assert overall_status(run_checks(reference, site)) == TOO_FEW


def test_a_model_that_was_already_bad_on_validation_alarms_only_against_the_limit():
    # The LOSO run without NIH: every non-COVID-19 validation film raised the alert, so a site where
    # 9 in 10 do is no worse than validation. Only the site's limit catches it.
    validation = [Film("covid", True, (), "covid")] * 100 + [Film("covid", True, (), "pneumonia")] * 20
    reference = reference_from_films(validation)
    site = _films(np.random.default_rng(9), 150, accuracy=0.2, alert_if_not_covid=0.95, classes=("normal", "pneumonia"))
    relative_only = {check.code: check for check in run_checks(reference, site)}
    assert relative_only["false_alerts"].status == OK
    assert "false_alert_limit" not in relative_only
    checks = {check.code: check for check in run_checks(reference, site, limits=Limits(max_false_alerts=0.8))}
    assert checks["false_alert_limit"].status == ALARM
    assert checks["false_alert_limit"].reference_rate == 0.8
    # Known before the first film: validation itself breaks the limit.
    breach, = reference_breaches(reference, Limits(max_false_alerts=0.8, min_sensitivity=0.95, max_prevalence=0.3))
    assert (breach.code, breach.reference_hits, breach.reference_n, breach.limit) == ("false_alert_limit", 20, 20, 0.8)


def test_a_reference_within_its_limits_breaks_none(reference):
    # The alert ceiling is not judged on validation, whose share of COVID-19 is not the site's: here a third
    # of the validation films are COVID-19, so more of them alert than the ceiling allows a site without any.
    others = reference.class_count("normal") + reference.class_count("pneumonia")
    false_alerts = (reference.alerts["normal"] + reference.alerts["pneumonia"]) / others
    limits = Limits(min_sensitivity=0.9, max_false_alerts=false_alerts + 0.01, max_prevalence=0.0)
    assert sum(reference.alerts.values()) / reference.n > limits.max_alert_rate
    assert reference_breaches(reference, limits) == []
    assert [b.code for b in reference_breaches(reference, Limits(min_sensitivity=0.99))] == ["sensitivity_target"]


def test_sensitivity_below_the_promised_target_alarms(reference):
    covid_films = [Film("covid", index % 4 != 0, (), "covid") for index in range(80)]  # 75% sensitivity
    checks = {check.code: check for check in run_checks(reference, covid_films, limits=Limits(min_sensitivity=0.95))}
    assert checks["sensitivity_target"].status == ALARM
    assert checks["sensitivity_target"].site_rate == 0.75


def test_the_alert_ceiling_follows_from_the_highest_covid_share_and_the_false_alert_limit():
    assert Limits(max_prevalence=0.3, max_false_alerts=0.8).max_alert_rate == pytest.approx(0.86)
    assert Limits(max_prevalence=0.3).max_alert_rate is None  # no false-alert limit: no ceiling
    assert Limits(max_false_alerts=0.8).max_alert_rate is None


def test_too_many_alerts_alarm_without_any_feedback(reference):
    # The NIH failure with no clinician feedback at all: 9 in 10 films raise the alert, none is COVID-19.
    limits = Limits(max_false_alerts=0.8, max_prevalence=0.3)
    site = _films(np.random.default_rng(11), 600, accuracy=0.2, alert_if_not_covid=0.93,
                  classes=("normal", "pneumonia"), confirmed=False)
    checks = {check.code: check for check in run_checks(reference, site, limits=limits)}
    assert checks["false_alert_limit"].status == TOO_FEW
    ceiling = checks["alert_rate_limit"]
    assert ceiling.status == ALARM and ceiling.site_n == 600 and ceiling.reference_rate == pytest.approx(0.86)
    assert ceiling.site_hits == sum(film.alert for film in site)
    assert (ceiling.reference_hits, ceiling.reference_n) == (sum(reference.alerts.values()), reference.n)
    # A site that alerts as validation did, at a COVID-19 share within the ceiling's assumption, stays quiet.
    calm = _films(np.random.default_rng(12), 600, accuracy=0.8, alert_if_not_covid=0.3, confirmed=False)
    assert {c.code: c for c in run_checks(reference, calm, limits=limits)}["alert_rate_limit"].status == OK

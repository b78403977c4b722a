import numpy as np
import pytest

from ml.evaluation.operating_point import choose_threshold, classification_metrics, fit_temperature
from ml.serving.calibration import apply_temperature


def test_temperature_one_leaves_probabilities_unchanged():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    assert np.allclose(apply_temperature(probabilities, 1.0), probabilities, atol=1e-6)


def test_fit_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 1.5, (4000, 3))
    true_probabilities = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(3, p=p) for p in true_probabilities])
    overconfident = apply_temperature(true_probabilities, 0.5)  # logits doubled
    assert fit_temperature(probabilities=overconfident, labels=labels) == pytest.approx(2.0, rel=0.15)


def test_threshold_reaches_target_sensitivity_on_its_own_data():
    rng = np.random.default_rng(1)
    is_positive = rng.random(500) < 0.4
    scores = np.clip(rng.normal(0.3 + 0.4 * is_positive, 0.2), 0, 1)
    threshold = choose_threshold(positive_probabilities=scores, is_positive=is_positive, target_sensitivity=0.95)
    assert (scores[is_positive] >= threshold).mean() >= 0.95
    # The highest such threshold: nudging it up loses sensitivity.
    assert (scores[is_positive] >= threshold + 1e-6).mean() < 0.95


def test_metrics_report_accuracy_and_sensitivity():
    probabilities = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.6, 0.1, 0.3]])
    result = classification_metrics(probabilities=probabilities, labels=np.array([0, 1, 2]), positive_index=0, threshold=0.5)
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["covid_sensitivity"] == 1.0
    assert result["covid_specificity"] == 0.5


def test_sensitivity_lower_bound_matches_closed_forms():
    from ml.evaluation.operating_point import sensitivity_lower_bound

    # All detected: the bound solves p**n = 1 - confidence.
    assert sensitivity_lower_bound(102, 102, confidence=0.95) == pytest.approx(0.05 ** (1 / 102), abs=1e-9)
    # One detected out of one: the bound is 1 - confidence.
    assert sensitivity_lower_bound(1, 1, confidence=0.9) == pytest.approx(0.1, abs=1e-9)
    # Half detected out of 100: the textbook one-sided 95% exact bound is 0.4136.
    assert sensitivity_lower_bound(50, 100, confidence=0.95) == pytest.approx(0.4136, abs=5e-4)
    assert sensitivity_lower_bound(0, 10, confidence=0.95) == 0.0
    with pytest.raises(ValueError):
        sensitivity_lower_bound(5, 10, confidence=1.0)


def test_confident_threshold_proves_the_target_and_costs_specificity():
    from ml.evaluation.operating_point import sensitivity_lower_bound

    rng = np.random.default_rng(2)
    is_positive = rng.random(600) < 0.3
    scores = np.clip(rng.normal(0.3 + 0.35 * is_positive, 0.15), 0, 1)
    plain = choose_threshold(positive_probabilities=scores, is_positive=is_positive, target_sensitivity=0.95)
    confident = choose_threshold(
        positive_probabilities=scores, is_positive=is_positive, target_sensitivity=0.95, confidence=0.95
    )
    positives = int(is_positive.sum())
    detected = int((scores[is_positive] >= confident).sum())
    assert confident < plain
    assert sensitivity_lower_bound(detected, positives, confidence=0.95) >= 0.95
    # The highest threshold that proves it: one positive fewer would not.
    assert sensitivity_lower_bound(detected - 1, positives, confidence=0.95) < 0.95
    assert (scores[~is_positive] < confident).mean() < (scores[~is_positive] < plain).mean()


def test_confident_threshold_with_too_few_positives_detects_them_all():
    scores = np.array([0.9, 0.8, 0.3, 0.2, 0.1])
    is_positive = np.array([True, True, True, False, False])
    threshold = choose_threshold(
        positive_probabilities=scores, is_positive=is_positive, target_sensitivity=0.95, confidence=0.95
    )
    assert threshold == pytest.approx(0.3)

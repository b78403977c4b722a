"""Fitting the temperature and the COVID-19 alert threshold on labelled films, and the metrics used to pick them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.evaluation import metrics
from ml.serving.binomial import binomial_tail
from ml.serving.calibration import PROBABILITY_FLOOR, apply_temperature


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = np.asarray(probabilities)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, PROBABILITY_FLOOR, 1.0))))  # in the probabilities' own precision


def fit_temperature(*, probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising validation NLL (grid over log T, then refined)."""
    labels = np.asarray(labels, dtype=int)
    if len(labels) == 0:
        return 1.0
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 200))
    losses = [negative_log_likelihood(apply_temperature(probabilities, t), labels) for t in grid]
    best = int(np.argmin(losses))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    fine = np.linspace(low, high, 50)
    losses = [negative_log_likelihood(apply_temperature(probabilities, t), labels) for t in fine]
    return float(fine[int(np.argmin(losses))])


def sensitivity_lower_bound(detected: int, positives: int, *, confidence: float) -> float:
    """One-sided exact (Clopper-Pearson) lower confidence bound for a sensitivity of detected/positives.

    The largest p with P(X >= detected | p) <= 1 - confidence; 0 when nothing was detected.
    """
    if not 0 < confidence < 1:
        raise ValueError("confidence must lie strictly between 0 and 1")
    if positives <= 0 or detected <= 0:
        return 0.0
    low, high = 0.0, 1.0
    for _ in range(60):  # bisection: the tail grows with p
        middle = (low + high) / 2
        if binomial_tail(hits=detected, n=positives, rate=middle, at_least=True) < 1 - confidence:
            low = middle
        else:
            high = middle
    return low


def choose_threshold(
    *,
    positive_probabilities: np.ndarray,
    is_positive: np.ndarray,
    target_sensitivity: float,
    confidence: float | None = None,
) -> float:
    """The highest threshold whose validation sensitivity meets the target.

    Highest, so that specificity is as good as the sensitivity target allows.
    With ``confidence`` (e.g. 0.95) the target must hold for the one-sided
    Clopper-Pearson lower bound of the validation sensitivity, not just its
    point estimate: a threshold picked on ~100 positive films otherwise
    misses the target on new films about half the time. When even detecting
    every validation positive cannot prove the target (too few positives),
    the threshold detects them all. Falls back to 0.5 when validation has no
    positives.
    """
    scores = np.asarray(positive_probabilities, dtype=np.float64)
    positives = np.sort(scores[np.asarray(is_positive, dtype=bool)])[::-1]
    count = len(positives)
    if count == 0:
        return 0.5
    needed = int(np.ceil(target_sensitivity * count))
    if confidence is not None:
        needed = next(
            (k for k in range(needed, count + 1)
             if sensitivity_lower_bound(k, count, confidence=confidence) >= target_sensitivity),
            count,
        )
    needed = min(max(needed, 1), count)
    # Alert when probability >= threshold: the needed-th highest positive score.
    return float(positives[needed - 1])


@dataclass(frozen=True)
class OperatingPoint:
    temperature: float
    threshold: float
    metrics: dict  # classification_metrics at this temperature and threshold, plus "raw_nll"


def fit_operating_point(
    *,
    raw_probabilities: np.ndarray,
    labels: np.ndarray,
    positive_index: int,
    target_sensitivity: float,
    confidence: float | None,
    temperature: float | None = None,
) -> OperatingPoint:
    """Temperature scaling (fitted unless ``temperature`` is given) and the alert threshold on labelled data.

    What training does on its validation part and ``ml.training.recalibrate`` on a site's films.
    """
    raw_probabilities = np.asarray(raw_probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    if temperature is None:
        temperature = fit_temperature(probabilities=raw_probabilities, labels=labels)
    calibrated = apply_temperature(raw_probabilities, temperature)
    threshold = choose_threshold(
        positive_probabilities=calibrated[:, positive_index],
        is_positive=labels == positive_index,
        target_sensitivity=target_sensitivity,
        confidence=confidence,
    )
    fitted = classification_metrics(
        probabilities=calibrated, labels=labels, positive_index=positive_index, threshold=threshold
    )
    fitted["raw_nll"] = negative_log_likelihood(raw_probabilities, labels)
    return OperatingPoint(temperature=float(temperature), threshold=threshold, metrics=fitted)


def classification_metrics(
    *, probabilities: np.ndarray, labels: np.ndarray, positive_index: int, threshold: float
) -> dict:
    """Accuracy, macro one-vs-rest AUC, COVID-vs-rest AUC, sensitivity/specificity at threshold, ECE, NLL."""
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels, dtype=int)
    aucs = metrics.one_vs_rest_auc(y_true=labels, probabilities=probabilities)
    valid = [a for a in aucs if a is not None]
    is_positive = labels == positive_index
    alert = probabilities[:, positive_index] >= threshold
    return {
        "n": int(len(labels)),
        "accuracy": float((probabilities.argmax(axis=1) == labels).mean()) if len(labels) else float("nan"),
        "macro_auc": float(np.mean(valid)) if valid else float("nan"),
        "per_class_auc": aucs,
        "covid_auc": aucs[positive_index],
        "covid_sensitivity": float(alert[is_positive].mean()) if is_positive.any() else None,
        "covid_specificity": float((~alert[~is_positive]).mean()) if (~is_positive).any() else None,
        "ece": metrics.expected_calibration_error(y_true=labels, probabilities=probabilities).ece,
        "nll": negative_log_likelihood(probabilities, labels) if len(labels) else float("nan"),
    }

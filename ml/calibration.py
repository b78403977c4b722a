"""Temperature scaling, the COVID-19 alert threshold and the metrics used to pick them.

Plain numpy: the model outputs probabilities, and softmax(log(p) / T) equals
temperature scaling of the logits because softmax ignores a per-row shift.
"""

from __future__ import annotations

import numpy as np

_EPSILON = 1e-7


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), _EPSILON, 1.0)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    exp = np.exp(logits)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = np.asarray(probabilities)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, _EPSILON, 1.0))))


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


def choose_threshold(*, positive_probabilities: np.ndarray, is_positive: np.ndarray, target_sensitivity: float) -> float:
    """The highest threshold whose validation sensitivity is at least the target.

    Highest, so that specificity is as good as the sensitivity target allows.
    Falls back to 0.5 when validation has no positives.
    """
    scores = np.asarray(positive_probabilities, dtype=np.float64)
    positives = np.sort(scores[np.asarray(is_positive, dtype=bool)])[::-1]
    if len(positives) == 0:
        return 0.5
    needed = int(np.ceil(target_sensitivity * len(positives)))
    needed = min(max(needed, 1), len(positives))
    # Alert when probability >= threshold: the needed-th highest positive score.
    return float(positives[needed - 1])


def roc_auc(*, scores: np.ndarray, is_positive: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum statistic (ties get average ranks)."""
    scores = np.asarray(scores, dtype=np.float64)
    is_positive = np.asarray(is_positive, dtype=bool)
    n_pos, n_neg = int(is_positive.sum()), int((~is_positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    start = 0
    while start < len(scores):
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return float((ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def expected_calibration_error(*, probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins."""
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels, dtype=int)
    if len(labels) == 0:
        return float("nan")
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            error += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(error)


def classification_metrics(
    *, probabilities: np.ndarray, labels: np.ndarray, positive_index: int, threshold: float
) -> dict:
    """Accuracy, macro one-vs-rest AUC, COVID-vs-rest AUC, sensitivity/specificity at threshold, ECE, NLL."""
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels, dtype=int)
    num_classes = probabilities.shape[1]
    aucs = [roc_auc(scores=probabilities[:, k], is_positive=labels == k) for k in range(num_classes)]
    valid = [a for a in aucs if not np.isnan(a)]
    is_positive = labels == positive_index
    alert = probabilities[:, positive_index] >= threshold
    return {
        "n": int(len(labels)),
        "accuracy": float((probabilities.argmax(axis=1) == labels).mean()) if len(labels) else float("nan"),
        "macro_auc": float(np.mean(valid)) if valid else float("nan"),
        "per_class_auc": [None if np.isnan(a) else float(a) for a in aucs],
        "covid_auc": None if np.isnan(aucs[positive_index]) else float(aucs[positive_index]),
        "covid_sensitivity": float(alert[is_positive].mean()) if is_positive.any() else None,
        "covid_specificity": float((~alert[~is_positive]).mean()) if (~is_positive).any() else None,
        "ece": expected_calibration_error(probabilities=probabilities, labels=labels),
        "nll": negative_log_likelihood(probabilities, labels) if len(labels) else float("nan"),
    }

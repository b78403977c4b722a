"""Classification metrics for the chest X-ray classifier, in plain numpy.

Conventions used everywhere in this module:

* ``y_true`` is an integer array of class indices (shape ``(n,)``), in the
  order of ``ml.serving.labels.CLASS_NAMES``; ``probabilities`` is ``(n, n_classes)``.
* A metric that is undefined for the data it is given (recall of a class with
  no examples, AUC of a class with no positives or no negatives) is ``None``,
  never ``nan`` or 0: a missing class in an external test folder must read as
  "not measurable", not as "the model failed".
* Precision of a class the model never predicts is ``None`` for the same
  reason; F1 is ``None`` when either precision or recall is ``None``.

scikit-learn is deliberately not a dependency: each metric below is a few
lines and is checked against hand-computed cases in tests/ml/test_metrics.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

ECE_BINS = 15


@dataclass(frozen=True)
class ClassScores:
    precision: float | None
    recall: float | None
    f1: float | None
    support: int  # number of true examples of the class


@dataclass(frozen=True)
class RocCurve:
    false_positive_rate: np.ndarray
    true_positive_rate: np.ndarray
    thresholds: np.ndarray  # score at or above which a case is called positive
    auc: float | None


@dataclass(frozen=True)
class CalibrationResult:
    """Top-label calibration with equal-width confidence bins.

    ``ece`` is sum over bins of (bin count / n) * |bin accuracy - bin mean
    confidence|, where the confidence of a case is its highest probability and
    it is "correct" when that class is the true one. Bin ``i`` holds confidences
    in ``(i/n_bins, (i+1)/n_bins]``; a confidence of exactly 0 goes to bin 0.
    Empty bins have ``None`` accuracy and confidence and do not contribute.
    """

    ece: float | None
    n_bins: int
    bin_edges: list[float]
    bin_counts: list[int]
    bin_accuracy: list[float | None]
    bin_confidence: list[float | None]


@dataclass(frozen=True)
class ConfidenceInterval:
    low: float | None
    high: float | None
    confidence: float
    n_resamples: int  # resamples requested
    n_valid: int  # resamples where the statistic was defined


def _as_labels(y: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.asarray(y, dtype=np.int64).reshape(-1)


def accuracy(*, y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float | None:
    y_true, y_pred = _as_labels(y_true), _as_labels(y_pred)
    if y_true.size == 0:
        return None
    return float(np.mean(y_true == y_pred))


def confusion_matrix(
    *, y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n_classes: int
) -> np.ndarray:
    """Counts with rows = true class, columns = predicted class."""
    y_true, y_pred = _as_labels(y_true), _as_labels(y_pred)
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def _safe_ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else float(numerator / denominator)


def per_class_scores(
    *, y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n_classes: int
) -> list[ClassScores]:
    matrix = confusion_matrix(y_true=y_true, y_pred=y_pred, n_classes=n_classes)
    scores = []
    for k in range(n_classes):
        true_positives = matrix[k, k]
        precision = _safe_ratio(true_positives, matrix[:, k].sum())
        recall = _safe_ratio(true_positives, matrix[k, :].sum())
        if precision is None or recall is None:
            f1 = None
        elif precision + recall == 0:
            f1 = 0.0
        else:
            f1 = 2 * precision * recall / (precision + recall)
        scores.append(ClassScores(precision=precision, recall=recall, f1=f1, support=int(matrix[k, :].sum())))
    return scores


def roc_auc(*, y_true_binary: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float | None:
    """Area under the ROC curve as the Mann-Whitney statistic.

    Equals the probability that a random positive scores higher than a random
    negative, with ties counted as one half (the trapezoid under the ROC
    curve gives the same number). ``None`` without both positives and negatives.
    """
    positive = np.asarray(y_true_binary, dtype=bool).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n_positive = int(positive.sum())
    n_negative = positive.size - n_positive
    if n_positive == 0 or n_negative == 0:
        return None
    ranks = _average_ranks(scores)
    rank_sum = ranks[positive].sum()
    return float((rank_sum - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start index of each run of equal values in the sorted array.
    run_starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    run_ends = np.r_[run_starts[1:], values.size]
    mean_rank_per_run = (run_starts + run_ends + 1) / 2.0
    ranks_sorted = np.repeat(mean_rank_per_run, run_ends - run_starts)
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = ranks_sorted
    return ranks


def roc_curve(*, y_true_binary: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray) -> RocCurve:
    """ROC points at every distinct score, from (0, 0) to (1, 1).

    Tied scores form one point (a diagonal step), so the trapezoidal area under
    these points equals :func:`roc_auc`. Rates are empty arrays when a class
    has no positives or no negatives.
    """
    positive = np.asarray(y_true_binary, dtype=bool).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n_positive = int(positive.sum())
    n_negative = positive.size - n_positive
    auc = roc_auc(y_true_binary=positive, scores=scores)
    if auc is None:
        empty = np.zeros(0)
        return RocCurve(false_positive_rate=empty, true_positive_rate=empty, thresholds=empty, auc=None)
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    sorted_positive = positive[order]
    # Last index of each run of equal scores: the curve only moves there.
    run_ends = np.r_[np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]), sorted_scores.size - 1]
    true_positives = np.cumsum(sorted_positive)[run_ends]
    false_positives = (run_ends + 1) - true_positives
    tpr = np.r_[0.0, true_positives / n_positive]
    fpr = np.r_[0.0, false_positives / n_negative]
    thresholds = np.r_[np.inf, sorted_scores[run_ends]]
    return RocCurve(false_positive_rate=fpr, true_positive_rate=tpr, thresholds=thresholds, auc=auc)


def one_vs_rest_auc(*, y_true: Sequence[int] | np.ndarray, probabilities: np.ndarray) -> list[float | None]:
    y_true = _as_labels(y_true)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return [roc_auc(y_true_binary=y_true == k, scores=probabilities[:, k]) for k in range(probabilities.shape[1])]


def one_vs_rest_roc(*, y_true: Sequence[int] | np.ndarray, probabilities: np.ndarray) -> list[RocCurve]:
    y_true = _as_labels(y_true)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return [roc_curve(y_true_binary=y_true == k, scores=probabilities[:, k]) for k in range(probabilities.shape[1])]


def macro_auc(*, y_true: Sequence[int] | np.ndarray, probabilities: np.ndarray) -> float | None:
    """Unweighted mean of the one-vs-rest AUCs that are defined.

    Classes without positives are skipped (and reported as such by the
    caller); ``None`` if no class has a defined AUC.
    """
    defined = [auc for auc in one_vs_rest_auc(y_true=y_true, probabilities=probabilities) if auc is not None]
    return float(np.mean(defined)) if defined else None


def expected_calibration_error(
    *, y_true: Sequence[int] | np.ndarray, probabilities: np.ndarray, n_bins: int = ECE_BINS
) -> CalibrationResult:
    y_true = _as_labels(y_true)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    if y_true.size == 0:
        return CalibrationResult(
            ece=None,
            n_bins=n_bins,
            bin_edges=edges.tolist(),
            bin_counts=[0] * n_bins,
            bin_accuracy=[None] * n_bins,
            bin_confidence=[None] * n_bins,
        )
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    # ceil(c * n_bins) - 1 maps (i/n, (i+1)/n] to i; clip puts 0 into bin 0.
    bin_index = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    counts, accuracies, confidences = [], [], []
    ece = 0.0
    for b in range(n_bins):
        in_bin = bin_index == b
        count = int(in_bin.sum())
        counts.append(count)
        if count == 0:
            accuracies.append(None)
            confidences.append(None)
            continue
        bin_accuracy = float(correct[in_bin].mean())
        bin_confidence = float(confidence[in_bin].mean())
        accuracies.append(bin_accuracy)
        confidences.append(bin_confidence)
        ece += count / y_true.size * abs(bin_accuracy - bin_confidence)
    return CalibrationResult(
        ece=float(ece),
        n_bins=n_bins,
        bin_edges=edges.tolist(),
        bin_counts=counts,
        bin_accuracy=accuracies,
        bin_confidence=confidences,
    )


def sensitivity_at_threshold(
    *, y_true_binary: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float
) -> float | None:
    """Share of positives whose score is at or above ``threshold``."""
    positive = np.asarray(y_true_binary, dtype=bool).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not positive.any():
        return None
    return float(np.mean(scores[positive] >= threshold))


def specificity_at_threshold(
    *, y_true_binary: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float
) -> float | None:
    """Share of negatives whose score is below ``threshold``."""
    positive = np.asarray(y_true_binary, dtype=bool).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if positive.all():
        return None
    return float(np.mean(scores[~positive] < threshold))


def bootstrap_ci(
    *,
    statistic: Callable[[np.ndarray], float | None],
    n: int,
    groups: Sequence[object] | np.ndarray | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ConfidenceInterval:
    """Percentile bootstrap interval of ``statistic(indices)``.

    ``statistic`` receives an index array (with repeats) into the evaluated
    cases. When ``groups`` is given (one patient id per case), whole groups are
    resampled: images of one patient are correlated, and resampling them
    independently would give intervals that are too narrow. Resamples where the
    statistic is undefined (``None``, e.g. no positives drawn) are dropped and
    counted in ``n_valid``; with no valid resample the bounds are ``None``.
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        members = [np.array([i]) for i in range(n)]
    else:
        groups = np.asarray(groups, dtype=object).reshape(-1)
        if groups.size != n:
            raise ValueError(f"groups has {groups.size} entries, expected {n}")
        _, inverse = np.unique(groups.astype(str), return_inverse=True)
        order = np.argsort(inverse, kind="mergesort")
        boundaries = np.flatnonzero(np.diff(inverse[order])) + 1
        members = np.split(order, boundaries)
    n_groups = len(members)
    values = []
    if n_groups > 0:
        for _ in range(n_resamples):
            chosen = rng.integers(0, n_groups, size=n_groups)
            indices = np.concatenate([members[g] for g in chosen])
            value = statistic(indices)
            if value is not None and np.isfinite(value):
                values.append(value)
    if not values:
        return ConfidenceInterval(
            low=None, high=None, confidence=confidence, n_resamples=n_resamples, n_valid=0
        )
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.asarray(values), [alpha, 1.0 - alpha])
    return ConfidenceInterval(
        low=float(low), high=float(high), confidence=confidence, n_resamples=n_resamples, n_valid=len(values)
    )



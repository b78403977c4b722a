"""Every headline metric of a set of predictions, with bootstrap 95% intervals (patients resampled)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ml.evaluation import metrics
from ml.serving.labels import POSITIVE_CLASS

DEFAULT_RESAMPLES = 1000


def _interval(ci: metrics.ConfidenceInterval) -> list[float | None]:
    return [ci.low, ci.high]


def summarize_predictions(
    *,
    y_true: Sequence[int] | np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    threshold: float,
    positive_class: str = POSITIVE_CLASS,
    groups: Sequence[object] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict:
    """Every headline metric, with bootstrap 95% intervals, as a JSON-ready dict.

    ``groups`` (patient ids) makes the bootstrap resample whole patients.
    Used for the whole test set and again for each source.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n_classes = len(class_names)
    y_pred = probabilities.argmax(axis=1) if y_true.size else np.zeros(0, dtype=np.int64)
    positive_index = list(class_names).index(positive_class)
    is_positive = y_true == positive_index
    notes: list[str] = []

    def ci(statistic) -> list[float | None]:
        return _interval(
            metrics.bootstrap_ci(statistic=statistic, n=y_true.size, groups=groups, n_resamples=n_resamples, seed=seed)
        )

    correct = (y_pred == y_true).astype(np.float64)
    accuracy = metrics.accuracy(y_true=y_true, y_pred=y_pred)
    aucs = metrics.one_vs_rest_auc(y_true=y_true, probabilities=probabilities)
    macro = metrics.macro_auc(y_true=y_true, probabilities=probabilities)
    scores = metrics.per_class_scores(y_true=y_true, y_pred=y_pred, n_classes=n_classes)
    calibration = metrics.expected_calibration_error(y_true=y_true, probabilities=probabilities)

    per_class = {}
    for k, name in enumerate(class_names):
        auc_ci: list[float | None] = [None, None]
        if aucs[k] is None:
            present = "no images" if scores[k].support == 0 else "no images of the other classes"
            notes.append(f"AUC for {name} is null: {present} in this set.")
        else:
            auc_ci = ci(
                lambda idx, k=k: metrics.roc_auc(y_true_binary=y_true[idx] == k, scores=probabilities[idx, k])
            )
        sensitivity = None
        sensitivity_ci: list[float | None] = [None, None]
        if k == positive_index:
            sensitivity = metrics.sensitivity_at_threshold(
                y_true_binary=is_positive, scores=probabilities[:, k], threshold=threshold
            )
            if sensitivity is not None:
                sensitivity_ci = ci(
                    lambda idx: metrics.sensitivity_at_threshold(
                        y_true_binary=is_positive[idx], scores=probabilities[idx, positive_index], threshold=threshold
                    )
                )
        per_class[name] = {
            "support": scores[k].support,
            "precision": scores[k].precision,
            "recall": scores[k].recall,
            "f1": scores[k].f1,
            "auc": aucs[k],
            "auc_ci": auc_ci,
            # Only the positive class has an alert threshold; the others are decided by argmax.
            "sensitivity_at_threshold": sensitivity,
            "sensitivity_at_threshold_ci": sensitivity_ci,
        }
    if macro is not None and any(auc is None for auc in aucs):
        notes.append("macro_auc averages only the classes whose AUC is defined.")

    specificity = metrics.specificity_at_threshold(
        y_true_binary=is_positive, scores=probabilities[:, positive_index], threshold=threshold
    ) if y_true.size else None
    return {
        "n": int(y_true.size),
        "class_counts": {name: int(np.sum(y_true == k)) for k, name in enumerate(class_names)},
        "accuracy": accuracy,
        "accuracy_ci": ci(lambda idx: float(correct[idx].mean())) if y_true.size else [None, None],
        "macro_auc": macro,
        "macro_auc_ci": ci(
            lambda idx: metrics.macro_auc(y_true=y_true[idx], probabilities=probabilities[idx])
        )
        if macro is not None
        else [None, None],
        "ece": calibration.ece,
        "ece_ci": ci(
            lambda idx: metrics.expected_calibration_error(y_true=y_true[idx], probabilities=probabilities[idx]).ece
        )
        if y_true.size
        else [None, None],
        "confusion_matrix": metrics.confusion_matrix(y_true=y_true, y_pred=y_pred, n_classes=n_classes).tolist(),
        "per_class": per_class,
        "threshold": {
            "class": positive_class,
            "value": float(threshold),
            "sensitivity": per_class[positive_class]["sensitivity_at_threshold"],
            "sensitivity_ci": per_class[positive_class]["sensitivity_at_threshold_ci"],
            "specificity": specificity,
            "alerts": int(np.sum(probabilities[:, positive_index] >= threshold)) if y_true.size else 0,
        },
        "notes": notes,
    }

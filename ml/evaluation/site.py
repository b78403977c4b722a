"""Evaluate a candidate against the active version on the same films: side by side and paired.

A hospital promotes a candidate only when, on its locked site test part, the
candidate is not worse than the version it replaces beyond the uncertainty of
that comparison, and its COVID-19 alert reaches the sensitivity target there.
Each metric's difference is bootstrapped by patient over the same resamples
for both models (a paired bootstrap), which is much tighter than comparing two
separate intervals.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ml.evaluation import metrics
from ml.evaluation.features import FeatureCache, FeatureSet, LabelledFilm, raw_probabilities
from ml.evaluation.summary import DEFAULT_RESAMPLES, summarize_predictions
from ml.serving.calibration import apply_temperature
from ml.serving.labels import CLASS_NAMES, POSITIVE_CLASS

# Every site film belongs, by a stable hash of its patient, to the locked site test part or the adaptation part.
SITE_TEST = "test"
SITE_ADAPTATION = "adaptation"
DEFAULT_TEST_SHARE = 0.5
# Metrics compared; for all but ECE higher is better.
PAIRED_METRICS = ("macro_auc", "accuracy", "covid_sensitivity", "covid_specificity", "ece")
POSITIVE = CLASS_NAMES.index(POSITIVE_CLASS)


def patient_position(patient: str) -> float:
    """A stable number in [0, 1) for a patient id: the same patient always falls on the same side of a cut."""
    digest = hashlib.sha256(f"cxr-site-split:{patient}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def site_part(patient: str, *, test_share: float = DEFAULT_TEST_SHARE) -> str:
    """``"test"`` (the locked site test part) or ``"adaptation"``, decided by the patient alone.

    All films of a patient land in one part, and adding films never moves a patient between parts.
    """
    return SITE_TEST if patient_position(patient) < test_share else SITE_ADAPTATION


def _metric(name: str, y_true: np.ndarray, probabilities: np.ndarray, threshold: float) -> float | None:
    if name == "macro_auc":
        return metrics.macro_auc(y_true=y_true, probabilities=probabilities)
    if name == "accuracy":
        return metrics.accuracy(y_true=y_true, y_pred=probabilities.argmax(axis=1))
    if name == "ece":
        return metrics.expected_calibration_error(y_true=y_true, probabilities=probabilities).ece
    positive = y_true == POSITIVE
    if name == "covid_sensitivity":
        return metrics.sensitivity_at_threshold(y_true_binary=positive, scores=probabilities[:, POSITIVE],
                                                threshold=threshold)
    return metrics.specificity_at_threshold(y_true_binary=positive, scores=probabilities[:, POSITIVE],
                                            threshold=threshold)


def paired_difference(
    *, y_true: np.ndarray, candidate: np.ndarray, candidate_threshold: float, active: np.ndarray,
    active_threshold: float, groups: Sequence[str] | None = None, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
) -> dict:
    """For each metric: both values, candidate minus active, and its 95% paired bootstrap interval."""
    y_true = np.asarray(y_true, dtype=np.int64)
    result = {}
    for name in PAIRED_METRICS:
        def value(indices, probabilities, threshold, name=name):
            return _metric(name, y_true[indices], probabilities[indices], threshold)

        everything = np.arange(len(y_true))
        candidate_value = value(everything, candidate, candidate_threshold)
        active_value = value(everything, active, active_threshold)

        def difference(indices):
            first, second = value(indices, candidate, candidate_threshold), value(indices, active, active_threshold)
            return None if first is None or second is None else first - second

        interval = metrics.bootstrap_ci(statistic=difference, n=len(y_true), groups=groups,
                                        n_resamples=n_resamples, seed=seed)
        result[name] = {
            "candidate": candidate_value, "active": active_value,
            "difference": None if candidate_value is None or active_value is None else candidate_value - active_value,
            "difference_ci": [interval.low, interval.high],
            "higher_is_better": name != "ece",
        }
    return result


def calibrated_probabilities(*, predictor, films: Sequence[LabelledFilm], cache: FeatureCache,
                             progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, FeatureSet]:
    raw, features = raw_probabilities(predictor=predictor, films=films, cache=cache, progress=progress)
    return apply_temperature(raw, predictor.metadata.temperature).astype(np.float64), features


def compare_on_films(
    *, candidate, active, films: Sequence[LabelledFilm], cache: FeatureCache, description: str,
    n_resamples: int = DEFAULT_RESAMPLES, progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Both predictors on the same films: each one's metrics.json summary and the paired differences."""
    candidate_probabilities, kept = calibrated_probabilities(predictor=candidate, films=films, cache=cache,
                                                             progress=progress)
    active_probabilities, _ = calibrated_probabilities(predictor=active, films=kept.films, cache=cache)
    y_true, groups = kept.labels, kept.patients
    if not len(y_true):
        return {"data": description, "n": 0, "skipped": kept.skipped}
    candidate_threshold = float(candidate.metadata.covid_threshold)
    active_threshold = float(active.metadata.covid_threshold)

    def summarize(probabilities, threshold):
        return summarize_predictions(y_true=y_true, probabilities=probabilities, class_names=CLASS_NAMES,
                                     threshold=threshold, groups=groups, n_resamples=n_resamples)

    return {
        "data": description,
        "n": int(len(y_true)),
        "patients": len(set(groups)),
        "class_counts": {name: int(np.sum(y_true == k)) for k, name in enumerate(CLASS_NAMES)},
        "skipped": kept.skipped,
        "candidate": summarize(candidate_probabilities, candidate_threshold),
        "active": summarize(active_probabilities, active_threshold),
        "paired": paired_difference(y_true=y_true, candidate=candidate_probabilities,
                                    candidate_threshold=candidate_threshold, active=active_probabilities,
                                    active_threshold=active_threshold, groups=groups, n_resamples=n_resamples),
        "predictions": prediction_rows(films=kept.films, probabilities=candidate_probabilities,
                                       threshold=candidate_threshold),
    }


def refusal_reasons(site_comparison: dict | None, *, target_sensitivity: float) -> list[str]:
    """Why a candidate must not replace the active version, judged on the locked site test part; [] if none."""
    if not site_comparison or not site_comparison.get("n"):
        return ["The candidate has not been evaluated on the locked site test part."]
    reasons = []
    paired = site_comparison["paired"]
    for name, label in (("macro_auc", "macro AUC"), ("accuracy", "accuracy"),
                        ("covid_sensitivity", "COVID-19 sensitivity")):
        high = (paired.get(name) or {}).get("difference_ci", [None, None])[1]
        if high is not None and high < 0:
            reasons.append(f"Its {label} on the locked site test part is worse than the active version's "
                           f"beyond the interval (difference {paired[name]['difference']:+.3f}, "
                           f"95% interval up to {high:+.3f}).")
    ece_low = (paired.get("ece") or {}).get("difference_ci", [None, None])[0]
    if ece_low is not None and ece_low > 0:
        reasons.append(f"Its calibration error on the locked site test part is worse than the active version's "
                       f"beyond the interval (ECE difference {paired['ece']['difference']:+.3f}).")
    sensitivity = site_comparison["candidate"]["threshold"]["sensitivity"]
    if sensitivity is None:
        reasons.append("The locked site test part has no COVID-19 film: the sensitivity target cannot be checked.")
    elif sensitivity < target_sensitivity:
        reasons.append(f"Its COVID-19 alert sensitivity on the locked site test part is {sensitivity:.3f}, "
                       f"below the target {target_sensitivity:.2f}.")
    return reasons


PREDICTION_COLUMNS = ("file", "source", "patient", "true_label", *(f"p_{name}" for name in CLASS_NAMES),
                      "predicted", "alert", "warnings")


def prediction_row(*, file: str, source: str, patient: str, true_label: str, probabilities, threshold: float,
                   warnings: Sequence[str] = ()) -> dict:
    """One film's row of predictions.csv (``PREDICTION_COLUMNS``)."""
    return {
        "file": file, "source": source, "patient": patient, "true_label": true_label,
        **{f"p_{name}": round(float(probabilities[k]), 6) for k, name in enumerate(CLASS_NAMES)},
        "predicted": CLASS_NAMES[int(np.argmax(probabilities))], "alert": bool(probabilities[POSITIVE] >= threshold),
        "warnings": ";".join(warnings),
    }


def prediction_rows(*, films: Sequence[LabelledFilm], probabilities: np.ndarray, threshold: float) -> list[dict]:
    """One row per film: what a site inspects film by film."""
    return [prediction_row(file=film.name or film.key, source=film.source, patient=film.patient,
                           true_label=CLASS_NAMES[film.label], probabilities=row, threshold=threshold)
            for film, row in zip(films, probabilities)]


def write_predictions_csv(rows: Sequence[dict], path: Path | str) -> Path:
    path = Path(path)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PREDICTION_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path

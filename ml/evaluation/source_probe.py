"""Can the collection a film came from be read off the model's features, within one class?

The development pool confounds class with source (SOURCES.md). The lungs-only
preprocessing hides borders and text, but cues that identify a collection can
survive inside the lung crop (contrast, noise, JPEG artefacts, case-report
severity), and a network can pick them up. The shortcut audit's masking
experiments cannot see that, because those cues sit inside the lungs.

This probe measures it directly. Within each true class that holds films of
at least two sources (``MIN_PATIENTS_PER_SOURCE`` patients each), a linear
classifier (L2-regularised logistic regression on standardised features,
``C = 1``) is trained to tell the sources apart, with patient-grouped,
source-stratified cross-validation, and its out-of-fold scores are ranked: an
AUC near 0.5 means the features do not tell the collections apart in that
class; near 1, they do.

It is run three times on the same films:

* on the **model input** shrunk to 16 x 16 by block means, which shows how
  much of the collection reaches the network at all;
* on the **features** the classifier head reads (the spatial mean of the last
  convolutional block, ``ml.serving.familiarity.features_model``), which is what the
  model could use;
* on the **outputs**, the logarithms of the calibrated class probabilities:
  whether the answer a clinician sees differs by collection for films of the
  same class, which is what a shortcut costs.

Read it with care: two collections of one class may also differ in what they
show (case reports collect severe pneumonias, an archive mined from reports
does not), so a high AUC is not proof of a shortcut. What it does show is
whether a model carries the collection in the features it classifies from,
and whether one model carries less of it than another. Comparing classes is
only fair between classes whose sources and film counts are alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ml.evaluation import metrics
from ml.serving.calibration import softmax

MIN_PATIENTS_PER_SOURCE = 5
MAX_FOLDS = 5
REGULARISATION_C = 1.0  # scikit-learn's default strength: no tuning on the data it is measured on
INPUT_GRID = 16


@dataclass(frozen=True)
class ClassProbe:
    """Source probe for the films of one true class."""

    sources: dict[str, int]  # films per source that entered the probe
    patients: dict[str, int]
    folds: int
    auc: float | None  # out-of-fold; macro one-vs-rest when more than two sources
    auc_ci: list[float | None]
    accuracy: float | None  # out-of-fold, against the majority share below
    majority_share: float


REPRESENTATIONS = {
    "input": f"model input shrunk to {INPUT_GRID} x {INPUT_GRID} by block means",
    "features": "pooled features the classifier head reads",
    "outputs": "log calibrated class probabilities",
}


@dataclass
class SourceProbe:
    representation: str
    n_features: int
    by_class: dict[str, ClassProbe | None]  # None: fewer than two sources with enough patients
    skipped_sources: dict[str, dict[str, int]] = field(default_factory=dict)  # class -> source -> patients

    def to_dict(self) -> dict:
        return asdict(self)


def fit_logistic(
    features: np.ndarray, labels: np.ndarray, *, n_labels: int, c: float = REGULARISATION_C, iterations: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression minimising ``sum(log loss) + ||W||^2 / (2 c)`` (the bias is not penalised).

    Accelerated gradient descent with a step from the loss's Lipschitz bound; the problem is strongly convex,
    so a few hundred steps reach the optimum for the few hundred films and features a probe sees.
    Returns ``(weights (d, k), bias (k,))``.
    """
    x = np.asarray(features, dtype=np.float64)
    n, d = x.shape
    targets = np.eye(n_labels)[np.asarray(labels)]
    design = np.hstack([x, np.ones((n, 1))])
    penalty = np.full(d + 1, 1.0 / c)
    penalty[-1] = 0.0
    # The summed softmax cross-entropy has a Hessian of at most X^T X / 2.
    lipschitz = 0.5 * np.linalg.norm(design, 2) ** 2 + 1.0 / c
    step = 1.0 / lipschitz
    theta = np.zeros((d + 1, n_labels))
    previous = theta
    for iteration in range(1, iterations + 1):
        look = theta + (iteration - 1) / (iteration + 2) * (theta - previous)
        gradient = design.T @ (softmax(design @ look) - targets) + penalty[:, None] * look
        previous, theta = theta, look - step * gradient
    return theta[:-1], theta[-1]


def patient_folds(*, sources: Sequence[str], patients: Sequence[str], folds: int, seed: int) -> np.ndarray:
    """Fold index per film: each patient in one fold, each source's patients dealt evenly over the folds."""
    rng = np.random.default_rng(seed)
    sources, patients = np.asarray(sources, dtype=object), np.asarray(patients, dtype=object)
    fold_of_patient: dict[object, int] = {}
    for source in sorted(set(sources)):
        members = sorted(set(patients[sources == source]) - set(fold_of_patient))
        for position, patient in enumerate(rng.permutation(np.array(members, dtype=object))):
            fold_of_patient[patient] = position % folds
    return np.array([fold_of_patient[patient] for patient in patients], dtype=np.int64)


def out_of_fold_scores(
    *, features: np.ndarray, labels: np.ndarray, n_labels: int, fold_of: np.ndarray
) -> np.ndarray:
    """Probe scores (n, k) for each film from a probe trained without its fold (standardised on the rest)."""
    scores = np.zeros((len(labels), n_labels))
    for fold in np.unique(fold_of):
        train, held = fold_of != fold, fold_of == fold
        center = features[train].mean(axis=0)
        scale = features[train].std(axis=0)
        scale[scale == 0] = 1.0
        weights, bias = fit_logistic((features[train] - center) / scale, labels[train], n_labels=n_labels)
        scores[held] = softmax((features[held] - center) / scale @ weights + bias)
    return scores


def _probe_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    if scores.shape[1] == 2:
        return metrics.roc_auc(y_true_binary=labels == 1, scores=scores[:, 1])
    return metrics.macro_auc(y_true=labels, probabilities=scores)


def probe_sources(
    *,
    features: np.ndarray,
    y_true: Sequence[int],
    sources: Sequence[str],
    patients: Sequence[str],
    class_names: Sequence[str],
    representation: str,
    seed: int = 0,
    n_resamples: int = 1000,
) -> SourceProbe:
    """Run the probe on ``features`` (n, d), one row per film, within each true class."""
    features = np.asarray(features, dtype=np.float64).reshape(len(y_true), -1)
    y_true = np.asarray(y_true)
    sources = np.asarray(sources, dtype=object)
    patients = np.asarray(patients, dtype=object)
    by_class: dict[str, ClassProbe | None] = {}
    skipped: dict[str, dict[str, int]] = {}
    for index, name in enumerate(class_names):
        in_class = y_true == index
        patient_counts = {
            source: len(set(patients[in_class & (sources == source)]))
            for source in sorted(set(sources[in_class]))
            if source != "unknown"
        }
        kept = sorted(source for source, count in patient_counts.items() if count >= MIN_PATIENTS_PER_SOURCE)
        dropped = {source: count for source, count in patient_counts.items() if source not in kept}
        if dropped:
            skipped[name] = dropped
        if len(kept) < 2:
            by_class[name] = None
            continue
        members = in_class & np.isin(sources, kept)
        labels = np.array([kept.index(source) for source in sources[members]])
        folds = min(MAX_FOLDS, min(patient_counts[source] for source in kept))
        fold_of = patient_folds(sources=sources[members], patients=patients[members], folds=folds, seed=seed)
        scores = out_of_fold_scores(features=features[members], labels=labels, n_labels=len(kept), fold_of=fold_of)
        interval = metrics.bootstrap_ci(
            statistic=lambda idx: _probe_auc(labels[idx], scores[idx]),
            n=labels.size,
            groups=patients[members],
            n_resamples=n_resamples,
            seed=seed,
        )
        by_class[name] = ClassProbe(
            sources={source: int(np.sum(sources[members] == source)) for source in kept},
            patients={source: patient_counts[source] for source in kept},
            folds=folds,
            auc=_probe_auc(labels, scores),
            auc_ci=[interval.low, interval.high],
            accuracy=metrics.accuracy(y_true=labels, y_pred=scores.argmax(axis=1)),
            majority_share=float(np.bincount(labels).max() / labels.size),
        )
    return SourceProbe(
        representation=representation, n_features=features.shape[1], by_class=by_class, skipped_sources=skipped
    )


def input_grid(model_inputs: np.ndarray, *, grid: int = INPUT_GRID) -> np.ndarray:
    """Model inputs (n, S, S[, 1]) shrunk to (n, grid * grid) by block means (S cropped to a multiple of grid)."""
    images = np.asarray(model_inputs, dtype=np.float64)
    if images.ndim == 4:
        images = images[..., 0]
    n, height, width = images.shape
    block_h, block_w = height // grid, width // grid
    if block_h == 0 or block_w == 0:
        raise ValueError(f"model inputs of {height} x {width} are smaller than the {grid} x {grid} grid")
    cropped = images[:, : block_h * grid, : block_w * grid]
    return cropped.reshape(n, grid, block_h, grid, block_w).mean(axis=(2, 4)).reshape(n, grid * grid)


def probe_model(
    *,
    model_inputs: np.ndarray,
    features: np.ndarray,
    probabilities: np.ndarray,
    y_true: Sequence[int],
    sources: Sequence[str],
    patients: Sequence[str],
    class_names: Sequence[str],
    seed: int = 0,
    n_resamples: int = 1000,
) -> dict[str, SourceProbe]:
    """The probe on each of ``REPRESENTATIONS`` of the same films."""
    tiny = np.finfo(np.float64).tiny
    representations = {
        "input": input_grid(model_inputs),
        "features": np.asarray(features, dtype=np.float64),
        "outputs": np.log(np.clip(np.asarray(probabilities, dtype=np.float64), tiny, None)),
    }
    return {
        name: probe_sources(
            features=values, y_true=y_true, sources=sources, patients=patients, class_names=class_names,
            representation=REPRESENTATIONS[name], seed=seed, n_resamples=n_resamples,
        )
        for name, values in representations.items()
    }


def probe_findings(probes: dict[str, dict]) -> list[str]:
    """One sentence per probed class, from ``probe_model``'s results as dictionaries."""
    features = probes.get("features", {}).get("by_class", {})
    findings = []
    for class_name, probe in features.items():
        if not probe or probe["auc"] is None:
            continue
        pair = " from ".join(sorted(probe["sources"]))
        if len(probe["sources"]) > 2:
            pair = "apart " + ", ".join(sorted(probe["sources"]))
        low, high = probe["auc_ci"]
        others = []
        for name in ("input", "outputs"):
            other = probes.get(name, {}).get("by_class", {}).get(class_name)
            if other and other["auc"] is not None:
                others.append(f"{name} {other['auc']:.3f}")
        interval = f" [{low:.3f}, {high:.3f}]" if low is not None else ""
        findings.append(
            f"Within {class_name} ({sum(probe['sources'].values())} films), a linear probe on the model's "
            f"features tells {pair} with AUC {probe['auc']:.3f}{interval}"
            + (f" ({'; '.join(others)})" if others else "")
            + ": 0.5 = the collection cannot be read off them."
        )
    return findings

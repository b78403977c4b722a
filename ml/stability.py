"""Do the model's answers survive changes to a film that should not matter?

A film reaches a hospital system through many hands: a PACS export, a lossy
web upload, a smaller detector, another display curve. None of these changes
what a radiologist reads in the lungs, so none should change the answer. This
check, part of every evaluation report, re-runs the model on each decoded film
after one such change and reports how often the answer moves:

- ``jpeg_q90``: the film re-encoded as JPEG at quality 90 (a lossy export).
- ``half_resolution``: the film at half its width and height (a smaller detector
  or a downsized export).
- ``gamma_0.8``: mid-tones brightened by a gamma of 0.8 (another display curve).
  Histogram equalisation in preprocessing should cancel most of it.

For each: the share of films whose predicted class stays the same, the share
whose COVID-19 alert (calibrated probability >= the stored threshold) flips,
the largest change of any calibrated class probability per film (median,
95th percentile, max) and the accuracy on the changed films. A model whose
answers move under these changes is reading detail the clinic does not
control; the numbers tell a user how much a borderline result can be trusted.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from ml.preprocess import resize


def jpeg_reencoded(film: np.ndarray, *, quality: int = 90) -> np.ndarray:
    """The film (float in [0, 1]) after an 8-bit JPEG round trip."""
    levels = np.round(np.clip(film, 0.0, 1.0) * 255.0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(levels).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("L"), dtype=np.float32) / 255.0


def half_resolution(film: np.ndarray) -> np.ndarray:
    height, width = film.shape
    return resize(film, height=max(1, height // 2), width=max(1, width // 2))


def gamma_adjusted(film: np.ndarray, *, gamma: float = 0.8) -> np.ndarray:
    return np.power(np.clip(film, 0.0, 1.0), gamma).astype(np.float32)


@dataclass(frozen=True)
class Perturbation:
    name: str
    description: str
    apply: Callable[[np.ndarray], np.ndarray]


PERTURBATIONS = (
    Perturbation("jpeg_q90", "re-encoded as JPEG, quality 90", jpeg_reencoded),
    Perturbation("half_resolution", "half the width and height", half_resolution),
    Perturbation("gamma_0.8", "mid-tones brightened (gamma 0.8)", gamma_adjusted),
)


@dataclass(frozen=True)
class PerturbationStability:
    name: str
    description: str
    n: int
    same_class: float | None
    alert_changed: float | None
    probability_change_median: float | None
    probability_change_p95: float | None
    probability_change_max: float | None
    accuracy: float | None
    accuracy_original: float | None


def summarize_stability(
    *,
    y_true: np.ndarray,
    probabilities: np.ndarray,
    perturbed: dict[str, np.ndarray],
    positive_index: int,
    threshold: float,
) -> dict[str, dict]:
    """One ``PerturbationStability`` (as a dict) per perturbation name in ``perturbed``.

    ``probabilities`` and each ``perturbed[name]`` are calibrated ``(N, n_classes)``
    for the same films in the same order.
    """
    y_true = np.asarray(y_true)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    descriptions = {p.name: p.description for p in PERTURBATIONS}
    out = {}
    for name, changed in perturbed.items():
        changed = np.asarray(changed, dtype=np.float64)
        n = int(y_true.size)
        if n == 0:
            out[name] = asdict(PerturbationStability(name, descriptions.get(name, name), 0, *([None] * 7)))
            continue
        change = np.abs(changed - probabilities).max(axis=1)
        alerts = probabilities[:, positive_index] >= threshold
        alerts_changed = changed[:, positive_index] >= threshold
        out[name] = asdict(PerturbationStability(
            name=name,
            description=descriptions.get(name, name),
            n=n,
            same_class=float(np.mean(changed.argmax(axis=1) == probabilities.argmax(axis=1))),
            alert_changed=float(np.mean(alerts != alerts_changed)),
            probability_change_median=float(np.median(change)),
            probability_change_p95=float(np.quantile(change, 0.95)),
            probability_change_max=float(change.max()),
            accuracy=float(np.mean(changed.argmax(axis=1) == y_true)),
            accuracy_original=float(np.mean(probabilities.argmax(axis=1) == y_true)),
        ))
    return out

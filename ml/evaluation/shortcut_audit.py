"""Does the classifier read the lungs, or the film around them?

The development pool confounds class with source (SOURCES.md): COVID-19
films come from web collections, normal and most pneumonia films from one
hospital. A network can score well by recognising borders, burnt-in text,
JPEG artefacts or contrast. This audit, part of every evaluation report,
measures three things on the preprocessed model inputs:

1. **Lungs hidden**: the lung region (``ml.serving.lungs.lung_mask``) is replaced by
   a constant and the model is run again. The constant is the mean of the
   *visible* pixels of the same image (everything outside the lungs), so the
   fill carries no information from the hidden pixels and adds no contrast
   beyond the region's outline. If the model still classifies well above
   chance (``1 / n_classes``), it is reading something outside the lungs:
   we flag it when accuracy with the lungs hidden exceeds chance by more than
   ``SHORTCUT_MARGIN`` (10 points). Balanced accuracy (mean recall, whose
   chance level is ``1 / n_classes`` whatever the class mix) is reported
   beside it.
2. **Lungs only**: the same with everything outside the lung region filled
   by the mean of the lung pixels. A model that reads the lungs should keep
   most of its accuracy here.
3. **Grad-CAM energy outside the lungs**, on a bounded sample: the share of
   the heatmap's total mass that falls outside the lung region, compared
   with the share of the image area outside it (what a uniform heatmap
   would give).

The lung region is a fixed anatomical prior today (see ``ml.serving.lungs``), so
the edge of the ellipses leaves some lung visible when "hidden"; that
errs towards crediting the model with lung reading, not against it.

Leave-one-source-out results from the artifact's ``loso.json`` are attached
unchanged when present: they answer the same question from the data side.

Masking cannot see cues that sit inside the lungs. When the films' sources
are known, ``ml.evaluation.source_probe`` measures those directly: how well the
collection can be read off the model's input, features and answers within
one class. Its results are attached as ``source_probe``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ml.evaluation import metrics
from ml.evaluation.source_probe import probe_findings
from ml.serving.lungs import lung_mask

SHORTCUT_MARGIN = 0.10

FILL_DESCRIPTION = (
    "hidden region replaced by the mean of the visible pixels of the same preprocessed image"
)


@dataclass(frozen=True)
class VariantScores:
    """Scores of the model on one variant of the inputs (full, lungs hidden, lungs only)."""

    accuracy: float | None
    accuracy_ci: list[float | None]
    balanced_accuracy: float | None
    macro_auc: float | None
    predicted_class_counts: list[int]


@dataclass(frozen=True)
class GradcamEnergy:
    n: int
    mean_share_outside_lungs: float | None
    median_share_outside_lungs: float | None
    area_share_outside_lungs: float  # what a uniform heatmap would give
    share_of_images_mostly_outside: float | None  # images with > half the energy outside


@dataclass
class ShortcutAudit:
    n: int
    n_classes: int
    chance_accuracy: float
    margin: float
    lung_region: str
    fill: str
    lung_area_fraction: float
    full: VariantScores
    lungs_hidden: VariantScores
    lungs_only: VariantScores
    gradcam: GradcamEnergy | None
    shortcut_suspected: bool
    findings: list[str] = field(default_factory=list)
    loso: dict | list | None = None
    source_probe: dict | None = None  # ml.evaluation.source_probe.probe_model, as dictionaries

    def to_dict(self) -> dict:
        return asdict(self)


def hide_lungs(model_input: np.ndarray, mask: np.ndarray, *, fill_value: float | None = None) -> np.ndarray:
    """Copy of ``model_input`` with the lung region set to ``fill_value`` (default: the mean of the rest)."""
    return _fill(model_input, region=mask, fill_value=fill_value)


def keep_only_lungs(model_input: np.ndarray, mask: np.ndarray, *, fill_value: float | None = None) -> np.ndarray:
    """Copy of ``model_input`` with everything outside the lungs set to ``fill_value`` (default: the lungs' mean)."""
    return _fill(model_input, region=~mask, fill_value=fill_value)


def _fill(model_input: np.ndarray, *, region: np.ndarray, fill_value: float | None) -> np.ndarray:
    image = np.array(model_input, dtype=np.float32, copy=True)
    plane = image[..., 0] if image.ndim == 3 else image
    if fill_value is None:
        visible = plane[~region]
        fill_value = float(visible.mean()) if visible.size else 0.5
    plane[region] = fill_value
    return image


def gradcam_share_outside(heatmap: np.ndarray, mask: np.ndarray) -> float | None:
    """Share of the heatmap's mass outside ``mask``; ``None`` for an all-zero heatmap."""
    heatmap = np.clip(np.asarray(heatmap, dtype=np.float64), 0.0, None)
    total = heatmap.sum()
    if total <= 0:
        return None
    return float(heatmap[~mask].sum() / total)


def _variant_scores(
    *, y_true: np.ndarray, probabilities: np.ndarray, groups: Sequence[object] | None, seed: int, n_resamples: int
) -> VariantScores:
    n_classes = probabilities.shape[1]
    y_pred = probabilities.argmax(axis=1)
    recalls = [s.recall for s in metrics.per_class_scores(y_true=y_true, y_pred=y_pred, n_classes=n_classes)]
    defined = [r for r in recalls if r is not None]
    correct = (y_pred == y_true).astype(np.float64)
    interval = metrics.bootstrap_ci(
        statistic=lambda idx: float(correct[idx].mean()),
        n=y_true.size,
        groups=groups,
        n_resamples=n_resamples,
        seed=seed,
    )
    return VariantScores(
        accuracy=metrics.accuracy(y_true=y_true, y_pred=y_pred),
        accuracy_ci=[interval.low, interval.high],
        balanced_accuracy=float(np.mean(defined)) if defined else None,
        macro_auc=metrics.macro_auc(y_true=y_true, probabilities=probabilities),
        predicted_class_counts=np.bincount(y_pred, minlength=n_classes).tolist(),
    )


def load_loso(artifact_dir: Path | str) -> dict | list | None:
    """The artifact's leave-one-source-out results, or ``None`` if it has none."""
    path = Path(artifact_dir) / "loso.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def run_shortcut_audit(
    *,
    model_inputs: np.ndarray,
    y_true: Sequence[int] | np.ndarray,
    predict_model_inputs: Callable[[np.ndarray], np.ndarray],
    probabilities_full: np.ndarray | None = None,
    heatmaps: Sequence[np.ndarray] | None = None,
    heatmap_indices: Sequence[int] | None = None,
    groups: Sequence[object] | None = None,
    loso: dict | list | None = None,
    masks: np.ndarray | None = None,
    mask_fn: Callable[[np.ndarray], np.ndarray] = lung_mask,
    lung_region: str = "fixed two-ellipse anatomical prior (ml.serving.lungs)",
    fill_value: float | None = None,
    seed: int = 0,
    n_resamples: int = 1000,
    source_probe: dict | None = None,
) -> ShortcutAudit:
    """Audit one model on preprocessed inputs ``(N, S, S, 1)``.

    ``predict_model_inputs`` maps a batch of model inputs to probabilities
    ``(N, n_classes)`` (calibrated, as the portal shows them); it is called on
    the lungs-hidden and lungs-only batches, and on the originals unless
    ``probabilities_full`` is given. ``heatmaps`` are Grad-CAM maps ``(S, S)``
    for the cases ``heatmap_indices`` (a bounded sample, Grad-CAM is slow).
    ``masks`` ``(N, S, S)`` are per-image lung regions; without them
    ``mask_fn`` derives one from each input. ``fill_value`` replaces the
    hidden pixels; ``None`` (the default) uses the mean of the visible ones.
    Pass the blank value of a preprocessing that already blanks outside the
    lungs, so "lungs only" is exactly the input the model was trained on.
    """
    model_inputs = np.asarray(model_inputs, dtype=np.float32)
    y_true = np.asarray(y_true, dtype=np.int64)
    n = y_true.size
    if masks is None:
        masks = np.stack([mask_fn(image) for image in model_inputs]) if n else np.zeros((0, 1, 1), bool)
    masks = np.asarray(masks, dtype=bool)
    hidden = (
        np.stack([hide_lungs(image, mask, fill_value=fill_value) for image, mask in zip(model_inputs, masks)])
        if n
        else model_inputs
    )
    only = (
        np.stack([keep_only_lungs(image, mask, fill_value=fill_value) for image, mask in zip(model_inputs, masks)])
        if n
        else model_inputs
    )
    if probabilities_full is None:
        probabilities_full = predict_model_inputs(model_inputs)
    probabilities_hidden = predict_model_inputs(hidden)
    probabilities_only = predict_model_inputs(only)
    n_classes = np.asarray(probabilities_full).shape[1]
    chance = 1.0 / n_classes

    def scores(probabilities: np.ndarray) -> VariantScores:
        return _variant_scores(
            y_true=y_true, probabilities=np.asarray(probabilities), groups=groups, seed=seed, n_resamples=n_resamples
        )

    full, lungs_hidden, lungs_only = scores(probabilities_full), scores(probabilities_hidden), scores(probabilities_only)
    lung_area = float(masks.mean()) if n else 0.0

    gradcam = None
    if heatmaps is not None and heatmap_indices is not None and len(heatmaps):
        shares = [
            gradcam_share_outside(heatmap, masks[index])
            for heatmap, index in zip(heatmaps, heatmap_indices, strict=True)
        ]
        shares = np.array([s for s in shares if s is not None])
        gradcam = GradcamEnergy(
            n=int(shares.size),
            mean_share_outside_lungs=float(shares.mean()) if shares.size else None,
            median_share_outside_lungs=float(np.median(shares)) if shares.size else None,
            area_share_outside_lungs=1.0 - lung_area,
            share_of_images_mostly_outside=float(np.mean(shares > 0.5)) if shares.size else None,
        )

    findings = []
    suspected = lungs_hidden.accuracy is not None and lungs_hidden.accuracy > chance + SHORTCUT_MARGIN
    if lungs_hidden.accuracy is not None:
        verdict = "more than" if suspected else "not more than"
        findings.append(
            f"With the lungs hidden, accuracy is {lungs_hidden.accuracy:.1%} (chance {chance:.1%}): "
            f"{verdict} {SHORTCUT_MARGIN * 100:.0f} percentage points above chance"
            + (", so the model reads features outside the lung fields (shortcut suspected)." if suspected else ".")
        )
    if lungs_hidden.macro_auc is not None:
        # Accuracy can collapse to one class on the filled inputs while the ranking still separates
        # the classes: the AUC shows information left outside the lungs even then.
        findings.append(
            f"With the lungs hidden, macro AUC is {lungs_hidden.macro_auc:.3f} (0.5 = no information left)."
        )
    if lungs_only.accuracy is not None and full.accuracy is not None:
        findings.append(
            f"With only the lungs visible, accuracy is {lungs_only.accuracy:.1%} against {full.accuracy:.1%} "
            "on the full image."
        )
    if gradcam is not None and gradcam.mean_share_outside_lungs is not None:
        findings.append(
            f"On {gradcam.n} Grad-CAM maps, on average {gradcam.mean_share_outside_lungs:.1%} of the heatmap "
            f"lies outside the lung region; a uniform map would put {1 - lung_area:.1%} there (the area outside the lungs)."
        )
    if source_probe:
        findings += probe_findings(source_probe)
    if loso is None:
        findings.append("No leave-one-source-out results (loso.json) in the artifact.")
    return ShortcutAudit(
        n=n,
        n_classes=n_classes,
        chance_accuracy=chance,
        margin=SHORTCUT_MARGIN,
        lung_region=lung_region,
        fill=FILL_DESCRIPTION if fill_value is None else f"hidden region set to {fill_value:g}",
        lung_area_fraction=lung_area,
        full=full,
        lungs_hidden=lungs_hidden,
        lungs_only=lungs_only,
        gradcam=gradcam,
        shortcut_suspected=bool(suspected),
        findings=findings,
        loso=loso,
        source_probe=source_probe,
    )

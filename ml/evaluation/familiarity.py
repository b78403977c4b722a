"""What the familiarity check flags: per source, in a leave-one-source-out test, and under changes to a film.

``summarize_familiarity`` goes into every evaluation report. ``shift_table``
measures the check under ``shifts()``: the harmless changes of
``ml.serving.stability`` (which it should rarely flag) and changes that make a
film unlike the development pool (a wrong orientation, inverted grey scale,
heavy compression, noise or blur)::

    python -m ml familiarity --model ARTIFACT --shifts [--subset test] --out FILE.json
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
from PIL import Image, ImageFilter
from tqdm import tqdm

from ml.evaluation import metrics
from ml.serving.familiarity import UNFAMILIAR
from ml.serving.pixels import FILM_MAX_SIDE, shrink_longest_side
from ml.serving.preprocess import LUNGS_NOT_FOUND
from ml.serving.stability import PERTURBATIONS, Perturbation, jpeg_reencoded


def summarize_familiarity(
    *,
    scores: np.ndarray,
    threshold: float,
    correct: np.ndarray,
    sources: Sequence[str],
    left_out_source: str | None = None,
) -> dict:
    """How many films the check flags, how right the model is on them, and per source.

    With ``left_out_source`` (a leave-one-source-out model), also the AUC of
    the score for telling that unseen collection's films from the familiar
    sources' films in the same set (None when only one kind is present).
    """

    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    flagged = scores > threshold
    sources = np.asarray(list(sources))

    def part(members: np.ndarray) -> dict:
        return {
            "n": int(members.sum()),
            "n_flagged": int(flagged[members].sum()),
            "flagged_share": float(flagged[members].mean()) if members.any() else None,
            "median_score": float(np.median(scores[members])) if members.any() else None,
            "accuracy_flagged": float(correct[members & flagged].mean()) if (members & flagged).any() else None,
            "accuracy_familiar": float(correct[members & ~flagged].mean()) if (members & ~flagged).any() else None,
        }

    summary = {
        "threshold": float(threshold),
        **part(np.ones(scores.size, dtype=bool)),
        "per_source": {str(source): part(sources == source) for source in sorted(set(sources.tolist()))},
        "left_out_source": left_out_source,
        "left_out_auc": None,
    }
    if left_out_source is not None:
        unseen = sources == left_out_source
        if unseen.any() and (~unseen).any():
            summary["left_out_auc"] = metrics.roc_auc(y_true_binary=unseen, scores=scores)
    return summary


def _blurred(film: np.ndarray, *, radius: float = 3.0) -> np.ndarray:
    # Pillow blurs 8-bit images only; the development films are 8-bit anyway.
    levels = Image.fromarray(np.round(np.clip(film, 0.0, 1.0) * 255.0).astype(np.uint8))
    return np.asarray(levels.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32) / 255.0


def _noisy(film: np.ndarray, *, sd: float = 0.08) -> np.ndarray:
    # Seeded by the film's size: the same film always gets the same noise.
    rng = np.random.default_rng(film.size)
    return np.clip(film + rng.normal(0.0, sd, film.shape), 0.0, 1.0).astype(np.float32)


def shifts():
    """Changes to a film, each made at training resolution: first the harmless ones, then real shifts."""

    return (
        Perturbation("none", "as stored", lambda film: film),
        *PERTURBATIONS,
        Perturbation("jpeg_q20", "re-encoded as JPEG, quality 20", partial(jpeg_reencoded, quality=20)),
        Perturbation("noise", "Gaussian noise, sd 0.08", _noisy),
        Perturbation("blur", "Gaussian blur, radius 3 px at 512 px", _blurred),
        Perturbation("rotated_90", "rotated a quarter turn", lambda film: np.ascontiguousarray(np.rot90(film))),
        Perturbation("upside_down", "upside down", lambda film: np.ascontiguousarray(film[::-1])),
        Perturbation("inverted", "grey scale inverted (bones dark)", lambda film: (1.0 - film).astype(np.float32)),
    )


def shift_table(*, predictor, films: Sequence[np.ndarray], labels: Sequence[int], progress: bool = True) -> dict:
    """For each of ``shifts()``: share of films flagged unfamiliar (and lungs_not_found), accuracy, class kept."""

    labels = np.asarray(labels)
    frames = [shrink_longest_side(np.asarray(film, dtype=np.float32), max_side=FILM_MAX_SIDE) for film in films]
    table, original = {}, None
    for shift in tqdm(shifts(), desc="shifts", unit="shift", disable=not progress):
        results = [predictor.predict_one(shift.apply(frame)) for frame in frames]
        predicted = np.array([predictor.class_names.index(result.label) for result in results])
        if original is None:
            original = predicted
        table[shift.name] = {
            "description": shift.description,
            "n": len(results),
            "unfamiliar": float(np.mean([UNFAMILIAR in result.warnings for result in results])),
            "lungs_not_found": float(np.mean([LUNGS_NOT_FOUND in result.warnings for result in results])),
            "median_score": float(np.median([result.familiarity_score for result in results])),
            "accuracy": float(np.mean(predicted == labels)),
            "same_class": float(np.mean(predicted == original)),
        }
    return table



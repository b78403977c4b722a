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

Each change is made at training resolution (longest side 512, as the
development pool's films), whatever the film's own size.

For each: the share of films whose predicted class stays the same, the share
whose COVID-19 alert (calibrated probability >= the stored threshold) flips,
the largest change of any calibrated class probability per film (median,
95th percentile, max) and the accuracy on the changed films. A model whose
answers move under these changes is reading detail the clinic does not
control; the numbers tell a user how much a borderline result can be trusted.

The same check runs on the films the worker classifies: when any of these
changes moves the predicted class or the COVID-19 alert, the result carries
the warning ``unstable``. The evaluation reports how many films that flags
and how accurate the flagged and unflagged results are.

The worker skips the check where no change of ``STABILITY_CHECK_MARGIN`` could
move the answer (``near_a_boundary``): the three extra passes are most of a
film's inference cost. Every evaluation still runs the check on every film and
reports how many of its flags the skipped films would have carried
(``stability.unstable.gate``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from ml.serving.pixels import FILM_MAX_SIDE, resize, shrink_longest_side


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


def changed_films(film: np.ndarray) -> Iterator[tuple[Perturbation, np.ndarray]]:
    """Each of PERTURBATIONS applied to the film, made at training resolution (longest side FILM_MAX_SIDE).

    The model only ever sees a frame of a few hundred pixels, so "half the
    resolution" of a 3000-pixel film would change nothing it sees; at training
    resolution every change means the same for every film, and a detector-sized
    film costs no more to check than a small one. The film is shrunk once; the
    changes come one at a time, so a caller can stop at the first that matters.
    """
    frame = shrink_longest_side(np.asarray(film, dtype=np.float32), max_side=FILM_MAX_SIDE)
    for perturbation in PERTURBATIONS:
        yield perturbation, perturbation.apply(frame)


# Warning code for a result whose class or COVID-19 alert moves under one of the PERTURBATIONS.
UNSTABLE = "unstable"


def answer_moves(*, probabilities: np.ndarray, changed: np.ndarray, positive_index: int, threshold: float) -> np.ndarray:
    """Per film: does the changed film get another class or another COVID-19 alert? (``(N, C)`` in, ``(N,)`` out)."""
    probabilities, changed = np.atleast_2d(probabilities), np.atleast_2d(changed)
    other_class = changed.argmax(axis=1) != probabilities.argmax(axis=1)
    other_alert = (changed[:, positive_index] >= threshold) != (probabilities[:, positive_index] >= threshold)
    return other_class | other_alert


# The check runs where one change of at most this much in each calibrated probability could move the class
# (the top two classes closer than twice this) or the COVID-19 alert (the COVID-19 probability closer than this
# to its threshold). Chosen on the development films (production artifact, 2026-12-04): every one of the 233
# films the full check flags in train, val and test (1,772 films) lies within 0.25 of a boundary (the farthest
# 0.23, in train; at most 0.10 in val and test), while 24-29% of films lie farther and skip the three passes.
STABILITY_CHECK_MARGIN = 0.25


def near_a_boundary(probabilities: np.ndarray, *, positive_index: int, threshold: float,
                    margin: float = STABILITY_CHECK_MARGIN) -> np.ndarray:
    """Per film: could a change of ``margin`` in each calibrated probability move the class or the alert?
    (``(N, C)`` or ``(C,)`` in, ``(N,)`` out)."""
    probabilities = np.atleast_2d(np.asarray(probabilities, dtype=np.float64))
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    class_gap = top_two[:, 1] - top_two[:, 0]
    alert_distance = np.abs(probabilities[:, positive_index] - threshold)
    return (class_gap < 2 * margin) | (alert_distance < margin)


def probability_changes(probabilities: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """Per film, the largest change of any class probability (``(N, C)`` twice in, ``(N,)`` out)."""
    return np.abs(np.asarray(changed, dtype=np.float64) - np.asarray(probabilities, dtype=np.float64)).max(axis=1)


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


@dataclass(frozen=True)
class UnstableFlag:
    """What the ``unstable`` warning would have flagged on the evaluated films."""

    rule: str
    n: int
    n_flagged: int
    share_flagged: float | None
    accuracy_flagged: float | None
    accuracy_unflagged: float | None
    alert_correct_flagged: float | None
    alert_correct_unflagged: float | None
    # What the worker's gated check (near_a_boundary) does on these films: how many it checks, how many of
    # the flags above it would miss (films it skips that the full check flags).
    gate: dict | None = None


def _share(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def summarize_stability(
    *,
    y_true: np.ndarray,
    probabilities: np.ndarray,
    perturbed: dict[str, np.ndarray],
    positive_index: int,
    threshold: float,
) -> dict:
    """``{"perturbations": {name: PerturbationStability}, "unstable": UnstableFlag}`` as plain dicts.

    ``probabilities`` and each ``perturbed[name]`` are calibrated ``(N, n_classes)``
    for the same films in the same order.
    """
    y_true = np.asarray(y_true)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n = int(y_true.size)
    descriptions = {p.name: p.description for p in PERTURBATIONS}
    per_perturbation = {}
    flagged = np.zeros(n, dtype=bool)
    alerts = probabilities[:, positive_index] >= threshold if n else np.zeros(0, dtype=bool)
    for name, changed in perturbed.items():
        changed = np.asarray(changed, dtype=np.float64)
        if n == 0:
            per_perturbation[name] = asdict(PerturbationStability(name, descriptions.get(name, name), 0, *([None] * 7)))
            continue
        flagged |= answer_moves(probabilities=probabilities, changed=changed, positive_index=positive_index,
                                threshold=threshold)
        change = probability_changes(probabilities, changed)
        alerts_changed = changed[:, positive_index] >= threshold
        per_perturbation[name] = asdict(PerturbationStability(
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
    correct = probabilities.argmax(axis=1) == y_true if n else np.zeros(0, dtype=bool)
    alert_correct = alerts == (y_true == positive_index)
    near = near_a_boundary(probabilities, positive_index=positive_index, threshold=threshold) if n else flagged
    unstable = UnstableFlag(
        rule="any of the changes moves the predicted class or the COVID-19 alert",
        n=n,
        n_flagged=int(flagged.sum()),
        share_flagged=_share(flagged),
        accuracy_flagged=_share(correct[flagged]),
        accuracy_unflagged=_share(correct[~flagged]),
        alert_correct_flagged=_share(alert_correct[flagged]),
        alert_correct_unflagged=_share(alert_correct[~flagged]),
        gate={"margin": STABILITY_CHECK_MARGIN, "n_checked": int(near.sum()), "share_checked": _share(near),
              "n_flagged_missed": int((flagged & ~near).sum())},
    )
    return {"perturbations": per_perturbation, "unstable": asdict(unstable)}

"""Does a film look like the films the model was trained on?

The field's known failure is a model that is right on its own collections and
wrong at the next hospital. A model cannot know it is wrong, but it can tell
when a film is unlike anything it learned from: then its probabilities, and
every number in the model card, say nothing about that film.

The check works on the network's own view of a film, the spatially averaged
``gradcam_features`` (the features its classifier head reads):

1. On the training films, standardise each feature, then fit one Gaussian per
   class with a shared covariance (Ledoit-Wolf shrinkage, since a few hundred
   features are estimated from about a thousand films).
2. A film's score is its squared Mahalanobis distance to the nearest class
   mean (Lee et al., NeurIPS 2018). Training films of every class score low;
   a film from an unseen detector, hospital or view scores high.
3. The threshold is the 95th percentile of the validation films' scores: by
   design about 5% of films like the training data are flagged.

A film above the threshold carries the warning ``unfamiliar``. Every
evaluation reports how many films the check flags, per source, and how
accurate the flagged ones are; a leave-one-source-out evaluation also reports
how well the score tells the left-out collection from the familiar ones.

This module scores films (what the worker runs); ``ml.training.familiarity``
fits the check into an artifact (``python -m ml familiarity --model ARTIFACT``)
and ``ml.evaluation.familiarity`` measures what it flags.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.serving.gradcam import GRADCAM_LAYER, cam_model

FEATURES_FILE = "features.tflite"
STATS_FILE = "familiarity.npz"
UNFAMILIAR = "unfamiliar"
DEFAULT_QUANTILE = 0.95


def features_model(keras_model):
    """A Keras model giving the spatial mean of ``gradcam_features`` (what the classifier head reads).

    For a pooling + Dense head it also gives every class's activation map
    (``ml.serving.gradcam.cam_model``), so that one pass of the backbone serves both
    the familiarity check and the heatmap.
    """
    import keras


    pooled = keras.layers.GlobalAveragePooling2D(name="familiarity_features")(
        keras_model.get_layer(GRADCAM_LAYER).output
    )
    cam = cam_model(keras_model)
    outputs = pooled if cam is None else [pooled, cam.output]
    return keras.Model(keras_model.inputs, outputs, name="features")


def split_outputs(outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """The pooled features (C,) and the class maps (h, w, classes) or None, from features.tflite's outputs.

    Told apart by rank: TFLite does not promise to keep Keras's output order.
    """
    pooled = next(output for output in outputs if output.ndim == 1)
    class_maps = next((output for output in outputs if output.ndim == 3), None)
    return pooled, class_maps


@dataclass(frozen=True)
class FamiliarityModel:
    center: np.ndarray  # (d,) feature means over the training films
    scale: np.ndarray  # (d,) feature standard deviations (1 where constant)
    class_means: np.ndarray  # (classes, d), standardised
    precision: np.ndarray  # (d, d) inverse of the shrunk shared covariance
    threshold: float  # scores above it are unfamiliar
    quantile: float  # share of validation films at or below the threshold
    shrinkage: float

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row (n, d) to the nearest class mean."""
        standard = (np.atleast_2d(np.asarray(features, dtype=np.float64)) - self.center) / self.scale
        distances = []
        for mean in self.class_means:
            difference = standard - mean
            distances.append(np.einsum("nd,de,ne->n", difference, self.precision, difference))
        return np.min(np.stack(distances, axis=1), axis=1)

    def is_unfamiliar(self, score: float) -> bool:
        return score > self.threshold

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            center=self.center,
            scale=self.scale,
            class_means=self.class_means,
            precision=self.precision,
            threshold=np.float64(self.threshold),
            quantile=np.float64(self.quantile),
            shrinkage=np.float64(self.shrinkage),
        )
        return buffer.getvalue()

    @classmethod
    def load(cls, path: Path | str) -> "FamiliarityModel":
        with np.load(path) as stored:
            return cls(
                center=stored["center"],
                scale=stored["scale"],
                class_means=stored["class_means"],
                precision=stored["precision"],
                threshold=float(stored["threshold"]),
                quantile=float(stored["quantile"]),
                shrinkage=float(stored["shrinkage"]),
            )



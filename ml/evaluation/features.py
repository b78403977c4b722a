"""Pooled features of labelled films, cached per film and backbone, and the Dense head that reads them.

Adaptation and the evaluation of its candidates both work on the features the
classifier head reads (the spatial mean of ``gradcam_features``): computed once
per stored film and backbone, a rerun of an adaptation costs seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ml.evaluation.datasets import decode_file
from ml.serving.artifact import ArtifactMetadata, file_sha256
from ml.serving.calibration import softmax
from ml.serving.gradcam import has_pooled_head
from ml.serving.labels import CLASS_NAMES
from ml.serving.preprocess import preprocess_checked


@dataclass(frozen=True)
class LabelledFilm:
    """One labelled film; ``key`` (the SHA-256 of the stored file) names it in the feature cache."""

    key: str
    label: int
    patient: str
    load: Callable[[], np.ndarray] = field(compare=False, repr=False)  # decoded pixels in [0, 1]
    name: str = ""
    source: str = "site"


def films_from_samples(samples) -> list[LabelledFilm]:
    """``ml.evaluation.datasets.Sample`` rows as films, keyed by their file's SHA-256 (a bad file fails when loaded)."""

    return [
        LabelledFilm(key=file_sha256(sample.path), label=CLASS_NAMES.index(sample.label), patient=sample.patient,
                     load=lambda path=sample.path: decode_file(path), name=sample.key, source=sample.source)
        for sample in samples
    ]


def backbone_id(metadata: ArtifactMetadata) -> str:
    """What the pooled features depend on: a candidate with a refitted head shares its parent's backbone."""
    adaptation = (metadata.training or {}).get("adaptation") or {}
    return adaptation.get("backbone") or metadata.sha256


class FeatureCache:
    """Pooled features per film SHA-256 and backbone, one small .npy file each (``None`` root: no cache)."""

    def __init__(self, root: Path | str | None) -> None:
        self.root = Path(root) if root else None

    def _path(self, backbone: str, key: str) -> Path:
        return self.root / backbone[:16] / key[:2] / f"{key}.npy"

    def get(self, backbone: str, key: str) -> np.ndarray | None:
        if self.root is None:
            return None
        try:
            return np.load(self._path(backbone, key))
        except (OSError, ValueError):
            return None

    def put(self, backbone: str, key: str, features: np.ndarray) -> None:
        if self.root is None:
            return
        path = self._path(backbone, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{time.monotonic_ns()}.partial")
        with open(partial, "wb") as handle:
            np.save(handle, np.asarray(features, dtype=np.float32))
        partial.replace(path)  # a reader never sees half a file


@dataclass
class FeatureSet:
    """Features of the films that could be read, in order; ``skipped`` lists the others and why."""

    features: np.ndarray
    films: list[LabelledFilm]
    skipped: list[dict]

    @property
    def labels(self) -> np.ndarray:
        return np.array([film.label for film in self.films], dtype=np.int64)

    @property
    def patients(self) -> list[str]:
        return [film.patient for film in self.films]


def extract_features(
    *, predictor, films: Sequence[LabelledFilm], cache: FeatureCache, backbone: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FeatureSet:
    """Pooled features (N, C) as serving computes them (same preprocessing), from the cache when there."""

    backbone = backbone or backbone_id(predictor.metadata)
    rows, kept, skipped = [], [], []
    for index, film in enumerate(films):
        features = cache.get(backbone, film.key)
        if features is None:
            try:
                model_input, _warnings = preprocess_checked(film.load(), predictor.config)
            except (OSError, ValueError) as error:  # ImageDecodeError is a ValueError
                skipped.append({"file": film.name or film.key, "reason": str(error)})
                continue
            features = predictor.features(model_input)
            cache.put(backbone, film.key, features)
        rows.append(np.asarray(features, dtype=np.float32))
        kept.append(film)
        if progress is not None:
            progress(index + 1, len(films))
    width = rows[0].shape[0] if rows else 0
    return FeatureSet(features=np.stack(rows) if rows else np.zeros((0, width), np.float32), films=kept,
                      skipped=skipped)


@dataclass(frozen=True)
class Head:
    """The Dense classifier head: raw probabilities = softmax(features @ kernel + bias)."""

    kernel: np.ndarray  # (C, classes)
    bias: np.ndarray  # (classes,)

    def raw_probabilities(self, features: np.ndarray) -> np.ndarray:
        return softmax(np.asarray(features, dtype=np.float64) @ self.kernel + self.bias)


class NoPooledHead(ValueError):
    """The network does not end in global average pooling and a Dense head (the seed flattens)."""


def read_head(keras_model) -> Head:

    if not has_pooled_head(keras_model):
        raise NoPooledHead("This model does not end in global average pooling and a Dense head: "
                           "its head cannot be read or refitted on pooled features.")
    kernel, bias = keras_model.get_layer("logits").get_weights()
    return Head(kernel=np.asarray(kernel, np.float64), bias=np.asarray(bias, np.float64))


def raw_probabilities(*, predictor, films: Sequence[LabelledFilm], cache: FeatureCache,
                      progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, FeatureSet]:
    """The network's uncalibrated output for each readable film: its head on cached features when it has a
    pooled head, otherwise a full pass per film."""
    try:
        head = read_head(predictor.keras_model)
    except NoPooledHead:
        rows, kept, skipped = [], [], []
        for index, film in enumerate(films):
            try:
                result = predictor.predict_one(film.load())
            except (OSError, ValueError) as error:
                skipped.append({"file": film.name or film.key, "reason": str(error)})
                continue
            rows.append([result.raw_probabilities[name] for name in predictor.class_names])
            kept.append(film)
            if progress is not None:
                progress(index + 1, len(films))
        return np.asarray(rows, dtype=np.float64).reshape(-1, len(CLASS_NAMES)), FeatureSet(
            features=np.zeros((len(kept), 0), np.float32), films=kept, skipped=skipped)
    features = extract_features(predictor=predictor, films=films, cache=cache, progress=progress)
    return head.raw_probabilities(features.features), features

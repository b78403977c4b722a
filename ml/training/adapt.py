"""Adapt a model to one hospital's labelled films: a new artifact version whose parent is recorded.

    python -m ml adapt --model ARTIFACT --data SITE_ROOT [--manifest CSV] --out NEW_ARTIFACT
        [--version V] [--steps calibrate|head|finetune] [--site-weight 0.5] [--target-sensitivity 0.95]
        [--dev-data ROOT] [--feature-cache DIR] [--test-share 0.5]

A model trained on the development pool ranks a new hospital's films far
worse than its own (class is tied to collection there), but its pooled
features still carry the signal. Starting from ``--model``, the steps are
cumulative, in this order:

- ``calibrate``: refit the temperature and the COVID-19 alert threshold on the
  site's adaptation films (the threshold reaches ``--target-sensitivity``);
- ``head``: refit the classifier head (a multinomial logistic regression on the
  pooled features, pulled towards the old head) on the development training
  films plus the site's adaptation films, the site's films carrying
  ``--site-weight`` of the total weight; the temperature and threshold are then
  fitted on out-of-fold predictions, so that they describe films the head did
  not see;
- ``finetune``: also train the last block of the backbone for a few epochs.

Every site film belongs, by a stable hash of its patient, either to the
locked site test part (``site_part``) or to the adaptation part; nothing here
ever fits on the test part. Features are cached per film SHA-256 and backbone
(``FeatureCache``), so a rerun costs seconds. Every choice goes into the new
artifact's ``metadata.json`` under ``training.adaptation``; the familiarity
check and the site monitor's reference are refitted for the new head.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from ml.evaluation.datasets import load_dataset, load_split
from ml.evaluation.features import (
    FeatureCache,
    FeatureSet,
    Head,
    LabelledFilm,
    NoPooledHead,
    backbone_id,
    extract_features,
    films_from_samples,
    raw_probabilities,
    read_head,
)
from ml.evaluation.operating_point import fit_operating_point
from ml.evaluation.site import (
    DEFAULT_TEST_SHARE,
    SITE_TEST,
    compare_on_films,
    refusal_reasons,
    site_part,
    write_predictions_csv,
)
from ml.serving.artifact import ArtifactMetadata, file_sha256, load_metadata, save_metadata
from ml.serving.calibration import apply_temperature, softmax
from ml.serving.command_line import add_model_and_data_arguments
from ml.serving.familiarity import DEFAULT_QUANTILE, FEATURES_FILE, STATS_FILE, features_model, split_outputs
from ml.serving.gradcam import GRADCAM_LAYER
from ml.serving.labels import CLASS_NAMES, POSITIVE_CLASS
from ml.serving.monitoring import Film, add_reference, load_reference, reference_from_films
from ml.serving.predictor import Predictor
from ml.serving.preprocess import preprocess
from ml.training.export import add_cam, export_tflite, max_tflite_difference
from ml.training.familiarity import fit_familiarity

STEPS = ("calibrate", "head", "finetune")
DEFAULT_SITE_WEIGHT = 0.5
DEFAULT_TARGET_SENSITIVITY = 0.95
DEFAULT_L2 = 1e-3
OUT_OF_FOLD_FOLDS = 5
FOLD_STEPS = 150  # from the all-films head; 500 from the parent's
FINETUNE_EPOCHS = 2
FINETUNE_LEARNING_RATE = 1e-4
# Files of the parent that describe the parent's network or held-out runs, not the candidate's.
PARENT_ONLY_FILES = ("model.tflite", "model.keras", "cam.tflite", "features.tflite", "familiarity.npz",
                     "test_metrics.json", "loso.json", "shortcut_audit.json", "history.json", "evaluation.json")

Progress = Callable[[str, float], None]


class AdaptationError(ValueError):
    """The films cannot adapt this model (no COVID-19 film, a head that cannot be refitted); meant for the user."""


def balanced_weights(labels: np.ndarray, *, total: float) -> np.ndarray:
    """Per-film weights summing to ``total``, each present class carrying an equal share."""
    labels = np.asarray(labels)
    weights = np.zeros(len(labels), dtype=np.float64)
    present = np.unique(labels)
    for label in present:
        members = labels == label
        weights[members] = total / (len(present) * members.sum())
    return weights


def fit_weights(*, dev_labels: np.ndarray, site_labels: np.ndarray, site_weight: float) -> np.ndarray:
    """Weights for dev films then site films: the site's films carry ``site_weight`` of the total."""
    if len(dev_labels) == 0:
        return balanced_weights(site_labels, total=1.0)
    if len(site_labels) == 0:
        return balanced_weights(dev_labels, total=1.0)
    return np.concatenate([balanced_weights(dev_labels, total=1.0 - site_weight),
                           balanced_weights(site_labels, total=site_weight)])


def fit_head(
    *, features: np.ndarray, labels: np.ndarray, weights: np.ndarray, initial: Head,
    l2: float = DEFAULT_L2, steps: int = 500, learning_rate: float = 0.05, start: Head | None = None,
) -> Head:
    """Weighted multinomial logistic regression on standardised features, L2-pulled towards ``initial``.

    Full-batch Adam: a convex problem of a few hundred weights per class, seconds on a CPU. Standardising
    makes one learning rate fit every feature; the result is folded back into a plain Dense kernel and bias.
    ``start`` (default ``initial``) is only where the descent begins: a nearby solution needs fewer steps.
    """
    features = np.asarray(features, dtype=np.float64)
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    standard = (features - mean) / scale
    kernel0 = initial.kernel * scale[:, None]
    bias0 = initial.bias + mean @ initial.kernel
    start = start or initial
    kernel, bias = start.kernel * scale[:, None], start.bias + mean @ start.kernel
    onehot = np.eye(kernel.shape[1])[np.asarray(labels, dtype=int)]
    weights = np.asarray(weights, dtype=np.float64)[:, None] / float(np.sum(weights))
    moments = [np.zeros_like(kernel), np.zeros_like(bias)]
    squares = [np.zeros_like(kernel), np.zeros_like(bias)]
    beta1, beta2 = 0.9, 0.999
    for step in range(1, steps + 1):
        error = (softmax(standard @ kernel + bias) - onehot) * weights
        gradients = [standard.T @ error + l2 * (kernel - kernel0), error.sum(axis=0)]
        for index, (parameter, gradient) in enumerate(zip((kernel, bias), gradients)):
            moments[index] = beta1 * moments[index] + (1 - beta1) * gradient
            squares[index] = beta2 * squares[index] + (1 - beta2) * gradient**2
            corrected = moments[index] / (1 - beta1**step)
            parameter -= learning_rate * corrected / (np.sqrt(squares[index] / (1 - beta2**step)) + 1e-8)
    return Head(kernel=kernel / scale[:, None], bias=bias - (mean / scale) @ kernel)


def patient_folds(patients: Sequence[str], *, folds: int = OUT_OF_FOLD_FOLDS) -> np.ndarray:
    """A fold number per film, by patient (another hash than the test split's, so folds mix both sides)."""
    return np.array([int.from_bytes(hashlib.sha256(f"cxr-fold:{patient}".encode()).digest()[:8], "big") % folds
                     for patient in patients], dtype=int)


def out_of_fold_probabilities(
    *, dev_features: np.ndarray, dev_labels: np.ndarray, site: FeatureSet, site_weight: float, initial: Head,
    l2: float, start: Head | None = None,
) -> np.ndarray:
    """Raw probabilities of each site film from a head fitted without that film's patient.

    Each fold's descent starts from ``start`` (the head fitted on every film, which lies close to each fold's
    solution), so it needs a fraction of the steps.
    """
    folds = patient_folds(site.patients)
    raw = np.zeros((len(site.films), len(initial.bias)), dtype=np.float64)
    for fold in np.unique(folds):
        held = folds == fold
        features = np.concatenate([dev_features, site.features[~held]])
        labels = np.concatenate([dev_labels, site.labels[~held]])
        weights = fit_weights(dev_labels=dev_labels, site_labels=site.labels[~held], site_weight=site_weight)
        head = fit_head(features=features, labels=labels, weights=weights, initial=initial, l2=l2, start=start,
                        steps=500 if start is None else FOLD_STEPS)
        raw[held] = head.raw_probabilities(site.features[held])
    return raw


def _fit_heads(*, dev: FeatureSet, site: FeatureSet, initial: Head, settings: "AdaptationSettings",
               progress: Progress) -> tuple[np.ndarray, Head]:
    """The head on every film, and the out-of-fold raw probabilities of the site's films for the operating point."""
    weights = fit_weights(dev_labels=dev.labels, site_labels=site.labels, site_weight=settings.site_weight)
    head = fit_head(features=np.concatenate([dev.features, site.features]),
                    labels=np.concatenate([dev.labels, site.labels]), weights=weights, initial=initial,
                    l2=settings.l2)
    progress("out-of-fold heads for the operating point", 0.88)
    raw = out_of_fold_probabilities(dev_features=dev.features, dev_labels=dev.labels, site=site,
                                    site_weight=settings.site_weight, initial=initial, l2=settings.l2, start=head)
    return raw, head


@dataclass
class AdaptationSettings:
    steps: str = "head"  # the last step run; each includes the ones before it
    site_weight: float = DEFAULT_SITE_WEIGHT
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY
    threshold_confidence: float | None = None  # None: the parent's; 0: none (point estimate)
    l2: float = DEFAULT_L2
    finetune_epochs: int = FINETUNE_EPOCHS
    finetune_learning_rate: float = FINETUNE_LEARNING_RATE

    def __post_init__(self) -> None:
        if self.steps not in STEPS:
            raise ValueError(f"steps must be one of {STEPS}")
        if not 0.0 < self.site_weight < 1.0:
            raise ValueError("site_weight is a share of the fit's weight: strictly between 0 and 1")


@dataclass
class AdaptationResult:
    artifact_dir: Path
    metadata: ArtifactMetadata
    head: Head | None  # None: the parent's head (calibrate only)
    seconds: float
    skipped: list[dict]


def _noop_progress(_stage: str, _fraction: float) -> None:
    return None


def last_block_layers(keras_model) -> list[str]:
    """The layers of the backbone's last block (the one that produces ``gradcam_features``) and the head."""

    names = [layer.name for layer in keras_model.layers]
    gradcam = keras_model.get_layer(GRADCAM_LAYER)
    if gradcam.weights:  # the feature map is itself the last convolution (tiny)
        return [GRADCAM_LAYER, "logits"]
    block = names[names.index(GRADCAM_LAYER) - 1].split("_")[0]
    return [name for name in names if name.split("_")[0] == block] + ["logits"]


def _model_inputs(films: Sequence[LabelledFilm], config) -> np.ndarray:
    return np.stack([preprocess(film.load(), config) for film in films]).astype(np.float32)


def _finetune(*, keras_model, head: Head, inputs: np.ndarray, labels: np.ndarray, weights: np.ndarray,
              settings: AdaptationSettings, progress: Progress) -> list[str]:
    """Train the last block and the head on these model inputs (batch norm statistics frozen); returns the layers."""
    import keras

    trainable = set(last_block_layers(keras_model))
    for layer in keras_model.layers:
        # Batch norm keeps its development statistics: a few hundred films would drag them off.
        layer.trainable = layer.name in trainable and not isinstance(layer, keras.layers.BatchNormalization)
    keras_model.get_layer("logits").set_weights([head.kernel.astype(np.float32), head.bias.astype(np.float32)])
    keras_model.compile(optimizer=keras.optimizers.Adam(settings.finetune_learning_rate),
                        loss="sparse_categorical_crossentropy")
    for epoch in range(settings.finetune_epochs):
        keras_model.fit(inputs, labels, sample_weight=weights * len(weights), batch_size=32, epochs=1,
                        shuffle=True, verbose=0)
        progress("fine-tuning the last block", 0.65 + 0.15 * (epoch + 1) / settings.finetune_epochs)
    return sorted(trainable)


def _keras_features(keras_model, inputs: np.ndarray) -> np.ndarray:
    """Pooled features (N, C) of model inputs through the (fine-tuned) Keras network."""

    model = features_model(keras_model)
    if not len(inputs):
        return np.zeros((0, keras_model.get_layer("logits").input.shape[-1]), np.float32)
    outputs = model.predict(inputs, verbose=0, batch_size=64)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return np.stack([split_outputs([output[i] for output in outputs])[0] for i in range(len(inputs))])


def _copy_parent(parent_dir: Path, out_dir: Path) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        raise AdaptationError(f"{out_dir} is not empty: choose a new folder for the candidate.")
    shutil.copytree(parent_dir, out_dir, dirs_exist_ok=True,
                    ignore=lambda _folder, names: [name for name in names if name in PARENT_ONLY_FILES])


def _export(*, keras_model, out_dir: Path, metadata: ArtifactMetadata, parent: ArtifactMetadata) -> None:
    """model.keras, model.tflite (checked against Keras) and, when the parent had one, cam.tflite."""
    import keras


    serving_model = keras.models.clone_model(keras_model)
    serving_model.set_weights(keras_model.get_weights())
    serving_model.save(out_dir / metadata.keras_file)
    tflite_path = export_tflite(keras_model=serving_model, path=out_dir / metadata.model_file)
    size = metadata.input_size
    check = np.random.default_rng(0).uniform(0, 1, (3, size, size, 1)).astype(np.float32)
    difference = max_tflite_difference(keras_model=serving_model, tflite_path=tflite_path, inputs=check)
    if not difference <= 1e-4:
        raise RuntimeError(f"TFLite differs from Keras by {difference:.2e}")
    metadata.sha256 = file_sha256(tflite_path)
    metadata.training["adaptation"]["tflite_max_abs_difference"] = difference
    metadata.cam_file = metadata.cam_sha256 = None
    save_metadata(artifact_dir=out_dir, metadata=metadata)
    if parent.cam_file:
        add_cam(out_dir, keras_model=serving_model, check_inputs=check)


def _refit_familiarity(*, keras_model, out_dir: Path, train_features: np.ndarray, train_labels: np.ndarray,
                       val_features: np.ndarray, parent: ArtifactMetadata) -> None:
    """features.tflite for the new network and the familiarity statistics on the films the head learned from.

    The site's adaptation films are among the training films, so films like them are familiar from now on.
    """

    quantile = float((parent.familiarity or {}).get("quantile", DEFAULT_QUANTILE))
    model = features_model(keras_model)
    features_path = export_tflite(keras_model=model, path=out_dir / FEATURES_FILE)
    familiarity = fit_familiarity(train_features=train_features, train_labels=train_labels,
                                  val_features=val_features, quantile=quantile)
    stats_path = out_dir / STATS_FILE
    stats_path.write_bytes(familiarity.to_bytes())
    metadata = load_metadata(out_dir)
    metadata.familiarity = {
        "features_file": FEATURES_FILE, "features_sha256": file_sha256(features_path),
        "stats_file": STATS_FILE, "stats_sha256": file_sha256(stats_path),
        "threshold": familiarity.threshold, "quantile": quantile, "class_maps": len(model.outputs) == 2,
        "shrinkage": familiarity.shrinkage, "n_train": int(len(train_features)), "n_val": int(len(val_features)),
    }
    save_metadata(artifact_dir=out_dir, metadata=metadata)


def _monitoring_reference(*, out_dir: Path, calibrated: np.ndarray, labels: np.ndarray, threshold: float,
                          parent: ArtifactMetadata) -> None:
    """The site monitor's reference: the candidate on the site's adaptation films (out of fold).

    Warning counts (lungs not found, unfamiliar, unstable) are the parent's rates at this size: the head
    does not change preprocessing, and the familiarity threshold keeps its quantile.
    """

    positive = CLASS_NAMES.index(POSITIVE_CLASS)
    films = [Film(predicted=CLASS_NAMES[int(np.argmax(row))], alert=bool(row[positive] >= threshold),
                  confirmed=CLASS_NAMES[int(label)]) for row, label in zip(calibrated, labels)]
    reference = reference_from_films(films, subset="site_adaptation")
    previous = load_reference(parent)
    if previous is not None and previous.n:
        share = reference.n / previous.n
        reference.warnings = {code: int(round(count * share)) for code, count in previous.warnings.items()}
        if previous.warnings_by_predicted:
            reference.warnings_by_predicted = None  # per-class warning counts of the parent do not carry over
    add_reference(out_dir, reference)


def dev_films(parent_dir: Path, *, data_root: Path | None = None,
              parts: Sequence[str] = ("train", "val", "test")) -> dict[str, list[LabelledFilm]]:
    """The parent's development films by split part; empty lists when its data or split is not reachable.

    A leave-one-source-out parent never trained on its left-out source: none of its films are returned.
    """

    parent = load_metadata(parent_dir)
    training = parent.training or {}
    root = data_root or training.get("data_root")
    split_path = parent_dir / (training.get("split_file") or "split.json")
    if not root or not Path(root).is_dir() or not split_path.is_file():
        return {part: [] for part in parts}
    split = load_split(split_path)
    samples = [sample for sample in load_dataset(root) if sample.source != training.get("leave_out_source")]
    return {part: films_from_samples(split.part(samples, part)) for part in parts}


def adapt(
    *,
    parent_dir: Path | str,
    out_dir: Path | str,
    site_films: Sequence[LabelledFilm],
    dev_train: Sequence[LabelledFilm] = (),
    dev_val: Sequence[LabelledFilm] = (),
    settings: AdaptationSettings | None = None,
    version: str | None = None,
    cache: FeatureCache | None = None,
    site_description: str = "",
    progress: Progress = _noop_progress,
) -> AdaptationResult:
    """Fit a candidate on the site's adaptation films (never pass films of the locked test part here)."""

    started = time.perf_counter()
    settings = settings or AdaptationSettings()
    cache = cache or FeatureCache(None)
    parent_dir, out_dir = Path(parent_dir), Path(out_dir)
    parent = load_metadata(parent_dir)
    predictor = Predictor.load(parent_dir)
    steps = STEPS[: STEPS.index(settings.steps) + 1]
    positive = CLASS_NAMES.index(POSITIVE_CLASS)

    def stage(name: str, low: float, high: float):
        return lambda done, total: progress(name, low + (high - low) * done / max(total, 1))

    progress("features of the site's films", 0.0)
    raw, site = raw_probabilities(predictor=predictor, films=site_films, cache=cache,
                                  progress=stage("features of the site's films", 0.0, 0.3))
    if not np.any(site.labels == positive):
        raise AdaptationError("The site's adaptation films have no COVID-19 film: the alert threshold cannot be set.")
    record: dict = {
        "parent": {"name": parent.name, "version": parent.version, "sha256": parent.sha256},
        "steps": list(steps),
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "site_data": site_description,
        "n_site_adaptation": len(site.films),
        "site_class_counts": {name: int(np.sum(site.labels == k)) for k, name in enumerate(CLASS_NAMES)},
        "site_patients": len(set(site.patients)),
        "skipped": site.skipped,
        "target_sensitivity": settings.target_sensitivity,
        "backbone": backbone_id(parent),
        "calibration": "the parent network's outputs on the site's adaptation films",
    }
    keras_model = head = None
    if "head" in steps:
        import keras

        progress("loading the network", 0.3)
        keras_model = keras.models.load_model(parent_dir / parent.keras_file, compile=False)
        try:
            initial = read_head(keras_model)
        except NoPooledHead as error:
            raise AdaptationError(f"{error} Adapt with the calibrate step only.") from None
        dev = extract_features(predictor=predictor, films=dev_train, cache=cache,
                               progress=stage("features of the development films", 0.3, 0.6))
        validation = extract_features(predictor=predictor, films=dev_val, cache=cache,
                                      progress=stage("features of the validation films", 0.6, 0.65))
        for part in (dev, validation):
            if not part.films:  # no development films reachable: the site's films alone
                part.features = np.zeros((0, site.features.shape[1]), np.float32)
        record.update({"site_weight": settings.site_weight, "l2_towards_parent_head": settings.l2,
                       "n_dev_train": len(dev.films), "n_dev_val": len(validation.films),
                       "head": ("multinomial logistic regression on standardised pooled features, L2 towards the parent's "
                                "head, Adam, 500 full-batch steps; folds start from it and take 150")})
        if "finetune" in steps:
            weights = fit_weights(dev_labels=dev.labels, site_labels=site.labels, site_weight=settings.site_weight)
            with threadpool_limits(limits=1, user_api="blas"):
                head = fit_head(features=np.concatenate([dev.features, site.features]),
                                labels=np.concatenate([dev.labels, site.labels]), weights=weights,
                                initial=initial, l2=settings.l2)
            progress("preparing fine-tuning inputs", 0.65)
            inputs = _model_inputs([*dev.films, *site.films], predictor.config)
            layers = _finetune(keras_model=keras_model, head=head, inputs=inputs,
                               labels=np.concatenate([dev.labels, site.labels]), weights=weights,
                               settings=settings, progress=progress)
            record["finetune"] = {"layers": layers, "epochs": settings.finetune_epochs,
                                  "learning_rate": settings.finetune_learning_rate, "batch_norm": "frozen"}
            progress("features of the fine-tuned backbone", 0.8)
            initial = read_head(keras_model)
            features = _keras_features(keras_model, inputs)
            dev.features, site.features = features[: len(dev.films)], features[len(dev.films):]
            if validation.films:
                validation.features = _keras_features(keras_model, _model_inputs(validation.films, predictor.config))
            record["backbone"] = None  # a new backbone: named by the exported file below
        progress("refitting the head", 0.85)
        with threadpool_limits(limits=1, user_api="blas"):  # measured 2.8 s per fit with one, 14.7 s with two
            raw, head = _fit_heads(dev=dev, site=site, initial=initial, settings=settings, progress=progress)
        keras_model.get_layer("logits").set_weights([head.kernel.astype(np.float32), head.bias.astype(np.float32)])
        record["calibration"] = (f"out-of-fold predictions of the site's adaptation films "
                                 f"({OUT_OF_FOLD_FOLDS} folds by patient)")

    progress("temperature and threshold", 0.9)
    # None: the parent's confidence; 0: the point estimate must reach the target.
    confidence = parent.threshold_confidence if settings.threshold_confidence is None else (
        settings.threshold_confidence or None)
    point = fit_operating_point(raw_probabilities=raw, labels=site.labels, positive_index=positive,
                                target_sensitivity=settings.target_sensitivity, confidence=confidence)
    record["previous"] = {"temperature": parent.temperature, "covid_threshold": parent.covid_threshold}
    record["threshold_confidence"] = confidence
    training = {key: value for key, value in (parent.training or {}).items()
                if key not in ("adaptation", "recalibrations")}
    metadata = ArtifactMetadata(
        name=parent.name, version=version or f"{parent.version}-site-{datetime.now(timezone.utc):%Y%m%d%H%M%S}",
        architecture=parent.architecture, class_names=list(parent.class_names), input_size=parent.input_size,
        recipe=dict(parent.recipe), temperature=point.temperature, covid_threshold=point.threshold,
        target_sensitivity=settings.target_sensitivity, threshold_confidence=confidence, metrics=point.metrics,
        sha256=parent.sha256, training={**training, "adaptation": record},
        cam_file=parent.cam_file, cam_sha256=parent.cam_sha256, familiarity=parent.familiarity,
    )
    _copy_parent(parent_dir, out_dir)
    save_metadata(artifact_dir=out_dir, metadata=metadata)
    if keras_model is None:
        # The network is the parent's: the same files; only the operating point changes.
        for name in (parent.model_file, parent.keras_file, parent.cam_file,
                     (parent.familiarity or {}).get("features_file"), (parent.familiarity or {}).get("stats_file")):
            if name and (parent_dir / name).is_file():
                shutil.copy2(parent_dir / name, out_dir / name)
    else:
        progress("exporting the candidate", 0.93)
        metadata.familiarity = None
        _export(keras_model=keras_model, out_dir=out_dir, metadata=metadata, parent=parent)
        metadata = load_metadata(out_dir)
        if metadata.training["adaptation"]["backbone"] is None:
            metadata.training["adaptation"]["backbone"] = metadata.sha256
            save_metadata(artifact_dir=out_dir, metadata=metadata)
        if parent.familiarity:
            progress("familiarity check", 0.97)
            _refit_familiarity(keras_model=keras_model, out_dir=out_dir,
                               train_features=np.concatenate([dev.features, site.features]),
                               train_labels=np.concatenate([dev.labels, site.labels]),
                               val_features=validation.features if len(validation.films) else site.features,
                               parent=parent)
    progress("site monitor reference", 0.99)
    _monitoring_reference(out_dir=out_dir, calibrated=apply_temperature(raw, point.temperature),
                          labels=site.labels, threshold=point.threshold, parent=parent)
    metadata = load_metadata(out_dir)
    seconds = time.perf_counter() - started
    metadata.training["adaptation"]["seconds"] = round(seconds, 2)
    save_metadata(artifact_dir=out_dir, metadata=metadata)
    progress("done", 1.0)
    return AdaptationResult(artifact_dir=out_dir, metadata=metadata, head=head, seconds=seconds,
                            skipped=site.skipped)


def split_site_films(films: Sequence[LabelledFilm], *, test_share: float = DEFAULT_TEST_SHARE
                     ) -> tuple[list[LabelledFilm], list[LabelledFilm]]:
    """(locked test part, adaptation part) by patient."""
    test = [film for film in films if site_part(film.patient, test_share=test_share) == SITE_TEST]
    return test, [film for film in films if site_part(film.patient, test_share=test_share) != SITE_TEST]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ml adapt", description=__doc__.splitlines()[0],
        epilog="example: python -m ml adapt --model ml/artifacts/production --data /data/site "
               "--out runs/site-v2 --feature-cache var/feature-cache",
    )
    add_model_and_data_arguments(parser, model_help="artifact to start from (the active version)",
                                 data_help="the site's labelled films: covid/normal/pneumonia folders, or the manifest's folder")
    parser.add_argument("--manifest", type=Path, help="CSV with columns file, label, patient (and source)")
    parser.add_argument("--out", required=True, type=Path, help="new, empty folder for the candidate artifact")
    parser.add_argument("--version", help="the candidate's version (default: parent version + timestamp)")
    parser.add_argument("--steps", choices=STEPS, default="head",
                        help="last step to run; each includes the ones before it (default: head)")
    parser.add_argument("--site-weight", type=float, default=DEFAULT_SITE_WEIGHT,
                        help="share of the head fit's weight carried by the site's films (default 0.5)")
    parser.add_argument("--target-sensitivity", type=float, default=DEFAULT_TARGET_SENSITIVITY)
    parser.add_argument("--threshold-confidence", type=float, default=None,
                        help="one-sided confidence for the sensitivity target (default: the parent's; 0: none)")
    parser.add_argument("--test-share", type=float, default=DEFAULT_TEST_SHARE,
                        help="share of the site's patients in the locked test part (default 0.5)")
    parser.add_argument("--dev-data", type=Path, help="development pool (default: the parent's data_root)")
    parser.add_argument("--feature-cache", type=Path, help="folder caching pooled features per film and backbone")
    parser.add_argument("--finetune-epochs", type=int, default=FINETUNE_EPOCHS)
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the evaluation")
    return parser


def _print_progress():
    last = {"stage": None, "tenth": -1}

    def report(stage: str, fraction: float) -> None:
        tenth = int(fraction * 10)
        if stage != last["stage"] or tenth != last["tenth"]:
            print(f"[{fraction:5.0%}] {stage}", file=sys.stderr)
            last.update(stage=stage, tenth=tenth)

    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    samples = load_dataset(args.data, args.manifest)
    if not samples:
        print(f"No labelled films under {args.data}.", file=sys.stderr)
        return 2
    test, adaptation = split_site_films(films_from_samples(samples), test_share=args.test_share)
    dev = dev_films(args.model, data_root=args.dev_data)
    cache = FeatureCache(args.feature_cache)
    settings = AdaptationSettings(steps=args.steps, site_weight=args.site_weight,
                                  target_sensitivity=args.target_sensitivity, finetune_epochs=args.finetune_epochs,
                                  threshold_confidence=args.threshold_confidence)
    try:
        result = adapt(parent_dir=args.model, out_dir=args.out, site_films=adaptation, dev_train=dev["train"],
                       dev_val=dev["val"], settings=settings, version=args.version, cache=cache,
                       site_description=f"{args.data} (test share {args.test_share})", progress=_print_progress())
    except AdaptationError as error:
        print(str(error), file=sys.stderr)
        return 2
    candidate, active = Predictor.load(args.out), Predictor.load(args.model)
    evaluation = {"site_test": compare_on_films(candidate=candidate, active=active, films=test, cache=cache,
                                                description="locked site test part", n_resamples=args.resamples)}
    if dev["test"]:
        evaluation["dev_test"] = compare_on_films(candidate=candidate, active=active, films=dev["test"], cache=cache,
                                                  description="development test split", n_resamples=args.resamples)
    rows = [row for part in evaluation.values() for row in part.pop("predictions", [])]
    write_predictions_csv(rows, args.out / "predictions.csv")
    evaluation["refusal_reasons"] = refusal_reasons(evaluation["site_test"],
                                                    target_sensitivity=args.target_sensitivity)
    (args.out / "evaluation.json").write_text(json.dumps(evaluation, indent=1, sort_keys=True) + "\n")
    print(json.dumps({"candidate": str(args.out), "version": result.metadata.version,
                      "seconds": round(result.seconds, 1), "skipped": len(result.skipped),
                      **{part: {name: {key: value for key, value in row.items() if key != "higher_is_better"}
                                for name, row in evaluation[part]["paired"].items()}
                         for part in ("site_test", "dev_test") if evaluation.get(part, {}).get("n")},
                      "refusal_reasons": evaluation["refusal_reasons"]}, indent=1))
    return 0


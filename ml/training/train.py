"""Train a classifier from a recipe and write a complete artifact folder.

    python -m ml train --recipe seed --data ../shared/data/cxr --out runs/seed --split-file runs/split.json

The data set's patient-level split is created on first use (``--split-file``
that does not exist yet) and reused afterwards, so several models can be
compared on exactly the same test patients.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ml.evaluation.datasets import (
    decode_file,
    default_data_dir,
    label_array,
    leave_one_source_out,
    load_dataset,
    load_split,
    make_patient_split,
    save_split,
)
from ml.evaluation.operating_point import classification_metrics, fit_operating_point
from ml.serving.artifact import (
    HISTORY_FILE,
    KERAS_FILE,
    MODEL_FILE,
    SPLIT_FILE,
    ArtifactMetadata,
    file_sha256,
    load_metadata,
    save_metadata,
)
from ml.serving.calibration import apply_temperature
from ml.serving.labels import CLASS_NAMES, POSITIVE_CLASS
from ml.serving.monitoring import add_reference, films_from_pixels, reference_from_films
from ml.serving.pixels import FILM_MAX_SIDE, shrink_longest_side
from ml.serving.predictor import Predictor
from ml.serving.preprocess import PreprocessConfig, preprocess, preprocess_batch
from ml.serving.segmentation import segmenter_dir
from ml.training.architectures import build_model
from ml.training.augment import augment_film, augment_geometry
from ml.training.export import add_cam, export_tflite, max_tflite_difference
from ml.training.familiarity import add_familiarity
from ml.training.keras_setup import configure_tensorflow
from ml.training.recipe import RECIPES, Recipe, recipe_for

REPO_ROOT = Path(__file__).resolve().parents[2]
LOSO_EVALUATION = "loso_evaluation"


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Per class index (every class, in order): inverse frequency, 0 for an absent class."""
    counts = np.bincount(labels, minlength=len(CLASS_NAMES)).astype(np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return {index: float(w) for index, w in enumerate(weights)}


def _make_batches(*, films, model_inputs, labels, recipe: Recipe):
    """A Keras PyDataset of (inputs, labels) that augments on the fly; defined lazily to keep Keras out of imports."""
    import keras

    batch_size, config, augment = recipe.batch_size, recipe.preprocessing, recipe.augmentation

    class AugmentedBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(recipe.seed)
            self.order = self.rng.permutation(len(labels))

        def __len__(self) -> int:
            return int(np.ceil(len(labels) / batch_size))

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(len(labels))

        def __getitem__(self, index: int):
            picked = self.order[index * batch_size:(index + 1) * batch_size]
            batch = np.empty((len(picked), config.input_size, config.input_size, 1), dtype=np.float32)
            for row, sample_index in enumerate(picked):
                if augment.film:
                    film = augment_film(films[sample_index], self.rng)
                    model_input = preprocess(film, config)
                else:
                    model_input = model_inputs[sample_index]
                batch[row] = augment_geometry(model_input, self.rng, augment)
            return batch, labels[picked]

    return AugmentedBatches()


@dataclass
class TrainingData:
    """Decoded films (longest side at most FILM_MAX_SIDE) and their class indices, per part of the split."""

    train_films: list[np.ndarray]
    train_labels: np.ndarray
    val_films: list[np.ndarray]
    val_labels: np.ndarray
    test_films: list[np.ndarray] = field(default_factory=list)
    test_labels: np.ndarray | None = None


@dataclass
class TrainResult:
    artifact_dir: Path
    val_metrics: dict
    test_metrics: dict | None
    epochs_run: int


def train_model(
    *,
    recipe: Recipe,
    data: TrainingData,
    out_dir: Path,
    name: str,
    version: str,
    training_info: dict | None = None,
    split_data: dict | None = None,
    threads: int = 2,
    verbose: int = 1,
    familiarity: bool = False,
    monitoring: bool = False,
) -> TrainResult:
    """Fit ``recipe`` on ``data``, calibrate on validation, export TFLite and write the artifact folder.

    ``familiarity`` also fits ``ml.training.familiarity`` (the ``unfamiliar``
    warning) on the training films and thresholds it on the validation films.
    ``monitoring`` then stores the site monitor's reference
    (``ml.serving.monitoring``): what the served model does on the validation films.
    """
    configure_tensorflow(threads=threads, seed=recipe.seed)
    import keras

    out_dir = Path(out_dir)
    config = recipe.preprocessing
    train_labels = np.asarray(data.train_labels, dtype=np.int64)
    val_labels = np.asarray(data.val_labels, dtype=np.int64)
    started = time.time()
    train_inputs = None if recipe.augmentation.film else preprocess_batch(data.train_films, config)
    val_inputs = preprocess_batch(data.val_films, config)

    model = build_model(architecture=recipe.architecture, input_size=recipe.input_size)
    model.compile(optimizer=keras.optimizers.Adam(recipe.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    batches = _make_batches(films=data.train_films, model_inputs=train_inputs, labels=train_labels, recipe=recipe)
    patience = recipe.patience
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=patience, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", mode="min", factor=0.5, patience=max(2, patience // 2), min_lr=1e-5),
    ]
    history = model.fit(
        batches,
        validation_data=(val_inputs, val_labels),
        epochs=recipe.epochs,
        callbacks=callbacks,
        verbose=verbose,
        class_weight=class_weights(train_labels),
    )
    history_data = {key: [float(v) for v in values] for key, values in history.history.items()}
    epochs_run = len(history_data.get("loss", []))
    info = {
        "epochs": epochs_run,
        "class_weights": class_weights(train_labels),
        "n_train": int(len(train_labels)),
        **(training_info or {}),
    }
    test_inputs = preprocess_batch(data.test_films, config) if len(data.test_films) else None
    val_metrics, test_metrics = write_artifact(
        model=model, recipe=recipe, out_dir=out_dir, name=name, version=version,
        val_inputs=val_inputs, val_labels=val_labels, history=history_data, info=info, split_data=split_data,
        started=started, test_inputs=test_inputs, test_labels=data.test_labels,
    )
    if familiarity:
        add_familiarity(
            out_dir,
            train_inputs=train_inputs if train_inputs is not None else preprocess_batch(data.train_films, config),
            train_labels=train_labels,
            val_inputs=val_inputs,
            keras_model=model,
        )
    if monitoring:
        predictor = Predictor.load(out_dir)
        add_reference(out_dir, reference_from_films(
            films_from_pixels(predictor, data.val_films, [predictor.class_names[label] for label in val_labels]),
            class_names=predictor.class_names,
        ))
    return TrainResult(artifact_dir=out_dir, val_metrics=val_metrics, test_metrics=test_metrics, epochs_run=epochs_run)


def write_artifact(
    *,
    model,
    recipe: Recipe,
    out_dir: Path,
    name: str,
    version: str,
    val_inputs: np.ndarray,
    val_labels: np.ndarray,
    history: dict,
    info: dict,
    split_data: dict | None = None,
    test_inputs: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    started: float | None = None,
) -> tuple[dict, dict | None]:
    """Calibrate a fitted Keras model on validation, export it and write the artifact folder.

    Returns the validation metrics and, when test inputs are given, the test metrics.
    """
    import keras

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    val_labels = np.asarray(val_labels, dtype=np.int64)
    positive = CLASS_NAMES.index(POSITIVE_CLASS)
    val_raw = model.predict(val_inputs, verbose=0, batch_size=64)
    operating_point = fit_operating_point(
        raw_probabilities=val_raw, labels=val_labels, positive_index=positive,
        target_sensitivity=recipe.target_sensitivity, confidence=recipe.threshold_confidence,
    )
    temperature, threshold = operating_point.temperature, operating_point.threshold
    val_metrics = operating_point.metrics

    keras_path = out_dir / KERAS_FILE
    # Save an uncompiled copy: the Adam state would triple the file for nothing (serving never trains).
    serving_model = keras.models.clone_model(model)
    serving_model.set_weights(model.get_weights())
    serving_model.save(keras_path)
    tflite_path = export_tflite(keras_model=model, path=out_dir / MODEL_FILE)
    check_inputs = val_inputs[: min(8, len(val_inputs))]
    tflite_difference = max_tflite_difference(keras_model=model, tflite_path=tflite_path, inputs=check_inputs)
    if not tflite_difference <= 1e-4:  # also catches NaN
        raise RuntimeError(f"TFLite differs from Keras by {tflite_difference:.2e}")

    test_metrics = None
    if test_inputs is not None and test_labels is not None and len(test_inputs):
        test_raw = model.predict(test_inputs, verbose=0, batch_size=64)
        test_metrics = classification_metrics(
            probabilities=apply_temperature(test_raw, temperature),
            labels=np.asarray(test_labels, dtype=np.int64),
            positive_index=positive,
            threshold=threshold,
        )
        (out_dir / "test_metrics.json").write_text(json.dumps(test_metrics, indent=2) + "\n")

    (out_dir / HISTORY_FILE).write_text(json.dumps(history, indent=1) + "\n")
    if split_data is not None:
        (out_dir / SPLIT_FILE).write_text(json.dumps(split_data, indent=1) + "\n")
    info = {
        **info,
        "history_file": HISTORY_FILE,
        "split_file": SPLIT_FILE if split_data is not None else None,
        "n_val": int(len(val_labels)),
        "tflite_max_abs_difference": tflite_difference,
        "parameters": int(model.count_params()),
    }
    if started is not None:
        info["seconds"] = round(time.time() - started, 1)
    metadata = ArtifactMetadata(
        name=name,
        version=version,
        architecture=recipe.architecture,
        class_names=list(CLASS_NAMES),
        input_size=recipe.input_size,
        temperature=temperature,
        covid_threshold=threshold,
        target_sensitivity=recipe.target_sensitivity,
        threshold_confidence=recipe.threshold_confidence,
        metrics=val_metrics,
        sha256=file_sha256(tflite_path),
        training=info,
        recipe=recipe.to_dict(),
    )
    save_metadata(artifact_dir=out_dir, metadata=metadata)
    add_cam(out_dir, keras_model=model, check_inputs=check_inputs)
    _copy_lung_segmenter(config=recipe.preprocessing, out_dir=out_dir)
    return val_metrics, test_metrics


def _copy_lung_segmenter(*, config: PreprocessConfig, out_dir: Path) -> None:
    """Keep a copy of the segmenter with the artifact so it is self-contained."""
    if not config.lung_segmenter:
        return

    source = segmenter_dir(config.lung_segmenter)
    target = out_dir / config.lung_segmenter
    if source.resolve() != target.resolve():
        shutil.copytree(source, target, dirs_exist_ok=True)


def _stratified_indices(labels: np.ndarray, *, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.nonzero(labels == label)[0])
        count = max(1, int(round(len(members) * val_fraction))) if len(members) > 1 else 0
        val.extend(members[:count])
        train.extend(members[count:])
    return np.sort(np.array(train, dtype=int)), np.sort(np.array(val, dtype=int))


def train_from_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    recipe: Recipe,
    out_dir: Path,
    name: str,
    version: str,
    familiarity: bool = False,
    monitoring: bool = False,
) -> Path:
    """Train on in-memory images (N, H, W) in [0, 1]; 20 % (stratified) is held out for validation.

    Meant for small synthetic data (the portal's end-to-end test); the input
    size never exceeds the images' own size.
    """
    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    size = min(recipe.input_size, images.shape[1], images.shape[2])
    recipe = replace(recipe, preprocessing=replace(recipe.preprocessing, input_size=size))
    train_index, val_index = _stratified_indices(labels, val_fraction=0.2, seed=recipe.seed)
    data = TrainingData(
        train_films=[images[i] for i in train_index], train_labels=labels[train_index],
        val_films=[images[i] for i in val_index], val_labels=labels[val_index],
    )
    result = train_model(
        recipe=recipe,
        data=data,
        out_dir=Path(out_dir),
        name=name,
        version=version,
        training_info={"data_root": None, "source": "arrays"},
        split_data={"seed": recipe.seed, "train": train_index.tolist(), "val": val_index.tolist(), "test": []},
        verbose=0,
        familiarity=familiarity,
        monitoring=monitoring,
    )
    return result.artifact_dir


def decode_film(sample, *, max_side: int = FILM_MAX_SIDE) -> np.ndarray:
    """One sample's film as training sees it: decoded (through ml.serving.imaging), longest side at most ``max_side``."""

    return shrink_longest_side(decode_file(sample.path), max_side=max_side)


def load_films(samples, *, cache_dir: Path | None = None, max_side: int = FILM_MAX_SIDE) -> list[np.ndarray]:
    """Decode every sample once (through ml.serving.imaging) and cache the shrunken films.

    Stored as float32: float16 would shift some pixels across histogram-equalisation
    bins, so training inputs would differ slightly from what serving computes.
    """
    from tqdm import tqdm

    cache_path = None
    if cache_dir is not None:
        key = "\n".join(str(s.path) for s in samples) + f"|{max_side}|float32"
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        cache_path = Path(cache_dir) / f"films_{digest}.pkl"
        if cache_path.is_file():
            with open(cache_path, "rb") as handle:
                return pickle.load(handle)
    films = [decode_film(s, max_side=max_side) for s in tqdm(samples, desc="decode", file=sys.stderr)]
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        # Write aside and rename: two runs started together must not read each other's half-written cache.
        partial = cache_path.with_name(f"{cache_path.name}.{os.getpid()}.partial")
        with open(partial, "wb") as handle:
            pickle.dump([np.asarray(f, dtype=np.float32) for f in films], handle)
        os.replace(partial, cache_path)
    return films


def collect_loso(*, run_dirs: list[Path], path: Path) -> dict:
    """Gather leave-one-source-out runs (folders from ``--leave-out-source``) into loso.json.

    A run folder holding ``loso_evaluation/metrics.json`` (``python -m ml evaluate
    --model RUN --split-file RUN/split.json --subset loso --out RUN/loso_evaluation``)
    contributes those numbers; otherwise its training-time test_metrics.json.

    Entries are keyed "<architecture>/<left-out source>"; an existing file is
    updated, so seed and production runs can be added separately.
    """

    summary = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        metadata = load_metadata(run_dir)
        split = json.loads((run_dir / SPLIT_FILE).read_text())
        source = metadata.training["leave_out_source"]
        evaluation = run_dir / LOSO_EVALUATION / "metrics.json"
        if evaluation.is_file():
            # ml.evaluation.evaluate's numbers (TFLite, the artifact's current threshold) win over training time's.
            metrics = json.loads(evaluation.read_text())
            numbers = {
                "n": metrics["n"],
                "covid_auc": metrics["per_class"][POSITIVE_CLASS]["auc"],
                "accuracy": metrics["accuracy"],
                "covid_sensitivity_at_threshold": metrics["threshold"]["sensitivity"],
                "covid_specificity_at_threshold": metrics["threshold"]["specificity"],
                "macro_auc": metrics["macro_auc"],
                "measured_by": f"python -m ml evaluate ({LOSO_EVALUATION}/metrics.json)",
            }
        else:
            test = json.loads((run_dir / "test_metrics.json").read_text())
            numbers = {
                "n": test["n"],
                "covid_auc": test["covid_auc"],
                "accuracy": test["accuracy"],
                "covid_sensitivity_at_threshold": test["covid_sensitivity"],
                "covid_specificity_at_threshold": test["covid_specificity"],
                "macro_auc": test["macro_auc"],
                "measured_by": "python -m ml train (Keras, threshold at training time)",
            }
        summary["runs"][f"{metadata.architecture}/{source}"] = {
            "left_out_source": source,
            "architecture": metadata.architecture,
            "name": metadata.name,
            "input_size": metadata.input_size,
            "preprocessing": metadata.preprocessing,
            **numbers,
            "covid_threshold": metadata.covid_threshold,
            "test_set": split.get("notes", {}).get("loso_test"),
            "n_train": metadata.training["n_train"],
            "epochs": metadata.training["epochs"],
        }
    summary["note"] = (
        "Each run trains without the left-out source (train/val = the shared patient-level split minus that "
        "source) and tests on every image of it. cxnet is all COVID-19, so its test set adds the held-out "
        "test-split non-COVID images of the other sources; nih has no COVID-19, so its test set adds the "
        "test-split COVID-19 images of the other sources. Thresholds and temperatures come from the run's own "
        "validation set."
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return summary


def training_parts(*, samples, split, leave_out_source: str | None = None):
    """Train, validation and test samples; with ``leave_out_source``, that run's parts (noted in the split)."""

    if not leave_out_source:
        return tuple(split.part(samples, part) for part in ("train", "val", "test"))
    loso = leave_one_source_out(samples=samples, split=split, source=leave_out_source)
    split.notes["leave_out_source"] = leave_out_source
    split.notes["loso_test"] = loso.description
    return loso.train, loso.val, loso.test


EXAMPLE = """example:
    python -m ml train --recipe production --split-file ml/artifacts/dev_split.json \\
        --data ../shared/data/cxr --manifest ../shared/data/cxr/manifest.csv --out runs/my-model
    python -m ml train --recipe production --input-size 192 --split-file ml/artifacts/dev_split.json \\
        --data ../shared/data/cxr --out runs/res192       # one field changed
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ml train", description=__doc__.splitlines()[0], epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="production",
                        help="the recipe to start from (ml/training/recipe.py); the flags below change single fields")
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--manifest", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--collect-loso", type=Path, nargs="+", default=None,
                        help="no training: gather these --leave-out-source run folders into OUT/loso.json")
    parser.add_argument("--split-file", type=Path, default=None,
                        help="the patient-level split; made (with the recipe's seed) and saved here when missing")
    parser.add_argument("--leave-out-source", default=None)
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--target-sensitivity", type=float, default=None)
    parser.add_argument("--threshold-confidence", type=float, default=None,
                        help="the COVID-19 threshold must reach the target sensitivity at this one-sided confidence "
                             "(Clopper-Pearson lower bound on validation); 0 uses the point estimate")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("CXR_TF_THREADS", "2")))
    parser.add_argument("--name", default=None)
    parser.add_argument("--version", default="1")
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "runs" / "cache")
    args = parser.parse_args(argv)
    if args.collect_loso:
        summary = collect_loso(run_dirs=args.collect_loso, path=args.out / "loso.json")
        print(json.dumps(summary, indent=1))
        return 0
    changes = {field: getattr(args, field) for field in ("input_size", "epochs", "patience", "seed", "batch_size",
                                                          "learning_rate", "target_sensitivity")
               if getattr(args, field) is not None}
    if args.threshold_confidence is not None:
        changes["threshold_confidence"] = args.threshold_confidence or None
    recipe = recipe_for(args.recipe, **changes)

    samples = load_dataset(args.data, args.manifest)
    if not samples:
        parser.error(f"no labelled images under {args.data}")
    if args.split_file is not None and args.split_file.is_file():
        split = load_split(args.split_file)
    else:
        split = make_patient_split(samples=samples, seed=recipe.seed)
        if args.split_file is not None:
            save_split(split, args.split_file)
    train_samples, val_samples, test_samples = training_parts(
        samples=samples, split=split, leave_out_source=args.leave_out_source)
    print(f"train {len(train_samples)}  val {len(val_samples)}  test {len(test_samples)}", file=sys.stderr)

    films = load_films(samples, cache_dir=args.cache_dir)
    by_key = {s.key: film for s, film in zip(samples, films)}
    data = TrainingData(
        train_films=[by_key[s.key] for s in train_samples], train_labels=label_array(train_samples),
        val_films=[by_key[s.key] for s in val_samples], val_labels=label_array(val_samples),
        test_films=[by_key[s.key] for s in test_samples], test_labels=label_array(test_samples),
    )
    result = train_model(
        recipe=recipe,
        data=data,
        out_dir=args.out,
        name=args.name or f"cxr-{recipe.architecture}",
        version=args.version,
        threads=args.threads,
        training_info={
            "data_root": str(args.data),
            "manifest": str(args.manifest) if args.manifest else None,
            "leave_out_source": args.leave_out_source,
            "test_sources": sorted({s.source for s in test_samples}),
        },
        split_data=asdict(split),
        familiarity=True,
        monitoring=True,
    )
    print(json.dumps({"val": result.val_metrics, "test": result.test_metrics}, indent=1))
    return 0

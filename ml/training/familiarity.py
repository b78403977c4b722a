"""Fit the familiarity check (the ``unfamiliar`` warning, ml.serving.familiarity) and store it in an artifact.

    python -m ml familiarity --model ARTIFACT [--data ROOT] [--quantile 0.95]

adds ``features.tflite`` (the features for serving and, for a pooling + Dense
head, the class activation maps, so the heatmap needs no pass of its own) and
``familiarity.npz`` (the fitted statistics) to an artifact, fitted on its
split.json's training films and thresholded on its validation films;
model.tflite is untouched. With ``--shifts`` it measures the check instead
(ml.evaluation.familiarity).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ml.evaluation.datasets import EvaluationError, default_data_dir, select_samples
from ml.evaluation.familiarity import shift_table
from ml.serving.artifact import file_sha256, load_metadata, save_metadata
from ml.serving.command_line import SPLIT_DATA_ROOT_HELP, add_model_and_data_arguments
from ml.serving.familiarity import (
    DEFAULT_QUANTILE,
    FEATURES_FILE,
    STATS_FILE,
    FamiliarityModel,
    features_model,
    split_outputs,
)
from ml.serving.imaging import decode_path
from ml.serving.interpreter import make_interpreter, run_interpreter_outputs
from ml.serving.predictor import Predictor
from ml.serving.preprocess import preprocess
from ml.training.export import check_class_maps, export_tflite


def ledoit_wolf_covariance(centered: np.ndarray) -> tuple[np.ndarray, float]:
    """Covariance of centred rows (n, d) shrunk towards a scaled identity, and the shrinkage used.

    Ledoit and Wolf (2004): the shrinkage minimising the expected squared
    error, estimated from the data itself. With more features than films the
    sample covariance is singular; the shrunk one never is.
    """
    n, d = centered.shape
    sample = centered.T @ centered / n
    mu = float(np.trace(sample)) / d
    # Squared Frobenius norms, divided by d as in the paper.
    delta = float(np.sum((sample - mu * np.eye(d)) ** 2)) / d
    beta_sum = float(np.sum(np.sum(centered**2, axis=1) ** 2)) - n * float(np.sum(sample**2))
    beta = min(beta_sum / (n * n * d), delta)
    shrinkage = 0.0 if delta <= 0 else beta / delta
    return shrinkage * mu * np.eye(d) + (1.0 - shrinkage) * sample, shrinkage


def fit_familiarity(
    *,
    train_features: np.ndarray,
    train_labels: Sequence[int] | np.ndarray,
    val_features: np.ndarray,
    quantile: float = DEFAULT_QUANTILE,
) -> FamiliarityModel:
    """Class-conditional Gaussians with one shared covariance, thresholded on validation.

    The threshold comes from validation films, not training films: the
    network has fitted its training films, which therefore score lower than
    new films of the same kind would.
    """
    if not 0.5 <= quantile < 1.0:
        raise ValueError("quantile must be in [0.5, 1)")
    train_features = np.asarray(train_features, dtype=np.float64)
    labels = np.asarray(train_labels, dtype=np.int64)
    if train_features.ndim != 2 or len(train_features) != len(labels) or len(train_features) < 2:
        raise ValueError("need at least two training feature rows, one label each")
    center = train_features.mean(axis=0)
    scale = train_features.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    standard = (train_features - center) / scale
    classes = np.unique(labels)
    class_means = np.stack([standard[labels == k].mean(axis=0) for k in classes])
    within = standard - class_means[np.searchsorted(classes, labels)]
    covariance, shrinkage = ledoit_wolf_covariance(within)
    precision = np.linalg.inv(covariance)
    partial = FamiliarityModel(
        center=center, scale=scale, class_means=class_means, precision=precision,
        threshold=np.inf, quantile=quantile, shrinkage=shrinkage,
    )
    threshold = float(np.quantile(partial.scores(val_features), quantile))
    return FamiliarityModel(
        center=center, scale=scale, class_means=class_means, precision=precision,
        threshold=threshold, quantile=quantile, shrinkage=shrinkage,
    )


def add_familiarity(
    artifact_dir: Path | str,
    *,
    train_inputs: np.ndarray,
    train_labels: Sequence[int] | np.ndarray,
    val_inputs: np.ndarray,
    quantile: float = DEFAULT_QUANTILE,
    keras_model=None,
) -> FamiliarityModel:
    """Export features.tflite, fit on preprocessed training inputs (N, S, S, 1), store both in the artifact.

    The exported features must equal Keras's within 1e-4 (relative to their size).
    """
    import keras


    artifact_dir = Path(artifact_dir)
    metadata = load_metadata(artifact_dir)
    if keras_model is None:
        keras_model = keras.models.load_model(artifact_dir / metadata.keras_file, compile=False)
    model = features_model(keras_model)
    path = export_tflite(keras_model=model, path=artifact_dir / FEATURES_FILE)
    interpreter = make_interpreter(path)

    def features_of(inputs: np.ndarray) -> np.ndarray:
        return np.stack([split_outputs(run_interpreter_outputs(interpreter, image))[0] for image in inputs])

    check = np.asarray(val_inputs[:4], dtype=np.float32)
    expected = model.predict(check, verbose=0)
    expected = expected[0] if isinstance(expected, list) else expected
    difference = float(np.max(np.abs(features_of(check) - expected)))
    if not difference <= 1e-4 * max(1.0, float(np.max(np.abs(expected)))):
        path.unlink()
        raise RuntimeError(f"features.tflite differs from Keras by {difference:.2e}")
    class_maps = len(model.outputs) == 2  # features_model adds the class maps for a pooling + Dense head
    if class_maps:
        difference = check_class_maps(
            class_maps_of=lambda image: split_outputs(run_interpreter_outputs(interpreter, image))[1],
            keras_model=keras_model, inputs=check[:3], n_classes=len(metadata.class_names),
        )
        if not difference <= 1e-4:
            path.unlink()
            raise RuntimeError(f"features.tflite heatmap differs from Grad-CAM by {difference:.2e}")
    familiarity = fit_familiarity(
        train_features=features_of(train_inputs),
        train_labels=train_labels,
        val_features=features_of(val_inputs),
        quantile=quantile,
    )
    stats_path = artifact_dir / STATS_FILE
    stats_path.write_bytes(familiarity.to_bytes())
    metadata.familiarity = {
        "features_file": FEATURES_FILE,
        "features_sha256": file_sha256(path),
        "stats_file": STATS_FILE,
        "stats_sha256": file_sha256(stats_path),
        "threshold": familiarity.threshold,
        "quantile": quantile,
        # features.tflite also gives the class activation maps: the heatmap needs no pass of its own.
        "class_maps": class_maps,
        "shrinkage": familiarity.shrinkage,
        "n_train": int(len(train_inputs)),
        "n_val": int(len(val_inputs)),
    }
    save_metadata(artifact_dir=artifact_dir, metadata=metadata)
    return familiarity


def _model_inputs(samples, config, *, progress: bool, desc: str) -> np.ndarray:

    return np.stack([
        preprocess(decode_path(sample.path).pixels, config)
        for sample in tqdm(samples, desc=desc, unit="image", disable=not progress)
    ])


EXAMPLE = """example:
    python -m ml familiarity --model runs/my-model
    python -m ml familiarity --model ml/artifacts/production --shifts --subset test --out runs/shifts.json
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ml familiarity", description=__doc__.splitlines()[0], epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_and_data_arguments(parser, model_help="artifact folder with model.keras and split.json",
                                 data_help=SPLIT_DATA_ROOT_HELP, data_required=False)
    parser.add_argument("--quantile", type=float, default=DEFAULT_QUANTILE,
                        help="share of validation films to leave unflagged")
    parser.add_argument("--shifts", action="store_true",
                        help="no fit: measure the artifact's check under SHIFTS on --subset of its split")
    parser.add_argument("--subset", default="test", choices=("val", "test", "loso"))
    parser.add_argument("--out", type=Path, default=None, help="with --shifts: write the table here (JSON)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    data = args.data or default_data_dir()
    split_file = args.model / "split.json"
    if not split_file.is_file():
        print(f"error: {split_file} not found: the check needs the artifact's own training and validation films",
              file=sys.stderr)
        return 2
    metadata = load_metadata(args.model)
    config = metadata.preprocess_config
    progress = not args.quiet
    try:
        if args.shifts:
            return _print_shifts(args=args, data=data, split_file=split_file, progress=progress)
        train = select_samples(data=data, manifest=None, split_file=split_file, subset="train")
        val = select_samples(data=data, manifest=None, split_file=split_file, subset="val")
    except EvaluationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    familiarity = add_familiarity(
        args.model,
        train_inputs=_model_inputs(train, config, progress=progress, desc="training films"),
        train_labels=[metadata.class_names.index(sample.label) for sample in train],
        val_inputs=_model_inputs(val, config, progress=progress, desc="validation films"),
        quantile=args.quantile,
    )
    print(
        f"{args.model}: fitted on {len(train)} training films, threshold {familiarity.threshold:.1f} "
        f"(the {args.quantile:.0%} quantile of {len(val)} validation films), shrinkage {familiarity.shrinkage:.3f}"
    )
    return 0


def _print_shifts(*, args, data: Path, split_file: Path, progress: bool) -> int:

    predictor = Predictor.load(args.model)
    if predictor.metadata.familiarity is None:
        print(f"error: {args.model} has no familiarity check (run python -m ml familiarity --model it first)",
              file=sys.stderr)
        return 2
    samples = select_samples(data=data, manifest=None, split_file=split_file, subset=args.subset)
    table = shift_table(
        predictor=predictor,
        films=[decode_path(sample.path).pixels for sample in samples],
        labels=[predictor.class_names.index(sample.label) for sample in samples],
        progress=progress,
    )
    print(f"{predictor.metadata.name} {predictor.metadata.version}, {args.subset} films: {len(samples)}")
    print("| change | flagged unfamiliar | lungs not found | median score | accuracy | same class |")
    print("|---|---|---|---|---|---|")
    for row in table.values():
        print(f"| {row['description']} | {row['unfamiliar']:.1%} | {row['lungs_not_found']:.1%} | "
              f"{row['median_score']:.0f} | {row['accuracy']:.3f} | {row['same_class']:.1%} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": f"{predictor.metadata.name} {predictor.metadata.version}",
                                  "subset": args.subset, "shifts": table}, indent=2) + "\n")
    return 0

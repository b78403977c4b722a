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

    python -m ml.familiarity --model ARTIFACT [--data ROOT] [--quantile 0.95]

adds ``features.tflite`` (the features for serving and, for a pooling + Dense
head, the class activation maps, so the heatmap needs no pass of its own) and
``familiarity.npz`` (the fitted statistics) to an artifact, fitted on its
split.json's training films and thresholded on its validation films;
model.tflite is untouched.

    python -m ml.familiarity --model ARTIFACT --shifts [--subset test] --out FILE.json

measures what the check does under ``SHIFTS``: the harmless changes of
``ml.stability`` (which it should rarely flag) and changes that make a film
unlike the development pool (a wrong orientation, inverted grey scale, heavy
compression, noise or blur), on the artifact's test films.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FEATURES_FILE = "features.tflite"
STATS_FILE = "familiarity.npz"
UNFAMILIAR = "unfamiliar"
DEFAULT_QUANTILE = 0.95


def features_model(keras_model):
    """A Keras model giving the spatial mean of ``gradcam_features`` (what the classifier head reads).

    For a pooling + Dense head it also gives every class's activation map
    (``ml.gradcam.cam_model``), so that one pass of the backbone serves both
    the familiarity check and the heatmap.
    """
    import keras

    from ml.architectures import GRADCAM_LAYER
    from ml.gradcam import cam_model

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
    from ml import metrics

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

    from ml.artifact import file_sha256, load_metadata, save_metadata
    from ml.export import check_class_maps, export_tflite, make_interpreter, run_interpreter_outputs

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


def _blurred(film: np.ndarray, *, radius: float = 3.0) -> np.ndarray:
    from PIL import Image, ImageFilter

    # Pillow blurs 8-bit images only; the development films are 8-bit anyway.
    levels = Image.fromarray(np.round(np.clip(film, 0.0, 1.0) * 255.0).astype(np.uint8))
    return np.asarray(levels.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32) / 255.0


def _noisy(film: np.ndarray, *, sd: float = 0.08) -> np.ndarray:
    # Seeded by the film's size: the same film always gets the same noise.
    rng = np.random.default_rng(film.size)
    return np.clip(film + rng.normal(0.0, sd, film.shape), 0.0, 1.0).astype(np.float32)


def shifts():
    """Changes to a film, each made at training resolution: first the harmless ones, then real shifts."""
    from functools import partial

    from ml.stability import PERTURBATIONS, Perturbation, jpeg_reencoded

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
    from tqdm import tqdm

    from ml.preprocess import FILM_MAX_SIDE, LUNGS_NOT_FOUND, shrink_longest_side

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


def _model_inputs(samples, config, *, progress: bool, desc: str) -> np.ndarray:
    from tqdm import tqdm

    from ml.imaging import decode_path
    from ml.preprocess import preprocess

    return np.stack([
        preprocess(decode_path(sample.path).pixels, config)
        for sample in tqdm(samples, desc=desc, unit="image", disable=not progress)
    ])


def main(argv: Sequence[str] | None = None) -> int:
    from ml.artifact import load_metadata
    from ml.datasets import default_data_dir
    from ml.evaluate import EvaluationError, select_samples
    from ml.preprocess import PreprocessConfig

    parser = argparse.ArgumentParser(prog="python -m ml.familiarity", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="artifact folder with model.keras and split.json")
    parser.add_argument("--data", type=Path, default=None, help="the data root its split.json was made from")
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
    config = PreprocessConfig.from_dict(metadata.preprocessing)
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
    import json

    from ml.evaluate import select_samples
    from ml.imaging import decode_path
    from ml.inference import Predictor

    predictor = Predictor.load(args.model)
    if predictor.metadata.familiarity is None:
        print(f"error: {args.model} has no familiarity check (run python -m ml.familiarity --model it first)",
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


if __name__ == "__main__":
    sys.exit(main())

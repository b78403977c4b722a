"""Refit a model's temperature and COVID-19 alert threshold on labelled local data.

    python -m ml recalibrate --model ARTIFACT --data ROOT [--manifest CSV]
        [--split-file SPLIT --subset val] [--target-sensitivity 0.95] [--threshold-confidence 0.95]
        [--keep-temperature] [--dry-run]

A hospital that adopts a model should check its operating point on its own
films: probabilities calibrated on the development pool are not calibrated on
another scanner. This refits temperature scaling (minimum NLL) and chooses the
highest threshold whose sensitivity on that data reaches the target, at the
given one-sided confidence. The network and model.tflite are untouched (the
SHA-256 stays), so the artifact's name and version stay too; metadata.json
records what was refitted, on what data, and the values it replaced. The
site monitor's reference (``ml.serving.monitoring``) is rebuilt on the same films at
the new operating point: alerts counted at the old threshold no longer
describe the model that is served. Give the result a new ``--version`` and
register it as a new model version, so that every prediction keeps pointing
at the operating point it was made with (the portal refuses an already
registered name and version whose temperature or threshold changed).

Never recalibrate on the data you will report test results on.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from ml.evaluation.datasets import EvaluationError, select_samples
from ml.evaluation.operating_point import fit_operating_point, sensitivity_lower_bound
from ml.serving.artifact import load_metadata, save_metadata
from ml.serving.command_line import add_model_and_data_arguments
from ml.serving.imaging import ImageDecodeError, decode_path
from ml.serving.labels import POSITIVE_CLASS
from ml.serving.monitoring import add_reference, films_from_samples, reference_from_films
from ml.serving.predictor import Predictor


class RecalibrationError(Exception):
    """Bad input (no images, no positives); the message is meant for the user."""


def recalibrate(
    *,
    artifact_dir: Path | str,
    raw_probabilities: np.ndarray,
    labels: np.ndarray,
    data_description: str,
    target_sensitivity: float = 0.95,
    threshold_confidence: float | None = 0.95,
    keep_temperature: bool = False,
    version: str | None = None,
    dry_run: bool = False,
) -> dict:
    """Refit on raw (uncalibrated) probabilities and update the artifact's metadata.json.

    Returns the record stored under ``training["recalibrations"]``.
    """

    artifact_dir = Path(artifact_dir)
    metadata = load_metadata(artifact_dir)
    labels = np.asarray(labels, dtype=int)
    positive = metadata.class_names.index(POSITIVE_CLASS)
    positives = int((labels == positive).sum())
    if positives == 0:
        raise RecalibrationError("The data has no COVID-19 images: the alert threshold cannot be chosen.")
    operating_point = fit_operating_point(
        raw_probabilities=raw_probabilities, labels=labels, positive_index=positive,
        target_sensitivity=target_sensitivity, confidence=threshold_confidence,
        temperature=metadata.temperature if keep_temperature else None,
    )
    temperature, threshold, fitted = operating_point.temperature, operating_point.threshold, operating_point.metrics
    detected = int(round(fitted["covid_sensitivity"] * positives))
    record = {
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": data_description,
        "n": int(len(labels)),
        "positives": positives,
        "target_sensitivity": target_sensitivity,
        "threshold_confidence": threshold_confidence,
        "sensitivity_lower_bound": (
            sensitivity_lower_bound(detected, positives, confidence=threshold_confidence)
            if threshold_confidence else None
        ),
        "previous": {"version": metadata.version, "temperature": metadata.temperature, "covid_threshold": metadata.covid_threshold,
                     "target_sensitivity": metadata.target_sensitivity,
                     "threshold_confidence": metadata.threshold_confidence},
        "temperature": temperature,
        "covid_threshold": threshold,
        "metrics": fitted,
    }
    if version:
        record["version"] = version
    if not dry_run:
        metadata.version = version or metadata.version
        metadata.temperature = temperature
        metadata.covid_threshold = threshold
        metadata.target_sensitivity = target_sensitivity
        metadata.threshold_confidence = threshold_confidence
        metadata.metrics = fitted
        metadata.training.setdefault("recalibrations", []).append(record)
        save_metadata(artifact_dir=artifact_dir, metadata=metadata)
    return record


def _raw_probabilities(*, artifact_dir: Path, samples, progress: bool) -> tuple[np.ndarray, np.ndarray, list]:
    from tqdm import tqdm


    predictor = Predictor.load(artifact_dir)
    raw, labels, skipped = [], [], []
    for sample in tqdm(samples, desc="predicting", unit="image", disable=not progress, file=sys.stderr):
        try:
            pixels = decode_path(sample.path).pixels
        except (ImageDecodeError, OSError) as error:
            skipped.append({"file": sample.key, "reason": str(error)})
            continue
        result = predictor.predict_one(pixels)
        raw.append([result.raw_probabilities[name] for name in predictor.class_names])
        labels.append(list(predictor.class_names).index(sample.label))
    return np.asarray(raw, dtype=np.float64), np.asarray(labels, dtype=int), skipped


def _refresh_monitoring_reference(*, artifact_dir: Path, samples, description: str, progress: bool) -> dict:
    """Replace the site monitor's reference with these films, run as the worker runs them at the new operating point.

    The old reference counted alerts at the old threshold, so the monitor would compare the site with a model
    that is no longer served. The films the operating point was fitted on are its new validation films.
    """

    predictor = Predictor.load(artifact_dir)
    reference = reference_from_films(
        films_from_samples(predictor, samples, progress=progress, desc="monitor reference"),
        class_names=predictor.class_names, subset="recalibration",
    )
    add_reference(artifact_dir, reference)
    return {"n": reference.n, "data": description}


EXAMPLE = """example:
    python -m ml recalibrate --model runs/my-model --version 1.1 --data SITE_ROOT --manifest SITE_ROOT/manifest.csv
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ml recalibrate", description=__doc__.splitlines()[0], epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_and_data_arguments(parser, model_help="artifact folder to update")
    parser.add_argument("--manifest", type=Path, default=None)
    parser.add_argument("--split-file", type=Path, default=None)
    parser.add_argument("--subset", default="val", choices=("train", "val", "test"))
    parser.add_argument("--target-sensitivity", type=float, default=0.95)
    parser.add_argument("--threshold-confidence", type=float, default=0.95,
                        help="one-sided confidence for the sensitivity target; 0 uses the point estimate")
    parser.add_argument("--keep-temperature", action="store_true", help="refit the threshold only")
    parser.add_argument("--version", default=None,
                        help="new version for the recalibrated artifact (needed to register it beside the old one)")
    parser.add_argument("--dry-run", action="store_true", help="print what would change, write nothing")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if not 0 < args.target_sensitivity < 1:
        parser.error("--target-sensitivity must lie strictly between 0 and 1")
    if not 0 <= args.threshold_confidence < 1:
        parser.error("--threshold-confidence must lie in [0, 1)")
    if not (args.model / "metadata.json").is_file():
        parser.error(f"{args.model} is not a model artifact (no metadata.json)")
    try:
        samples = select_samples(data=args.data, manifest=args.manifest, split_file=args.split_file,
                                 subset=args.subset)
        raw, labels, skipped = _raw_probabilities(artifact_dir=args.model, samples=samples, progress=not args.quiet)
        if not len(labels):
            raise RecalibrationError(f"None of the {len(skipped)} images could be decoded.")
        description = str(args.data) + (f" ({args.split_file} subset {args.subset})" if args.split_file else "")
        record = recalibrate(
            artifact_dir=args.model, raw_probabilities=raw, labels=labels, data_description=description,
            target_sensitivity=args.target_sensitivity, threshold_confidence=args.threshold_confidence or None,
            keep_temperature=args.keep_temperature, version=args.version, dry_run=args.dry_run,
        )
        if not args.dry_run:
            undecodable = {item["file"] for item in skipped}
            decoded = [sample for sample in samples if sample.key not in undecodable]
            record["monitoring_reference"] = _refresh_monitoring_reference(
                artifact_dir=args.model, samples=decoded, description=description, progress=not args.quiet)
    except (EvaluationError, RecalibrationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    record["skipped"] = skipped
    print(json.dumps(record, indent=1))
    return 0

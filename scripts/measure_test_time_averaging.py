"""Measure test-time averaging over ml.stability's changes (measured, not shipped; MODEL_CARD.md).

    .venv/bin/python scripts/measure_test_time_averaging.py --model ARTIFACT --subset test|loso [--out FILE.json]

For every film of the artifact's validation part and of ``--subset``: the
model's raw probabilities on the film and on each of ml.stability.PERTURBATIONS
(JPEG quality 90, half resolution, gamma 0.8), averaged as a geometric mean.
Temperature and COVID-19 threshold are refitted on validation for both the
single view and the average (the same rule as training), then applied to the
subset, so the two rows differ only by the averaging.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ml.calibration import apply_temperature, classification_metrics, fit_operating_point  # noqa: E402
from ml.datasets import default_data_dir  # noqa: E402
from ml.evaluate import select_samples  # noqa: E402
from ml.imaging import decode_path  # noqa: E402
from ml.inference import Predictor  # noqa: E402
from ml.labels import POSITIVE_CLASS  # noqa: E402
from ml.preprocess import preprocess  # noqa: E402
from ml.stability import changed_films  # noqa: E402

REPORTED = ("n", "accuracy", "macro_auc", "covid_auc", "covid_sensitivity", "covid_specificity", "ece", "nll")


def single_and_averaged(predictor: Predictor, samples) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw probabilities of each film alone and averaged with its changed copies, and the labels."""
    single, averaged = [], []
    for sample in samples:
        film = decode_path(sample.path).pixels
        views = [film, *(changed for _perturbation, changed in changed_films(film))]
        raw = predictor.predict_model_inputs(np.stack([preprocess(view, predictor.config) for view in views]))
        log_mean = np.log(np.clip(raw.astype(np.float64), 1e-7, 1.0)).mean(axis=0)
        geometric = np.exp(log_mean - log_mean.max())
        single.append(raw[0])
        averaged.append(geometric / geometric.sum())
    labels = np.array([predictor.class_names.index(sample.label) for sample in samples])
    return np.asarray(single, dtype=np.float64), np.asarray(averaged, dtype=np.float64), labels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--subset", default="test", choices=("test", "loso"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    predictor = Predictor.load(args.model)
    positive = predictor.class_names.index(POSITIVE_CLASS)
    split_file = args.model / "split.json"
    val = single_and_averaged(predictor, select_samples(data=args.data, manifest=None, split_file=split_file,
                                                        subset="val"))
    held_out = single_and_averaged(predictor, select_samples(data=args.data, manifest=None, split_file=split_file,
                                                             subset=args.subset))
    result = {"model": f"{predictor.metadata.name} {predictor.metadata.version}", "subset": args.subset}
    for index, name in enumerate(("single", "averaged")):
        point = fit_operating_point(raw_probabilities=val[index], labels=val[2], positive_index=positive,
                                    target_sensitivity=predictor.metadata.target_sensitivity,
                                    confidence=predictor.metadata.threshold_confidence)
        scored = classification_metrics(probabilities=apply_temperature(held_out[index], point.temperature),
                                        labels=held_out[2], positive_index=positive, threshold=point.threshold)
        result[name] = {
            "temperature": point.temperature,
            "threshold": point.threshold,
            "val": {key: point.metrics[key] for key in REPORTED},
            args.subset: {key: scored[key] for key in REPORTED},
        }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

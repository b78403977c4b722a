"""Would a richer calibration than temperature scaling help? (measured, not shipped; MODEL_CARD.md)

    .venv/bin/python scripts/measure_calibration_methods.py --model ARTIFACT [--out FILE.json]

The artifact's raw probabilities on its validation and test parts are
calibrated four ways: not at all, by temperature (what ``ml.train`` ships),
by temperature then a bias per class, and by matrix scaling (a multinomial
logistic regression on the log probabilities, L2 with C = 1). The choice is
made on validation alone: 5-fold cross-validation grouped by patient and
stratified by class, repeated with 5 seeds, scored by negative log-likelihood
and ECE. Each method is then fitted on the whole validation part and applied
to the test part, which is reported, not used to choose.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ml import metrics  # noqa: E402
from ml.calibration import (  # noqa: E402
    apply_temperature,
    fit_temperature,
    log_probabilities,
    negative_log_likelihood,
    softmax,
)
from ml.datasets import default_data_dir  # noqa: E402
from ml.evaluate import select_samples  # noqa: E402
from ml.imaging import decode_path  # noqa: E402
from ml.inference import Predictor  # noqa: E402
from ml.preprocess import preprocess  # noqa: E402
from ml.source_probe import fit_logistic, patient_folds  # noqa: E402

FOLDS, REPEATS = 5, 5


def _class_bias(log_probabilities: np.ndarray, labels: np.ndarray, *, steps: int = 3000) -> np.ndarray:
    """The per-class bias minimising the mean log loss of softmax(log p + bias) (gradient descent; convex)."""
    targets = np.eye(log_probabilities.shape[1])[labels]
    bias = np.zeros(log_probabilities.shape[1])
    for _ in range(steps):
        bias -= 0.5 * (softmax(log_probabilities + bias) - targets).mean(axis=0)
    return bias


def uncalibrated(train_p, train_y, apply_p):
    return apply_p


def temperature(train_p, train_y, apply_p):
    return apply_temperature(apply_p, fit_temperature(probabilities=train_p, labels=train_y)).astype(np.float64)


def temperature_and_bias(train_p, train_y, apply_p):
    t = fit_temperature(probabilities=train_p, labels=train_y)
    bias = _class_bias(log_probabilities(apply_temperature(train_p, t)), train_y)
    return softmax(log_probabilities(apply_temperature(apply_p, t)) + bias)


def matrix_scaling(train_p, train_y, apply_p):
    weights, bias = fit_logistic(log_probabilities(train_p), train_y, n_labels=train_p.shape[1], iterations=3000)
    return softmax(log_probabilities(apply_p) @ weights + bias)


METHODS = {
    "uncalibrated": uncalibrated,
    "temperature (shipped)": temperature,
    "temperature + class bias": temperature_and_bias,
    "matrix scaling (C = 1)": matrix_scaling,
}


def _scores(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    return {
        "nll": negative_log_likelihood(probabilities, labels),
        "ece": metrics.expected_calibration_error(y_true=labels, probabilities=probabilities).ece,
        "accuracy": float(np.mean(probabilities.argmax(axis=1) == labels)),
    }


def raw_probabilities(predictor: Predictor, samples) -> tuple[np.ndarray, np.ndarray, list[str]]:
    inputs = np.stack([preprocess(decode_path(sample.path).pixels, predictor.config) for sample in samples])
    labels = np.array([predictor.class_names.index(sample.label) for sample in samples])
    return predictor.predict_model_inputs(inputs).astype(np.float64), labels, [s.patient for s in samples]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    predictor = Predictor.load(args.model)
    split_file = args.model / "split.json"
    parts = {
        subset: raw_probabilities(
            predictor, select_samples(data=args.data, manifest=None, split_file=split_file, subset=subset)
        )
        for subset in ("val", "test")
    }
    val_p, val_y, val_patients = parts["val"]
    test_p, test_y, _ = parts["test"]
    results = {}
    for name, method in METHODS.items():
        cross_validated = []
        for repeat in range(REPEATS):
            fold_of = patient_folds(sources=[str(label) for label in val_y], patients=val_patients,
                                    folds=FOLDS, seed=repeat)
            out = np.zeros_like(val_p)
            for fold in range(FOLDS):
                held = fold_of == fold
                out[held] = method(val_p[~held], val_y[~held], val_p[held])
            cross_validated.append(_scores(out, val_y))
        results[name] = {
            "validation_cv": {key: float(np.mean([r[key] for r in cross_validated])) for key in ("nll", "ece")},
            "test": _scores(method(val_p, val_y, test_p), test_y),
        }
        row = results[name]
        print(f"{name:26s} validation CV NLL {row['validation_cv']['nll']:.4f} ECE {row['validation_cv']['ece']:.4f}"
              f" | test NLL {row['test']['nll']:.4f} ECE {row['test']['ece']:.4f} accuracy {row['test']['accuracy']:.3f}")
    report = {
        "model": str(args.model), "n_validation": int(val_y.size), "n_test": int(test_y.size),
        "folds": FOLDS, "repeats": REPEATS, "methods": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

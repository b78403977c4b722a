"""Which pneumonias does the model call COVID-19? (measured, not shipped; MODEL_CARD.md)

    .venv/bin/python scripts/measure_pneumonia_kinds.py --model ARTIFACT [--source cohen] [--out FILE.json]

The ``cohen`` collection labels each pneumonia by its cause (its ``finding``,
kept in the manifest's ``raw_label``: ``Pneumonia/Viral/SARS``,
``Pneumonia/Bacterial/Klebsiella``, ...). A model that reads the disease
should give other viral pneumonias, which can look like COVID-19 on a film,
a higher COVID-19 probability than bacterial or fungal ones, and still rank
COVID-19 above them. A model that reads the collection should give them all
about the same.

Only films the artifact never trained or calibrated on are used: for a
leave-one-source-out artifact that leaves ``--source`` out, every film of the
source; otherwise the source's films in the test part of its split.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ml import metrics  # noqa: E402
from ml.datasets import default_data_dir, load_split  # noqa: E402
from ml.evaluate import select_samples  # noqa: E402
from ml.imaging import decode_path  # noqa: E402
from ml.inference import Predictor  # noqa: E402
from ml.labels import POSITIVE_CLASS  # noqa: E402

COMPARISONS = (
    ("COVID-19 above other viral pneumonia", "covid", ("viral",)),
    ("COVID-19 above bacterial or fungal pneumonia", "covid", ("bacterial", "fungal")),
    ("other viral above bacterial or fungal pneumonia", "viral", ("bacterial", "fungal")),
)


def kind(label: str, raw_label: str) -> str:
    """covid, viral, bacterial, fungal or other, from the class and the collection's finding."""
    if label == POSITIVE_CLASS:
        return "covid"
    parts = raw_label.lower().split("/")
    return parts[1] if label == "pneumonia" and len(parts) > 1 and parts[1] in ("viral", "bacterial", "fungal") \
        else "other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--source", default="cohen")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    split_file = args.model / "split.json"
    left_out = load_split(split_file).notes.get("leave_out_source")
    subset = "loso" if left_out == args.source else "test"
    samples = [s for s in select_samples(data=args.data, manifest=None, split_file=split_file, subset=subset)
               if s.source == args.source]
    with open(args.data / "manifest.csv", newline="") as handle:
        raw_labels = {row["file"]: row["raw_label"] for row in csv.DictReader(handle)}
    predictor = Predictor.load(args.model)
    positive = predictor.class_names.index(POSITIVE_CLASS)
    threshold = float(predictor.metadata.covid_threshold)
    covid_probability = np.array([
        float(predictor.calibrated_probabilities(decode_path(sample.path).pixels)[positive]) for sample in samples
    ])
    kinds = np.array([kind(sample.label, raw_labels.get(sample.key, "")) for sample in samples])
    patients = np.array([sample.patient for sample in samples], dtype=object)

    groups = {}
    for name in ("covid", "viral", "bacterial", "fungal", "other"):
        members = kinds == name
        if members.any():
            groups[name] = {
                "n": int(members.sum()),
                "mean_covid_probability": float(covid_probability[members].mean()),
                "alert_share": float(np.mean(covid_probability[members] >= threshold)),
            }
    comparisons = {}
    for title, higher, lower in COMPARISONS:
        members = (kinds == higher) | np.isin(kinds, lower)
        is_higher, scores = kinds[members] == higher, covid_probability[members]
        interval = metrics.bootstrap_ci(
            statistic=lambda idx, is_higher=is_higher, scores=scores: metrics.roc_auc(
                y_true_binary=is_higher[idx], scores=scores[idx]),
            n=int(members.sum()), groups=patients[members], seed=0,
        )
        comparisons[title] = {
            "n": [int(is_higher.sum()), int((~is_higher).sum())],
            "auc": metrics.roc_auc(y_true_binary=is_higher, scores=scores),
            "auc_ci": [interval.low, interval.high],
        }
    report = {"model": str(args.model), "source": args.source, "films": "every film of the source (left out)"
              if subset == "loso" else "the source's films in the test part", "threshold": threshold,
              "groups": groups, "comparisons": comparisons}
    for name, group in groups.items():
        print(f"{name:10s} n={group['n']:4d} mean COVID-19 probability {group['mean_covid_probability']:.3f}, "
              f"alert {group['alert_share']:.1%}")
    for title, row in comparisons.items():
        low, high = row["auc_ci"]
        print(f"{title}: AUC {row['auc']:.3f} [{low:.3f}, {high:.3f}] (n {row['n'][0]} vs {row['n'][1]})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Evaluate several artifacts on the same images and write a side-by-side table.

    python -m ml.compare --models ml/artifacts/seed ml/artifacts/production \\
        --data ../shared/data/cxr --split-file ml/artifacts/production/split.json --subset test \\
        --out runs/compare

Each model's full evaluation goes to ``<out>/<folder name>/`` (metrics.json,
report.md, plots); ``<out>/comparison.md`` and ``comparison.json`` hold the
table. ``--metrics a/metrics.json b/metrics.json`` rebuilds the table from
earlier evaluations without running the models.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ml.artifact import loso_runs_for
from ml.report import fmt

ROWS: tuple[tuple[str, str], ...] = (
    ("images (patients)", "n"),
    ("accuracy", "accuracy"),
    ("macro AUC", "macro_auc"),
    ("COVID-19 AUC", "auc:covid"),
    ("normal AUC", "auc:normal"),
    ("pneumonia AUC", "auc:pneumonia"),
    ("ECE (calibrated)", "ece"),
    ("ECE before temperature scaling", "ece_uncalibrated"),
    ("temperature", "temperature"),
    ("COVID-19 threshold", "threshold"),
    ("COVID-19 sensitivity at threshold", "sensitivity"),
    ("COVID-19 specificity at threshold", "specificity"),
    ("accuracy, lungs hidden (chance 0.333)", "hidden"),
    ("accuracy, lungs only", "only"),
    ("Grad-CAM energy outside lung region", "gradcam"),
    ("shortcut suspected", "suspected"),
)


def cell(m: dict, key: str) -> str:
    audit = m["shortcut_audit"]
    if key == "n":
        return f"{m['n']} ({m['data']['n_patients']})"
    if key in ("accuracy", "macro_auc", "ece"):
        return fmt(m[key], m[f"{key}_ci"])
    if key.startswith("auc:"):
        c = m["per_class"][key[4:]]
        return fmt(c["auc"], c["auc_ci"])
    if key == "ece_uncalibrated":
        return fmt(m[key])
    if key == "temperature":
        return fmt(m["model"]["temperature"])
    if key == "threshold":
        return fmt(m["threshold"]["value"])
    if key == "sensitivity":
        return fmt(m["threshold"]["sensitivity"], m["threshold"]["sensitivity_ci"])
    if key == "specificity":
        return fmt(m["threshold"]["specificity"])
    if key == "hidden":
        return fmt(audit["lungs_hidden"]["accuracy"], audit["lungs_hidden"]["accuracy_ci"])
    if key == "only":
        return fmt(audit["lungs_only"]["accuracy"], audit["lungs_only"]["accuracy_ci"])
    if key == "gradcam":
        gradcam = audit.get("gradcam")
        if not gradcam or gradcam.get("mean_share_outside_lungs") is None:
            return "n/a"
        return f"{gradcam['mean_share_outside_lungs']:.1%} (uniform {gradcam['area_share_outside_lungs']:.1%})"
    if key == "suspected":
        return "yes" if audit["shortcut_suspected"] else "no"
    raise KeyError(key)


def comparison_markdown(metrics_list: Sequence[dict]) -> str:
    names = [f"{m['model']['name']} {m['model']['version']} ({m['model']['architecture']})" for m in metrics_list]
    lines = ["| metric [95% CI] | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, key in ROWS:
        lines.append(f"| {label} | " + " | ".join(cell(m, key) for m in metrics_list) + " |")
    sources = sorted({s for m in metrics_list for s in (m.get("per_source") or {})})
    for source in sources:
        values = []
        for m in metrics_list:
            s = (m.get("per_source") or {}).get(source)
            values.append("n/a" if s is None else f"{fmt(s['accuracy'], s['accuracy_ci'])} (n={s['n']})")
        lines.append(f"| accuracy on source {source} | " + " | ".join(values) + " |")
    for representation, label in (("features", "features"), ("outputs", "answers")):
        probed = sorted({class_name for m in metrics_list for class_name, probe in
                         _probe(m, representation).items() if probe})
        for class_name in probed:
            values = []
            for m in metrics_list:
                probe = _probe(m, representation).get(class_name)
                values.append("n/a" if not probe else fmt(probe["auc"], probe["auc_ci"]))
            lines.append(f"| collection readable within {class_name} from the model's {label} (probe AUC) | "
                         + " | ".join(values) + " |")
    loso = [_loso_runs(m) for m in metrics_list]
    for source in sorted({source for runs in loso for source in runs}):
        values = [fmt(runs[source]["covid_auc"]) if source in runs else "n/a" for runs in loso]
        lines.append(f"| COVID-19 AUC, retrained without {source} and tested on it (LOSO) | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def _probe(m: dict, representation: str) -> dict[str, dict | None]:
    """This evaluation's ml.source_probe results for one representation, by class (empty without sources)."""
    probes = (m.get("shortcut_audit") or {}).get("source_probe") or {}
    return (probes.get(representation) or {}).get("by_class") or {}


def _loso_runs(m: dict) -> dict[str, dict]:
    """This model's recipe's leave-one-source-out runs (from the artifact's loso.json), by left-out source."""
    return loso_runs_for((m.get("shortcut_audit") or {}).get("loso"), m["model"]["architecture"])


def write_comparison(*, metrics_list: Sequence[dict], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    table = comparison_markdown(metrics_list)
    (out_dir / "comparison.md").write_text("# Model comparison\n\n" + table)
    summary = [{label: cell(m, key) for label, key in ROWS} | {"model": m["model"]} for m in metrics_list]
    (out_dir / "comparison.json").write_text(json.dumps(summary, indent=2) + "\n")
    return out_dir / "comparison.md"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.compare", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--models", nargs="+", type=Path, help="artifact folders to evaluate")
    group.add_argument("--metrics", nargs="+", type=Path, help="existing metrics.json files")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--manifest", type=Path, default=None)
    parser.add_argument("--split-file", type=Path, default=None)
    parser.add_argument("--subset", default="test", choices=("train", "val", "test"))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--gradcam-samples", type=int, default=48)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    if args.metrics:
        metrics_list = [json.loads(path.read_text()) for path in args.metrics]
    else:
        if args.data is None:
            parser.error("--models needs --data")
        from ml.evaluate import evaluate_artifact

        names = [path.resolve().name for path in args.models]
        if len(set(names)) != len(names):
            parser.error("artifact folders must have distinct names (they name the output folders)")
        metrics_list = [
            evaluate_artifact(
                artifact_dir=path,
                data=args.data,
                manifest=args.manifest,
                split_file=args.split_file,
                subset=args.subset,
                out_dir=args.out / name,
                gradcam_samples=args.gradcam_samples,
                n_resamples=args.bootstrap,
                seed=args.seed,
                progress=not args.quiet,
            ).metrics
            for path, name in zip(args.models, names)
        ]
    path = write_comparison(metrics_list=metrics_list, out_dir=args.out)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Site adaptation measured on the development pool: one collection treated as a new hospital (issue 20, item 6).

    .venv/bin/python bench/site_adaptation_study.py --model /work/runs/loso_cohen --source cohen \\
        --out runs/site_adaptation_cohen [--shares 0.1 0.3 0.5] [--finetune-share 0.3]

``--model`` is the recipe trained without ``--source`` (``python -m ml train --leave-out-source cohen``).
For each share, that share of the source's patients (by the stable patient hash, so 10% is inside 30% is
inside 50%) are the site's adaptation films and the remaining patients its test films. On the test films the
script reports the model before adaptation and after (a) temperature + threshold, (a)+(b) head refit on the
development training films plus the adaptation films, and, at ``--finetune-share`` only (CPU time),
(a)+(b)+(c) last-block fine-tuning: macro AUC, ECE, COVID-19 alert sensitivity and specificity, each with its
95% interval (bootstrap by patient). Writes ``results.json`` and ``results.md`` to ``--out``.
"""

import argparse
import json
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

STEP_NAMES = {"calibrate": "(a) temperature + threshold", "head": "(a)+(b) head refit",
              "finetune": "(a)+(b)+(c) last-block fine-tune"}


def _cell(summary: dict, key: str) -> str:
    if key in ("sensitivity", "specificity"):
        value, interval = summary["threshold"][key], summary["threshold"].get(f"{key}_ci")
    else:
        value, interval = summary[key], summary.get(f"{key}_ci")
    if value is None:
        return "—"
    if interval and interval[0] is not None:
        return f"{value:.3f} ({interval[0]:.2f}–{interval[1]:.2f})"
    return f"{value:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--source", default="cohen")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    parser.add_argument("--finetune-share", type=float, default=0.3, help="share at which (c) runs; 0: never")
    parser.add_argument("--cache", type=Path, default=REPOSITORY / "var" / "bench-feature-cache")
    parser.add_argument("--resamples", type=int, default=500)
    parser.add_argument("--site-weight", type=float, default=0.5, help="the site's share of the head fit's weight")
    args = parser.parse_args()

    from ml.serving.artifact import load_metadata
    from ml.evaluation.datasets import load_dataset
    from ml.evaluation.site import compare_on_films
    from ml.serving.predictor import Predictor
    from ml.evaluation.features import FeatureCache, films_from_samples
    from ml.evaluation.site import patient_position
    from ml.training.adapt import AdaptationSettings, adapt, dev_films

    metadata = load_metadata(args.model)
    data = args.data or Path(metadata.training["data_root"])
    site = films_from_samples([sample for sample in load_dataset(data) if sample.source == args.source])
    dev = dev_films(args.model, data_root=data)
    cache = FeatureCache(args.cache)
    parent = Predictor.load(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"model": str(args.model), "source": args.source, "site_weight": args.site_weight, "site_films": len(site),
               "site_patients": len({film.patient for film in site}), "dev_train": len(dev["train"]), "runs": []}
    for share in args.shares:
        adaptation = [film for film in site if patient_position(film.patient) >= 1 - share]
        test = [film for film in site if patient_position(film.patient) < 1 - share]
        steps = ["calibrate", "head"] + (["finetune"] if abs(share - args.finetune_share) < 1e-9 else [])
        for step in steps:
            started = time.perf_counter()
            out_dir = args.out / f"candidate-{int(share * 100)}-{step}"
            if out_dir.exists():
                import shutil

                shutil.rmtree(out_dir)
            result = adapt(parent_dir=args.model, out_dir=out_dir, site_films=adaptation, dev_train=dev["train"],
                           dev_val=dev["val"], cache=cache,
                           settings=AdaptationSettings(steps=step, site_weight=args.site_weight),
                           site_description=f"{args.source}, {share:.0%} of its patients")
            comparison = compare_on_films(candidate=Predictor.load(out_dir), active=parent, films=test, cache=cache,
                                          description=f"{args.source} test patients", n_resamples=args.resamples)
            comparison.pop("predictions")
            run = {"share": share, "steps": step, "adaptation_films": len(adaptation),
                   "adaptation_patients": len({film.patient for film in adaptation}), "test_films": comparison["n"],
                   "test_patients": comparison["patients"], "test_class_counts": comparison["class_counts"],
                   "seconds": round(time.perf_counter() - started, 1),
                   "adaptation_seconds": round(result.seconds, 1),
                   "before": comparison["active"], "after": comparison["candidate"], "paired": comparison["paired"]}
            results["runs"].append(run)
            print(f"{share:.0%} {step}: macro AUC {_cell(run['before'], 'macro_auc')} -> "
                  f"{_cell(run['after'], 'macro_auc')} ({run['seconds']} s)", file=sys.stderr, flush=True)
            (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [f"Left-out source `{args.source}` ({results['site_films']} films, {results['site_patients']} patients) "
             f"as a new site; model `{args.model}` trained without it. Test: the source's patients not used "
             "for adaptation. 95% intervals: bootstrap by patient.", "",
             "| site patients used | step | adaptation films | test films | macro AUC before → after | "
             "ECE before → after | alert sensitivity before → after | alert specificity before → after |",
             "|---|---|---|---|---|---|---|---|"]
    for run in results["runs"]:
        cells = [f"{_cell(run['before'], key)} → {_cell(run['after'], key)}"
                 for key in ("macro_auc", "ece", "sensitivity", "specificity")]
        lines.append(f"| {run['share']:.0%} | {STEP_NAMES[run['steps']]} | {run['adaptation_films']} | "
                     f"{run['test_films']} | " + " | ".join(cells) + " |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

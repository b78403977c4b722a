"""Evaluate a model artifact on a labelled image folder.

    python -m ml evaluate --model ml/artifacts/production --data /path/to/root \\
        [--manifest manifest.csv] [--split-file split.json --subset test] --out runs/eval

``root`` is any folder laid out as ``<root>/{covid,normal,pneumonia}/*``
(PNG, JPEG or DICOM; missing class folders are fine), or the development
pool's folder with its ``manifest.csv`` (see ``ml.evaluation.datasets.load_dataset``).
Writes ``metrics.json`` (schema in docs/evaluation.md), ``report.md``, the
plots and ``predictions.csv`` (one row per film: file, source, patient, true
label, probabilities, predicted class, alert, warnings) to ``--out``.

Four steps, each a function: ``collect`` (every film through exactly the serving
path: ``ml.serving.imaging.decode_path``, then ``Predictor.predict``), ``summarise``
(metrics with intervals, per source, calibration, stability, familiarity), ``audit``
(the shortcut audit) and ``write`` (metrics.json, plots, report.md). Files that
cannot be decoded are listed in ``metrics.json`` under ``skipped`` instead of
stopping the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ml.evaluation import metrics
from ml.evaluation.datasets import EvaluationError, load_split, select_samples
from ml.evaluation.familiarity import summarize_familiarity
from ml.evaluation.lung_region import lung_region_for_config
from ml.evaluation.plots import (
    plot_confusion_matrix,
    plot_familiarity,
    plot_reliability_diagram,
    plot_roc_curves,
    plot_stability,
)
from ml.evaluation.report import write_report
from ml.evaluation.shortcut_audit import load_loso, run_shortcut_audit
from ml.evaluation.source_probe import probe_model
from ml.evaluation.site import prediction_row, write_predictions_csv
from ml.evaluation.summary import DEFAULT_RESAMPLES, summarize_predictions
from ml.serving.artifact import SHORTCUT_AUDIT_FILE, record_shortcut_audit
from ml.serving.calibration import apply_temperature
from ml.serving.command_line import add_model_and_data_arguments
from ml.serving.imaging import ImageDecodeError, decode_path
from ml.serving.labels import POSITIVE_CLASS
from ml.serving.predictor import Predictor
from ml.serving.stability import PERTURBATIONS, changed_films, probability_changes, summarize_stability

SCHEMA_VERSION = 1
DEFAULT_GRADCAM_SAMPLES = 48
DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class EvaluationOutput:
    out_dir: Path
    metrics: dict
    files: list[Path]


def _artifact_split(artifact_dir: Path):
    """The artifact's own split.json (None: it has none)."""
    path = artifact_dir / "split.json"
    if not path.is_file():
        return None

    return load_split(path)


def _training_overlap(*, split, samples) -> int | None:
    """How many evaluated images the artifact was trained or calibrated on (None: no split.json).

    A leave-one-source-out artifact stores the shared split with the left-out
    source in its notes: that source's images were never used, whatever part
    of the split they sit in.
    """
    if split is None:
        return None
    used = set(split.train) | set(split.val)
    left_out = split.notes.get("leave_out_source")
    return sum(1 for s in samples if s.key in used and s.source != left_out)


@dataclass
class Collected:
    """What the served model did on each decodable film (step 1 of an evaluation)."""

    samples: list  # the decoded samples, in order
    skipped: list[dict]  # {"file", "reason"} of each film that could not be decoded
    y_true: np.ndarray  # (N,) class indices
    probabilities: np.ndarray  # (N, classes), calibrated
    raw_probabilities: np.ndarray  # (N, classes), before temperature scaling
    model_inputs: np.ndarray  # (N, S, S, 1)
    lung_masks: np.ndarray  # (N, S, S) bool, the audit's lung region
    familiarity_scores: list  # one per film (None: the artifact has no familiarity check)
    features: list  # pooled features per film, only when the films' sources are known (the source probe)
    perturbed: dict[str, list]  # calibrated probabilities after each harmless change, per perturbation name
    warnings: list = field(default_factory=list)  # per film, the serving warnings (lungs_not_found, unfamiliar)

    @property
    def patients(self) -> list[str]:
        return [sample.patient for sample in self.samples]

    @property
    def sources(self) -> list[str]:
        return [sample.source for sample in self.samples]


def collect(*, predictor, samples, lung_region, batch_size: int = DEFAULT_BATCH_SIZE,
            progress: bool = True) -> Collected:
    """Decode every sample and run it through the serving path, also after each harmless change."""
    class_names = list(predictor.class_names)
    kept, skipped = [], []
    probabilities, raw_probabilities, model_inputs, lung_masks, familiarity_scores = [], [], [], [], []
    features, warnings = [], []
    sources_known = any(sample.source != "unknown" for sample in samples)
    perturbed = {perturbation.name: [] for perturbation in PERTURBATIONS}
    batches = range(0, len(samples), batch_size)
    for start in tqdm(batches, desc=f"evaluating {predictor.metadata.name}", unit="batch", disable=not progress):
        batch, pixels = [], []
        for sample in samples[start : start + batch_size]:
            try:
                pixels.append(decode_path(sample.path).pixels)
                batch.append(sample)
            except (ImageDecodeError, OSError) as error:
                skipped.append({"file": sample.key, "reason": str(error)})
        for sample, film, result in zip(batch, pixels, predictor.predict(pixels), strict=True):
            kept.append(sample)
            lung_masks.append(lung_region.mask(film, result.model_input))
            probabilities.append([result.probabilities[name] for name in class_names])
            raw_probabilities.append([result.raw_probabilities[name] for name in class_names])
            model_inputs.append(result.model_input)
            familiarity_scores.append(result.familiarity_score)
            warnings.append(list(result.warnings))
            if sources_known:  # the source probe needs them; nothing else does
                features.append(result.features if result.features is not None
                                else predictor.features(result.model_input[..., None]))
        for film in pixels:
            for perturbation, changed_film in changed_films(film):
                changed = predictor.calibrated_probabilities(changed_film)
                perturbed[perturbation.name].append([float(p) for p in changed])
    if not kept:
        reasons = "; ".join(f"{item['file']}: {item['reason']}" for item in skipped[:5])
        raise EvaluationError(f"None of the {len(skipped)} images could be decoded ({reasons}).")
    return Collected(
        samples=kept, skipped=skipped, y_true=np.array([class_names.index(s.label) for s in kept]),
        probabilities=np.asarray(probabilities), raw_probabilities=np.asarray(raw_probabilities),
        model_inputs=np.stack(model_inputs)[..., None], lung_masks=np.stack(lung_masks),
        familiarity_scores=familiarity_scores, features=features, perturbed=perturbed, warnings=warnings,
    )


def summarise(*, collected: Collected, metadata, class_names: list[str], left_out_source: str | None,
              n_resamples: int, seed: int) -> dict:
    """Step 2: the metrics with intervals, in all and per source, calibration, stability and familiarity."""
    y_true, probabilities, patients = collected.y_true, collected.probabilities, collected.patients
    source_names = collected.sources
    threshold = float(metadata.covid_threshold)
    summary = summarize_predictions(
        y_true=y_true, probabilities=probabilities, class_names=class_names, threshold=threshold,
        groups=patients, n_resamples=n_resamples, seed=seed,
    )
    per_source = None
    if any(source != "unknown" for source in source_names):
        per_source = {}
        for source in sorted(set(source_names)):
            members = np.array([s == source for s in source_names])
            per_source[source] = summarize_predictions(
                y_true=y_true[members], probabilities=probabilities[members], class_names=class_names,
                threshold=threshold, groups=[p for p, m in zip(patients, members) if m],
                n_resamples=n_resamples, seed=seed,
            )
    stability = summarize_stability(
        y_true=y_true,
        probabilities=probabilities,
        perturbed={name: np.asarray(values) for name, values in collected.perturbed.items()},
        positive_index=class_names.index(POSITIVE_CLASS),
        threshold=threshold,
    )
    familiarity = None
    if metadata.familiarity:
        familiarity = {
            "quantile": metadata.familiarity["quantile"],
            **summarize_familiarity(
                scores=np.asarray(collected.familiarity_scores, dtype=np.float64),
                threshold=metadata.familiarity["threshold"],
                correct=probabilities.argmax(axis=1) == y_true,
                sources=source_names,
                left_out_source=left_out_source,
            ),
        }
    return {
        "summary": summary,
        "calibration": metrics.expected_calibration_error(y_true=y_true, probabilities=probabilities),
        "raw_calibration": metrics.expected_calibration_error(y_true=y_true, probabilities=collected.raw_probabilities),
        "per_source": per_source,
        "stability": stability,
        "familiarity": familiarity,
    }


def audit(*, collected: Collected, predictor, lung_region, loso, has_sources: bool, gradcam_samples: int,
          n_resamples: int, seed: int, progress: bool = True):
    """Step 3: the shortcut audit (lungs hidden, lungs only, Grad-CAM outside the lungs, the source probe)."""
    class_names = list(predictor.class_names)
    probabilities, model_inputs = collected.probabilities, collected.model_inputs
    heatmaps, heatmap_indices = [], []
    if gradcam_samples > 0:
        rng = np.random.default_rng(seed)
        count = len(collected.samples)
        chosen = np.sort(rng.choice(count, size=min(gradcam_samples, count), replace=False))
        for index in tqdm(chosen, desc="grad-cam sample", unit="image", disable=not progress):
            heatmaps.append(predictor.heatmap(model_inputs[index], int(probabilities[index].argmax())))
            heatmap_indices.append(int(index))

    source_probe = None
    if has_sources and collected.features:
        source_probe = {
            name: probe.to_dict()
            for name, probe in probe_model(
                model_inputs=model_inputs, features=np.stack(collected.features), probabilities=probabilities,
                y_true=collected.y_true, sources=collected.sources, patients=collected.patients,
                class_names=class_names, seed=seed, n_resamples=n_resamples,
            ).items()
        }

    def predict_model_inputs(batch: np.ndarray) -> np.ndarray:
        return apply_temperature(predictor.predict_model_inputs(batch), predictor.metadata.temperature)

    return run_shortcut_audit(
        model_inputs=model_inputs,
        y_true=collected.y_true,
        predict_model_inputs=predict_model_inputs,
        probabilities_full=probabilities,
        heatmaps=heatmaps,
        heatmap_indices=heatmap_indices,
        groups=collected.patients,
        loso=loso,
        masks=collected.lung_masks,
        lung_region=lung_region.description,
        fill_value=lung_region.blank_value,
        seed=seed,
        n_resamples=n_resamples,
        source_probe=source_probe,
    )


def write(*, out_dir: Path, result: dict, collected: Collected, calibration) -> list[Path]:
    """Step 4: metrics.json, the plots and report.md."""
    class_names = result["classes"]
    title = f"{result['model']['name']} {result['model']['version']}"
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    files = [out_dir / "metrics.json"]
    files.append(plot_confusion_matrix(
        matrix=np.asarray(result["confusion_matrix"]), class_names=class_names,
        path=out_dir / "confusion_matrix.png", title=f"Confusion matrix, {title}",
    ))
    files.append(plot_roc_curves(
        curves=metrics.one_vs_rest_roc(y_true=collected.y_true, probabilities=collected.probabilities),
        class_names=class_names, path=out_dir / "roc_curves.png", title=f"One-vs-rest ROC, {title}",
    ))
    files.append(plot_reliability_diagram(calibration=calibration, path=out_dir / "reliability.png", title=title))
    files.append(plot_stability(
        changes={p.description: probability_changes(collected.probabilities, collected.perturbed[p.name])
                 for p in PERTURBATIONS if collected.perturbed[p.name]},
        path=out_dir / "stability.png",
        title=f"Stability under harmless changes, {title}",
    ))
    familiarity = result["familiarity"]
    if familiarity is not None:
        source_names = collected.sources
        files.append(plot_familiarity(
            scores_by_source={source: [score for score, s in zip(collected.familiarity_scores, source_names)
                                       if s == source]
                              for source in sorted(set(source_names))},
            threshold=familiarity["threshold"],
            left_out_source=familiarity["left_out_source"],
            path=out_dir / "familiarity.png",
            title=f"Familiarity of the films, {title}",
        ))
    files.append(write_report(metrics=result, path=out_dir / "report.md"))
    # Film by film, so a site can look at every miss and every alert.
    threshold = result["threshold"]["value"]
    files.append(write_predictions_csv([
        prediction_row(file=sample.key, source=sample.source, patient=sample.patient, true_label=sample.label,
                       probabilities=row, threshold=threshold, warnings=film_warnings)
        for sample, row, film_warnings in zip(collected.samples, collected.probabilities,
                                              collected.warnings or [()] * len(collected.samples))
    ], out_dir / "predictions.csv"))
    return files


def evaluate_artifact(
    *,
    artifact_dir: Path | str,
    data: Path | str,
    out_dir: Path | str,
    manifest: Path | str | None = None,
    split_file: Path | str | None = None,
    subset: str = "test",
    batch_size: int = DEFAULT_BATCH_SIZE,
    gradcam_samples: int = DEFAULT_GRADCAM_SAMPLES,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    threads: int = 1,
    use_segmenter: bool = True,
    progress: bool = True,
) -> EvaluationOutput:
    """Collect the served model's answers, summarise them, audit for shortcuts, write metrics.json and plots."""
    artifact_dir, data, out_dir = Path(artifact_dir), Path(data), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = select_samples(
        data=data,
        manifest=Path(manifest) if manifest else None,
        split_file=Path(split_file) if split_file else None,
        subset=subset,
    )
    predictor = Predictor.load(artifact_dir, threads=threads)
    class_names = list(predictor.class_names)
    metadata = predictor.metadata
    lung_region = lung_region_for_config(predictor.config, use_segmenter=use_segmenter)
    artifact_split = _artifact_split(artifact_dir)

    collected = collect(predictor=predictor, samples=samples, lung_region=lung_region, batch_size=batch_size,
                        progress=progress)
    summarised = summarise(
        collected=collected, metadata=metadata, class_names=class_names, n_resamples=n_resamples, seed=seed,
        # A leave-one-source-out artifact's split names the source it never saw.
        left_out_source=artifact_split.notes.get("leave_out_source") if artifact_split else None,
    )
    shortcut_audit = audit(
        collected=collected, predictor=predictor, lung_region=lung_region, loso=load_loso(artifact_dir),
        has_sources=summarised["per_source"] is not None, gradcam_samples=gradcam_samples,
        n_resamples=n_resamples, seed=seed, progress=progress,
    )

    patients = collected.patients
    # ml.evaluation.datasets makes an image without a patient id its own patient ("image:<key>"); the dev pool
    # has such rows (some cxnet images), a folder without a manifest has nothing else.
    patient_ids_known = not all(p.startswith("image:") for p in patients)
    summary = summarised["summary"]
    overlap = _training_overlap(split=artifact_split, samples=collected.samples)
    notes = list(summary.pop("notes"))
    if overlap:
        notes.append(
            f"{overlap} of the evaluated images were in the artifact's training or validation split: "
            "these numbers are optimistic. Pass --split-file with the artifact's split.json and --subset test."
        )
    if not patient_ids_known:
        notes.append("No patient ids (no manifest): the bootstrap resamples images, assuming one image per patient.")

    result = {
        "schema_version": SCHEMA_VERSION,
        "model": {
            "name": metadata.name,
            "version": metadata.version,
            "architecture": metadata.architecture,
            "artifact_dir": str(artifact_dir),
            "sha256": metadata.sha256,
            "input_size": metadata.input_size,
            "preprocessing": metadata.preprocessing,
            "temperature": metadata.temperature,
            "covid_threshold": float(metadata.covid_threshold),
        },
        "data": {
            "root": str(data),
            # load_dataset reads <root>/manifest.csv by itself when the root has no class folders.
            "manifest": str(manifest) if manifest else (
                str(data / "manifest.csv") if patient_ids_known and (data / "manifest.csv").is_file() else None
            ),
            "split_file": str(split_file) if split_file else None,
            "subset": subset if split_file else None,
            "n_patients": len(set(patients)),
            "sources": sorted(set(collected.sources)),
            "trained_on_overlap": overlap,
        },
        "classes": class_names,
        **summary,
        "ece_uncalibrated": summarised["raw_calibration"].ece,
        "ece_bins": summarised["raw_calibration"].n_bins,
        "calibration_bins": asdict(summarised["calibration"]),
        "bootstrap": {
            "n_resamples": n_resamples,
            "confidence": 0.95,
            "seed": seed,
            # Images without a patient id count as their own patient.
            "unit": "patient" if patient_ids_known else "image",
        },
        "per_source": summarised["per_source"],
        "shortcut_audit": shortcut_audit.to_dict(),
        "stability": summarised["stability"],
        "familiarity": summarised["familiarity"],
        "skipped": collected.skipped,
        "notes": notes,
    }
    files = write(out_dir=out_dir, result=result, collected=collected, calibration=summarised["calibration"])
    return EvaluationOutput(out_dir=out_dir, metrics=result, files=files)


EXAMPLE = """example:
    python -m ml evaluate --model ml/artifacts/production --data ../shared/data/cxr \\
        --manifest ../shared/data/cxr/manifest.csv --split-file ml/artifacts/dev_split.json --subset test \\
        --out runs/eval
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ml evaluate", description=__doc__.splitlines()[0], epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_and_data_arguments(parser, model_help="artifact folder (metadata.json, model.tflite)")
    parser.add_argument("--manifest", type=Path, default=None, help="optional manifest CSV (source, patient)")
    parser.add_argument("--split-file", type=Path, default=None, help="split.json to select a subset from")
    parser.add_argument(
        "--subset",
        default="test",
        choices=("train", "val", "test", "loso"),
        help="part of --split-file; loso = test set of a leave-one-source-out artifact's split.json",
    )
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument(
        "--gradcam-samples", type=int, default=DEFAULT_GRADCAM_SAMPLES, help="Grad-CAM maps for the audit (0: none)"
    )
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="TFLite threads")
    parser.add_argument(
        "--lung-region",
        choices=("auto", "prior"),
        default="auto",
        help="audit lung region: auto = segmenter/preprocessing mask when available, prior = fixed ellipses",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--record",
        action="store_true",
        help=f"also store the shortcut audit in the artifact folder ({SHORTCUT_AUDIT_FILE}), where the portal shows "
        "it with the model version; only for the artifact's own test split (--split-file, --subset test)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.record and (args.split_file is None or args.subset != "test"):
        parser.error("--record needs --split-file and --subset test: a version carries its audit on films it never saw")
    try:
        output = evaluate_artifact(
            artifact_dir=args.model,
            data=args.data,
            out_dir=args.out,
            manifest=args.manifest,
            split_file=args.split_file,
            subset=args.subset,
            batch_size=args.batch_size,
            gradcam_samples=args.gradcam_samples,
            n_resamples=args.bootstrap,
            seed=args.seed,
            threads=args.threads,
            use_segmenter=args.lung_region == "auto",
            progress=not args.quiet,
        )
    except EvaluationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    m = output.metrics
    audit = m["shortcut_audit"]

    def fmt(value, ci=None) -> str:
        if value is None:
            return "n/a"
        text = f"{value:.3f}"
        if ci and ci[0] is not None:
            text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
        return text

    print(f"model {m['model']['name']} {m['model']['version']} on {m['n']} images -> {output.out_dir}")
    print(f"accuracy  {fmt(m['accuracy'], m['accuracy_ci'])}")
    print(f"macro AUC {fmt(m['macro_auc'], m['macro_auc_ci'])}")
    print(f"ECE       {fmt(m['ece'], m['ece_ci'])} (uncalibrated {fmt(m['ece_uncalibrated'])})")
    t = m["threshold"]
    print(f"{t['class']} sensitivity at {t['value']:.3f}: {fmt(t['sensitivity'], t['sensitivity_ci'])}")
    print(
        f"shortcut audit: lungs hidden {fmt(audit['lungs_hidden']['accuracy'])}, "
        f"lungs only {fmt(audit['lungs_only']['accuracy'])}, suspected={audit['shortcut_suspected']}"
    )
    familiarity = m["familiarity"]
    if familiarity:
        line = f"familiarity: {familiarity['n_flagged']} of {familiarity['n']} films flagged unfamiliar"
        if familiarity["left_out_auc"] is not None:
            line += f"; left-out source {familiarity['left_out_source']} found with AUC {fmt(familiarity['left_out_auc'])}"
        print(line)
    if args.record:
        print(f"recorded the shortcut audit in {record_shortcut_audit(args.model, m)}")
    for note in m["notes"]:
        print(f"note: {note}")
    if m["skipped"]:
        print(f"skipped {len(m['skipped'])} undecodable files (listed in metrics.json)")
    return 0

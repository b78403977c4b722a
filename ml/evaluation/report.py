"""The human-readable ``report.md`` written next to ``metrics.json``.

Everything here is formatted from the metrics dictionary alone, so a report
can be regenerated from a stored ``metrics.json`` without the model.
"""

from __future__ import annotations

import json
from pathlib import Path


def fmt(value: float | None, ci: list | None = None, *, percent: bool = False) -> str:
    """``0.912 [0.880, 0.940]``; ``n/a`` for an undefined value."""
    if value is None:
        return "n/a"

    def one(x: float) -> str:
        return f"{x:.1%}" if percent else f"{x:.3f}"

    text = one(value)
    if ci and ci[0] is not None and ci[1] is not None:
        text += f" [{one(ci[0])}, {one(ci[1])}]"
    return text


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def per_class_rows(m: dict) -> list[list[str]]:
    rows = []
    for name in m["classes"]:
        c = m["per_class"][name]
        rows.append(
            [
                name,
                str(c["support"]),
                fmt(c["precision"]),
                fmt(c["recall"]),
                fmt(c["f1"]),
                fmt(c["auc"], c["auc_ci"]),
            ]
        )
    return rows


def confusion_rows(m: dict) -> list[list[str]]:
    return [[f"**{name}**"] + [str(v) for v in row] for name, row in zip(m["classes"], m["confusion_matrix"])]


def audit_lines(audit: dict) -> list[str]:
    lines = [
        f"Lung region: {audit['lung_region']}; it covers {audit['lung_area_fraction']:.1%} of the input. "
        f"Fill: {audit['fill']}.",
        "",
    ]
    rows = []
    for key, label in (("full", "full image"), ("lungs_hidden", "lungs hidden"), ("lungs_only", "lungs only")):
        v = audit[key]
        rows.append(
            [
                label,
                fmt(v["accuracy"], v["accuracy_ci"]),
                fmt(v["balanced_accuracy"]),
                fmt(v["macro_auc"]),
                " / ".join(str(c) for c in v["predicted_class_counts"]),
            ]
        )
    lines += _table(["input", "accuracy [95% CI]", "balanced accuracy", "macro AUC", "predicted per class"], rows)
    lines.append("")
    gradcam = audit.get("gradcam")
    if gradcam and gradcam.get("mean_share_outside_lungs") is not None:
        lines.append(
            f"Grad-CAM on {gradcam['n']} sampled images: mean share of heatmap energy outside the lung region "
            f"{gradcam['mean_share_outside_lungs']:.1%} (median {gradcam['median_share_outside_lungs']:.1%}; "
            f"a uniform map would give {gradcam['area_share_outside_lungs']:.1%}); "
            f"{gradcam['share_of_images_mostly_outside']:.0%} of maps have more than half their energy outside."
        )
        lines.append("")
    verdict = "**SHORTCUT SUSPECTED**" if audit["shortcut_suspected"] else "no shortcut flag"
    lines.append(
        f"Verdict: {verdict} (flag when accuracy with the lungs hidden exceeds chance "
        f"{audit['chance_accuracy']:.1%} by more than {audit['margin'] * 100:.0f} percentage points)."
    )
    lines.append("")
    lines += [f"- {finding}" for finding in audit["findings"]]
    lines.append("")
    if audit.get("source_probe"):
        lines += source_probe_lines(audit["source_probe"])
    loso = audit.get("loso")
    if loso:
        lines += ["### Leave-one-source-out (from the artifact's loso.json)", ""]
        lines += loso_lines(loso)
    return lines


def source_probe_lines(probes: dict) -> list[str]:
    """The ml.evaluation.source_probe table: per class, how well the collection can be read off each representation."""
    names = [name for name in ("input", "features", "outputs") if name in probes]
    classes = list(probes[names[0]]["by_class"]) if names else []
    rows = []
    for class_name in classes:
        first = next((probes[name]["by_class"].get(class_name) for name in names
                      if probes[name]["by_class"].get(class_name)), None)
        if first is None:
            continue
        sources = ", ".join(f"{source} {count} ({first['patients'][source]} patients)"
                            for source, count in first["sources"].items())
        cells = [class_name, sources]
        for name in names:
            probe = probes[name]["by_class"].get(class_name)
            cells.append(fmt(probe["auc"], probe["auc_ci"]) if probe else "n/a")
        cells.append(str(first["folds"]))
        rows.append(cells)
    lines = [
        "### Can the collection be read within a class? (source probe)",
        "",
        "A linear probe (logistic regression, patient-grouped cross-validation) tries to tell the sources of "
        "films of one true class apart. AUC 0.5: the collection cannot be read; 1: it can. Collections of one "
        "class may also differ in what they show, so a high AUC is a warning, not proof of a shortcut.",
        "",
    ]
    if not rows:
        skipped = probes[names[0]].get("skipped_sources") if names else None
        return lines + [f"No class has two sources with enough patients (skipped: {skipped or 'none'}).", ""]
    header = ["class", "films per source"] + [f"{name} AUC [95% CI]" for name in names] + ["folds"]
    return lines + _table(header, rows) + [""]


LOSO_COLUMNS = (
    ("n", "test images"),
    ("accuracy", "accuracy"),
    ("macro_auc", "macro AUC"),
    ("covid_auc", "COVID-19 AUC"),
    ("covid_sensitivity_at_threshold", "COVID-19 sensitivity"),
    ("covid_specificity_at_threshold", "COVID-19 specificity"),
)


def loso_lines(loso) -> list[str]:
    """A table of the runs in loso.json (as written by ``python -m ml train --collect-loso``), else the raw JSON."""
    runs = loso.get("runs") if isinstance(loso, dict) else None
    if not isinstance(runs, dict) or not runs:
        return ["```json", json.dumps(loso, indent=1)[:4000], "```", ""]
    rows = []
    for key in sorted(runs):
        run = runs[key]
        cells = [str(run.get("architecture", key.split("/")[0])), str(run.get("left_out_source", key))]
        for column, _ in LOSO_COLUMNS:
            value = run.get(column)
            cells.append(fmt(value) if isinstance(value, float) else ("n/a" if value is None else str(value)))
        rows.append(cells)
    lines = _table(["architecture", "left-out source"] + [label for _, label in LOSO_COLUMNS], rows)
    if loso.get("note"):
        lines += ["", str(loso["note"])]
    return lines + [""]


def stability_lines(stability: dict) -> list[str]:
    """The stability check as a table; reports written before it existed have none."""
    if not stability:
        return []
    rows = [
        [
            s["description"],
            fmt(s["same_class"], percent=True),
            fmt(s["alert_changed"], percent=True),
            f"{fmt(s['probability_change_median'])} / {fmt(s['probability_change_p95'])} / "
            f"{fmt(s['probability_change_max'])}",
            f"{fmt(s['accuracy'])} (unchanged: {fmt(s['accuracy_original'])})",
        ]
        for s in stability["perturbations"].values()
    ]
    lines = [
        "## Stability under changes that should not matter",
        "",
        "Each film was changed as below, then preprocessed and classified again. None of these changes "
        "what a radiologist reads in the lungs.",
        "",
    ]
    lines += _table(
        ["change", "same class", "COVID-19 alert flips", "largest probability change: median / p95 / max",
         "accuracy"],
        rows,
    )
    lines += ["", "![stability](stability.png)"]
    flag = stability["unstable"]
    if flag["n"]:
        lines += [
            "",
            f"The portal warns that a result is **unstable** when {flag['rule']}. Here that flags "
            f"{flag['n_flagged']} of {flag['n']} films ({fmt(flag['share_flagged'], percent=True)}). Accuracy on "
            f"flagged films {fmt(flag['accuracy_flagged'])}, on the others {fmt(flag['accuracy_unflagged'])}; "
            f"COVID-19 alert right on flagged films {fmt(flag['alert_correct_flagged'])}, on the others "
            f"{fmt(flag['alert_correct_unflagged'])}.",
        ]
        gate = flag.get("gate")
        if gate:
            lines[-1] += (
                f" The worker runs the check only where a change of {gate['margin']} could move the answer: "
                f"{gate['n_checked']} of {flag['n']} films here ({fmt(gate['share_checked'], percent=True)}), "
                f"missing {gate['n_flagged_missed']} of the {flag['n_flagged']} flags."
            )
    return lines + [""]


def familiarity_lines(familiarity: dict | None) -> list[str]:
    """The familiarity check; models without it (and older reports) have none."""
    if not familiarity:
        return []
    f = familiarity
    lines = [
        "## Familiarity: films unlike the training films",
        "",
        f"A film whose features lie further from the training films than {fmt(f['quantile'], percent=True)} of the "
        f"validation films (score above {f['threshold']:.1f}) is flagged **unfamiliar**: the model's probabilities "
        "were never validated on films like it. Here that flags "
        f"{f['n_flagged']} of {f['n']} films ({fmt(f['flagged_share'], percent=True)}). Accuracy on flagged films "
        f"{fmt(f['accuracy_flagged'])}, on the others {fmt(f['accuracy_familiar'])}.",
        "",
    ]
    rows = [
        [
            source + (" (never seen in training)" if source == f.get("left_out_source") else ""),
            str(s["n"]),
            fmt(s["flagged_share"], percent=True),
            fmt(s["median_score"]),
            fmt(s["accuracy_flagged"]),
            fmt(s["accuracy_familiar"]),
        ]
        for source, s in f["per_source"].items()
    ]
    lines += _table(["source", "images", "flagged", "median score", "accuracy flagged", "accuracy others"], rows)
    if f.get("left_out_auc") is not None:
        lines += [
            "",
            f"The score tells the never-seen collection {f['left_out_source']} from the familiar sources' films "
            f"with AUC {fmt(f['left_out_auc'])}.",
        ]
    return lines + ["", "![familiarity](familiarity.png)", ""]


def write_report(*, metrics: dict, path: Path) -> Path:
    m = metrics
    model = m["model"]
    data = m["data"]
    t = m["threshold"]
    lines = [
        f"# Evaluation: {model['name']} {model['version']} ({model['architecture']})",
        "",
        f"Data: `{data['root']}`"
        + (f", split `{data['split_file']}` subset `{data['subset']}`" if data.get("split_file") else "")
        + f"; {m['n']} images from {data['n_patients']} patients"
        + (f"; {len(m['skipped'])} files skipped (undecodable)" if m["skipped"] else "")
        + ".",
        "Intervals are bootstrap 95% percentile intervals "
        f"({m['bootstrap']['n_resamples']} resamples by {m['bootstrap']['unit']}, seed {m['bootstrap']['seed']}).",
        "",
        "## Headline",
        "",
    ]
    lines += _table(
        ["metric", "value [95% CI]"],
        [
            ["accuracy", fmt(m["accuracy"], m["accuracy_ci"])],
            ["macro AUC (one-vs-rest)", fmt(m["macro_auc"], m["macro_auc_ci"])],
            [f"ECE ({m['ece_bins']} bins, calibrated, T = {model['temperature']:.3f})", fmt(m["ece"], m["ece_ci"])],
            ["ECE before temperature scaling", fmt(m["ece_uncalibrated"])],
            [
                f"{t['class']} sensitivity at threshold {t['value']:.3f}",
                fmt(t["sensitivity"], t["sensitivity_ci"]),
            ],
            [f"{t['class']} specificity at threshold", fmt(t["specificity"])],
        ],
    )
    lines += ["", "## Per class", ""]
    lines += _table(["class", "n", "precision", "recall", "F1", "AUC [95% CI]"], per_class_rows(m))
    lines += ["", "## Confusion matrix (rows true, columns predicted)", ""]
    lines += _table(["true \\ predicted"] + m["classes"], confusion_rows(m))
    lines += ["", "![confusion matrix](confusion_matrix.png) ![ROC](roc_curves.png) ![reliability](reliability.png)", ""]
    if m.get("per_source"):
        lines += ["## Per source", ""]
        rows = []
        for source, s in m["per_source"].items():
            counts = ", ".join(f"{k} {v}" for k, v in s["class_counts"].items() if v)
            rows.append(
                [
                    source,
                    f"{s['n']} ({counts})",
                    fmt(s["accuracy"], s["accuracy_ci"]),
                    fmt(s["per_class"][t["class"]]["auc"]),
                    fmt(s["threshold"]["sensitivity"]),
                    fmt(s["threshold"]["specificity"]),
                ]
            )
        lines += _table(
            ["source", "images", "accuracy [95% CI]", f"{t['class']} AUC", "sensitivity", "specificity"], rows
        )
        lines += [
            "",
            "Within one source the classes are few (nih has no COVID-19, cxnet only COVID-19), so most AUCs per "
            "source are undefined; accuracy per source shows whether errors concentrate in one collection.",
            "",
        ]
    lines += ["## Shortcut audit", ""]
    lines += audit_lines(m["shortcut_audit"])
    lines += stability_lines(m.get("stability"))
    lines += familiarity_lines(m.get("familiarity"))
    if m["notes"]:
        lines += ["## Notes", ""] + [f"- {note}" for note in m["notes"]] + [""]
    path.write_text("\n".join(lines) + "\n")
    return path

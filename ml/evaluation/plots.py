"""Evaluation plots written as PNG files.

Matplotlib's object API on an Agg canvas: no pyplot, so no global figure
state, no GUI backend, and it is safe in a worker process or a test run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ml.evaluation.metrics import CalibrationResult, RocCurve

_DPI = 110


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=_DPI)
    return path


def plot_confusion_matrix(
    *, matrix: np.ndarray, class_names: Sequence[str], path: Path, title: str = "Confusion matrix"
) -> Path:
    """Counts, with the row-normalised share (recall per true class) beside each."""
    matrix = np.asarray(matrix)
    row_totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, row_totals, out=np.zeros(matrix.shape, dtype=float), where=row_totals > 0)
    figure = Figure(figsize=(4.6, 4.0))
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of true class")
    for row in range(matrix.shape[0]):
        for column in range(matrix.shape[1]):
            colour = "white" if shares[row, column] > 0.6 else "black"
            axes.text(
                column,
                row,
                f"{matrix[row, column]}\n{shares[row, column]:.0%}",
                ha="center",
                va="center",
                color=colour,
                fontsize=9,
            )
    axes.set_xticks(range(len(class_names)), labels=class_names)
    axes.set_yticks(range(len(class_names)), labels=class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    return _save(figure, path)


def plot_roc_curves(
    *, curves: Sequence[RocCurve], class_names: Sequence[str], path: Path, title: str = "One-vs-rest ROC"
) -> Path:
    figure = Figure(figsize=(4.6, 4.2))
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="chance")
    for curve, name in zip(curves, class_names, strict=True):
        if curve.auc is None:
            # Nothing to draw; say so in the legend rather than dropping the class silently.
            axes.plot([], [], label=f"{name}: AUC n/a (no positives or negatives)")
            continue
        axes.plot(curve.false_positive_rate, curve.true_positive_rate, label=f"{name}: AUC {curve.auc:.3f}")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_xlabel("false positive rate (1 - specificity)")
    axes.set_ylabel("true positive rate (sensitivity)")
    axes.set_title(title)
    axes.legend(loc="lower right", fontsize=8)
    return _save(figure, path)


def plot_reliability_diagram(
    *, calibration: CalibrationResult, path: Path, title: str = "Reliability (top-label)"
) -> Path:
    """Per-bin accuracy against mean confidence, with bin counts underneath."""
    figure = Figure(figsize=(4.6, 5.0))
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    edges = np.asarray(calibration.bin_edges)
    width = edges[1] - edges[0]
    centres = edges[:-1] + width / 2
    accuracy = np.array([np.nan if a is None else a for a in calibration.bin_accuracy])
    confidence = np.array([np.nan if c is None else c for c in calibration.bin_confidence])
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="perfect calibration")
    top.bar(centres, np.nan_to_num(accuracy), width=width * 0.9, color="tab:blue", alpha=0.7, label="accuracy")
    filled = ~np.isnan(confidence)
    top.plot(confidence[filled], accuracy[filled], marker="o", color="tab:red", linewidth=1, label="accuracy at mean confidence")
    ece_text = "n/a" if calibration.ece is None else f"{calibration.ece:.3f}"
    top.set_title(f"{title}, ECE {ece_text} ({calibration.n_bins} bins)")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, calibration.bin_counts, width=width * 0.9, color="tab:grey")
    bottom.set_xlabel("confidence (highest probability)")
    bottom.set_ylabel("images")
    bottom.set_xlim(0, 1)
    return _save(figure, path)


def plot_stability(*, changes: dict[str, np.ndarray], path: Path, title: str = "Stability") -> Path:
    """For each change to the films: the share of films whose answer moved by more than x (x: probability)."""
    figure = Figure(figsize=(5.6, 4.2))
    axes = figure.subplots()
    grid = np.linspace(0.0, 0.5, 201)
    for label, values in changes.items():
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            continue
        share_above = (values[None, :] > grid[:, None]).mean(axis=1)
        axes.plot(grid, share_above, linewidth=1.5, label=f"{label} (max {values.max():.2f})")
    axes.set_xlabel("largest change of any class probability")
    axes.set_ylabel("share of films changed by more")
    axes.set_xlim(0, 0.5)
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.set_title(title)
    axes.legend(loc="upper right", fontsize=8)
    return _save(figure, path)


def plot_familiarity(
    *, scores_by_source: dict[str, list[float]], threshold: float, path: Path,
    left_out_source: str | None = None, title: str = "Familiarity",
) -> Path:
    """Distribution of familiarity scores per source, on a log axis, with the threshold above which films are flagged."""
    figure = Figure(figsize=(5.6, 4.2))
    axes = figure.subplots()
    everything = np.concatenate([np.asarray(v, dtype=np.float64) for v in scores_by_source.values() if len(v)])
    low = max(float(everything.min()), 1e-6)
    high = max(float(everything.max()), threshold) * 1.05
    edges = np.geomspace(low, high, 41)
    for source, values in scores_by_source.items():
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            continue
        label = f"{source} (never seen in training)" if source == left_out_source else source
        flagged = float((values > threshold).mean())
        axes.hist(values, bins=edges, histtype="step", linewidth=1.5, density=True,
                  label=f"{label}: {flagged:.0%} flagged, n={values.size}")
    axes.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.0f}")
    axes.set_xscale("log")
    axes.set_xlabel("distance to the training films (squared Mahalanobis)")
    axes.set_ylabel("density")
    axes.grid(alpha=0.3)
    axes.set_title(title)
    axes.legend(loc="upper right", fontsize=7)
    return _save(figure, path)


def _monitoring_figure(checks: Sequence) -> Figure:
    """Each site rate (ml.serving.monitoring.Check) with its 95% interval against the validation rate; alarms in red."""
    rows = [check for check in checks if check.site_n and check.reference_n]
    figure = Figure(figsize=(7.0, 0.45 * max(len(rows), 1) + 1.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for position, check in enumerate(rows):
        low, high = check.site_interval
        colour = "#b02a37" if check.status == "alarm" else "#0d6efd"
        axes.plot([low, high], [position, position], color=colour, linewidth=2)
        axes.plot(check.site_rate, position, "o", color=colour,
                  label="this site (95% interval)" if position == 0 else None)
        if check.reference_interval is not None:
            axes.plot(check.reference_interval, [position + 0.25] * 2, color="#adb5bd", linewidth=2)
        axes.plot(check.reference_rate, position, "|", color="black", markersize=14,
                  label="validation (grey: 95% interval; warnings at this site's mix\nof predicted classes) or limit"
                  if position == 0 else None)
    axes.set_yticks(range(len(rows)), [check.code for check in rows])
    axes.invert_yaxis()
    axes.set_xlim(0.0, 1.0)
    axes.set_xlabel("share of films")
    if rows:  # below the axes, where it hides no check
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize="small")
    else:
        axes.text(0.5, 0.5, "no results yet", ha="center", va="center", transform=axes.transAxes)
    figure.tight_layout()
    return figure


def monitoring_chart_svg(checks: Sequence) -> str:
    """The site monitor's checks as an inline SVG (the portal's monitor page)."""
    import io

    import matplotlib

    buffer = io.StringIO()
    # "tight" grows the picture to hold the legend below the axes, which tight_layout leaves outside; text stays
    # text (in the page's font, readable by a screen reader) instead of outlines.
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        _monitoring_figure(checks).savefig(buffer, format="svg", bbox_inches="tight")
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]


def plot_monitoring(checks: Sequence, path: Path) -> Path:
    """The site monitor's checks as a PNG (``python -m ml monitor --simulate``: the whole collection, all confirmed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _monitoring_figure(checks).savefig(path, dpi=_DPI, bbox_inches="tight")
    return path

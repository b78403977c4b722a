"""Training and validation accuracy per epoch of ml.accel_train members, one panel per architecture.

    python scripts/plot_member_histories.py --members runs/gpu2/sepres-wide runs/gpu2/sepres-large \
        runs/gpu2/seed --group main --out docs/model-eval/capacity/learning_curves.png

Training accuracy is measured on augmented films (as Keras reports it while fitting), validation accuracy
on the untouched validation films. A gap that opens while validation stays flat means the network fits
the training films it sees without learning more that carries over: more capacity will not help.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=Path, nargs="+", required=True, help="ml.accel_train output folders")
    parser.add_argument("--group", default="main")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    summaries = [json.loads((folder / "members.json").read_text()) for folder in args.members]
    figure, axes = plt.subplots(1, len(summaries), figsize=(4.2 * len(summaries), 3.6), sharey=True, squeeze=False)
    for axis, summary in zip(axes[0], summaries):
        for index, member in enumerate(summary["groups"].get(args.group) or []):
            history, colour = member["history"], f"C{index}"
            epochs = range(1, len(history["accuracy"]) + 1)
            axis.plot(epochs, history["accuracy"], color=colour, linestyle="--",
                      label=f"seed {member['seed']}: training (augmented)")
            axis.plot(epochs, history["val_accuracy"], color=colour, label=f"seed {member['seed']}: validation")
            axis.axvline(member["best_epoch"], color=colour, linewidth=0.8, alpha=0.5)
        axis.set_title(f"{summary['architecture']} ({summary['input_size']} px lung input)")
        axis.set_xlabel("epoch (vertical line: weights kept)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("accuracy")
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

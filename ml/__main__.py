"""One command line for ml/: ``python -m ml <command> [options]``; ``python -m ml <command> --help`` shows an example.

A new command is one line in ``COMMANDS``: its name, the ``main(argv) -> int`` that runs it, and what it does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from ml.evaluation import evaluate, monitor_replay
from ml.training import adapt, export, familiarity, recalibrate, segmenter, train

COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "train": (train.main, "train a classifier and write a complete artifact folder"),
    "evaluate": (evaluate.main, "measure an artifact on labelled films (metrics.json, report.md, plots)"),
    "recalibrate": (recalibrate.main, "refit the temperature and the COVID-19 threshold on a site's labelled films"),
    "familiarity": (familiarity.main, "fit the 'unfamiliar' warning into an artifact, or measure it (--shifts)"),
    "monitor": (monitor_replay.main, "store the site monitor's reference in an artifact, or replay a stream (--simulate)"),
    "export": (export.main, "add the heatmap model (cam.tflite) to an artifact"),
    "segmenter": (segmenter.main, "train the lung segmenter preprocessing crops to"),
    "adapt": (adapt.main, "fit a site-adapted candidate from an artifact and the site's labelled films"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name:<{width}}  {summary}" for name, (_main, summary) in COMMANDS.items()]
    return "usage: python -m ml <command> [options]\n\ncommands:\n" + "\n".join(lines) + (
        "\n\n'python -m ml <command> --help' shows a command's options and an example.")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, *rest = argv
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    run, _summary = COMMANDS[command]
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())

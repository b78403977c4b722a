"""The options the ``python -m ml`` commands share. Here, in the lowest layer, so that evaluation and training
commands can both import them (.importlinter)."""

import argparse
from pathlib import Path

LABELLED_FOLDERS_HELP = "folder with covid/normal/pneumonia subfolders"
SPLIT_DATA_ROOT_HELP = "the data root its split.json was made from"


def add_model_and_data_arguments(parser: argparse.ArgumentParser, *, model_help: str,
                                 data_help: str = LABELLED_FOLDERS_HELP, data_required: bool = True) -> None:
    """--model, the artifact folder the command reads (always required), and --data, the films it reads with it
    (None when optional and not given)."""
    parser.add_argument("--model", required=True, type=Path, help=model_help)
    parser.add_argument("--data", required=data_required, type=Path, default=None, help=data_help)

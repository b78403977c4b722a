"""Turn members trained by ``ml.accel_train`` into one calibrated artifact.

    python -m ml.ensemble --members runs/accel [runs/accel-more ...] --group main --count 5 \
        --data ../shared/data/cxr --split-file ml/artifacts/dev_split.json \
        --out runs/ens5 --name cxr-sepres-wide-ens5 --version 1

The members' logits are averaged in one Keras network (``build_ensemble``);
temperature and COVID-19 threshold are then fitted on the group's validation
films, decoded and preprocessed here exactly as the portal does, and the
artifact is written by the same code as ``ml.train``'s. For a ``loso-<source>``
group the artifact is a leave-one-source-out run: ``--collect-loso`` and
``ml.evaluate --subset loso`` treat it like one from ``ml.train --leave-out-source``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np


def load_members(*, members_dirs: list[Path], group: str, architecture: str, input_size: int,
                 count: int | None, skip: int = 0) -> list:
    """``count`` members of ``group`` (all when None) after the first ``skip``, as Keras models.

    Members are taken folder by folder in the order given (``ml.accel_train``
    runs that trained more members of a group, e.g. with ``--first-seed``).
    """
    from ml.architectures import build_model

    weights = []
    for members_dir in members_dirs:
        path = Path(members_dir) / f"{group}.npz"
        if not path.exists():
            continue
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
        for member in sorted({int(key.split("_")[0][1:]) for key in arrays}):
            prefix = f"m{member}_w"
            weights.append([arrays[key] for key in sorted(k for k in arrays if k.startswith(prefix))])
    if count is not None and skip + count > len(weights):
        raise ValueError(f"{group}: {count} members asked for after skipping {skip}, {len(weights)} trained")
    weights = weights[skip:] if count is None else weights[skip:skip + count]
    models = []
    for member_weights in weights:
        model = build_model(architecture=architecture, input_size=input_size)
        model.set_weights(member_weights)
        models.append(model)
    return models


def main(argv: list[str] | None = None) -> int:
    from ml.datasets import default_data_dir, load_dataset, load_split
    from ml.preprocess import PreprocessConfig, preprocess_batch
    from ml.train import (
        REPO_ROOT,
        configure_tensorflow,
        label_array,
        load_films,
        training_parts,
        write_artifact,
    )

    parser = argparse.ArgumentParser(prog="python -m ml.ensemble", description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=Path, nargs="+", required=True,
                        help="ml.accel_train's output folder(s); members are taken in the order given")
    parser.add_argument("--group", default="main", help="main or loso-<source>")
    parser.add_argument("--count", type=int, default=None, help="use the first COUNT members (default: all)")
    parser.add_argument("--skip", type=int, default=0,
                        help="leave out the first SKIP members (--skip 1 --count 1: the second member alone)")
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--manifest", type=Path, default=None)
    parser.add_argument("--split-file", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default=None)
    parser.add_argument("--version", default="1")
    parser.add_argument("--target-sensitivity", type=float, default=0.95)
    parser.add_argument("--threshold-confidence", type=float, default=0.95)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "runs" / "cache")
    args = parser.parse_args(argv)

    started = time.time()
    summaries = [json.loads((folder / "members.json").read_text()) for folder in args.members]
    summary = summaries[0]
    for folder, other in zip(args.members[1:], summaries[1:]):
        if (other["architecture"], other["preprocessing"]) != (summary["architecture"], summary["preprocessing"]):
            parser.error(f"{folder} holds another architecture or preprocessing than {args.members[0]}")
    trained = [member for other in summaries for member in other["groups"].get(args.group) or []]
    if not trained:
        parser.error(f"no members of group {args.group!r} in {', '.join(map(str, args.members))}")
    members_info = trained[args.skip:args.skip + args.count] if args.count else trained[args.skip:]
    if not members_info:
        parser.error(f"{len(trained)} members of group {args.group!r}: none left after skipping {args.skip}")
    config = PreprocessConfig.from_dict(summary["preprocessing"])
    leave_out = args.group.removeprefix("loso-") if args.group.startswith("loso-") else None

    samples = load_dataset(args.data, args.manifest)
    split = load_split(args.split_file)
    train_samples, val_samples, test_samples = training_parts(samples=samples, split=split, leave_out_source=leave_out)
    if len(train_samples) != members_info[0]["n_train"] or len(val_samples) != members_info[0]["n_val"]:
        parser.error(
            f"the members were trained on {members_info[0]['n_train']}/{members_info[0]['n_val']} train/val films, "
            f"but this split gives {len(train_samples)}/{len(val_samples)}: another split or data folder?"
        )
    configure_tensorflow(threads=args.threads, seed=0)
    from ml.architectures import build_ensemble, has_pooled_head

    members = load_members(
        members_dirs=args.members, group=args.group, architecture=summary["architecture"],
        input_size=config.input_size, count=len(members_info), skip=args.skip,
    )
    # One member without a pooled head (the seed's flatten) is served as it is; averaging needs one.
    model = members[0] if len(members) == 1 and not has_pooled_head(members[0]) else build_ensemble(members)
    # Only the films calibration and the test metrics need: the members never see the rest here.
    val_inputs = preprocess_batch(load_films(val_samples, cache_dir=args.cache_dir), config)
    test_inputs = preprocess_batch(load_films(test_samples, cache_dir=args.cache_dir), config)
    val_labels, test_labels = label_array(val_samples), label_array(test_samples)
    # A member used alone is that network; an averaged one is named by its member count.
    architecture = summary["architecture"]
    if model is not members[0]:
        architecture = f"{architecture}-ensemble{len(members)}"
    info = {
        "ensemble_of": len(members),
        "members": [{key: m[key] for key in ("member", "seed", "epochs", "best_epoch", "best_val_loss", "seconds")}
                    for m in members_info],
        "member_architecture": summary["architecture"],
        "trained_by": f"ml.accel_train (Keras {summary['backend']} backend)",
        **summary["recipe"],
        "n_train": len(train_samples),
        "data_root": str(args.data),
        "manifest": str(args.manifest) if args.manifest else None,
        "leave_out_source": leave_out,
        "test_sources": sorted({s.source for s in test_samples}),
    }
    val_metrics, test_metrics = write_artifact(
        model=model, out_dir=args.out, architecture=architecture, config=config,
        val_inputs=val_inputs, val_labels=val_labels, name=args.name or f"cxr-{architecture}", version=args.version,
        target_sensitivity=args.target_sensitivity, threshold_confidence=args.threshold_confidence or None,
        history={f"member{index + 1}": m["history"] for index, m in enumerate(members_info)}, info=info,
        split_data=asdict(split), test_inputs=test_inputs, test_labels=test_labels, started=started,
    )
    print(json.dumps({"val": val_metrics, "test": test_metrics}, indent=1))
    print(f"wrote {args.out} in {time.time() - started:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

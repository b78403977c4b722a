"""Train ensemble members from a pack (``ml.pack``) on an accelerator machine.

    KERAS_BACKEND=jax python -m ml.accel_train --pack runs/pack/cxr160.npz --out runs/accel \
        --groups main loso-cohen loso-cxnet loso-nih --members 5 --budget-s 420

The recipe is ``ml.train``'s (Adam 1e-3, batch 32, class weights, early
stopping on validation loss with the best weights restored, learning rate
halved on plateaus, the STRONG augmentation), with two differences the pack
forces: film augmentation acts on the lung frame (the crop at model-input
size) instead of on the 512 px film, and the lung mask is the un-augmented
film's. Validation inputs are exactly ``preprocess``'s.

Members are trained round-robin (member 1 of every group, then member 2, ...)
until the time budget is spent, so the groups end with equal numbers of
members, give or take one. After each member ``OUT/<group>.npz`` (weights)
and ``OUT/members.json`` (seeds, histories, timings) are rewritten: a run
stopped at its time limit keeps every member it finished. ``python -m
ml.ensemble`` turns the members into an artifact on the serving machine.

Keras runs on whichever backend ``KERAS_BACKEND`` names; nothing here needs
TensorFlow. The augmentation workers are forked before Keras is imported.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

from ml.architectures import ARCHITECTURES
from ml.augment import STRONG, augment_film, augment_geometry
from ml.pack import Pack, load_pack
from ml.train import class_weights

_PACK: Pack | None = None  # the workers' copy, inherited through fork


def _augmented_batch(task: tuple[list[int], int]) -> np.ndarray:
    """Augmented model inputs for one batch (runs in a worker)."""
    indices, seed = task
    rng = np.random.default_rng(seed)
    pack = _PACK
    size = pack.config.input_size
    out = np.empty((len(indices), size, size, 1), np.float32)
    for row, index in enumerate(indices):
        film = augment_film(pack.frames[index].astype(np.float32) / 255.0, rng)
        out[row] = augment_geometry(pack.model_input(index, film), rng, STRONG)
    return out


class _InlinePool:
    """``Pool``'s imap and terminate, in this process."""

    imap = staticmethod(map)

    def terminate(self) -> None:
        pass


def _batches(*, pool, labels: np.ndarray, train: np.ndarray, batch_size: int, weights: np.ndarray, seed: int):
    """Endless (inputs, labels, sample weights) batches; the next epoch is augmented while this one trains."""
    rng = np.random.default_rng(seed)

    def epoch():
        order = rng.permutation(train)
        tasks = [
            (order[start:start + batch_size].tolist(), int(rng.integers(2**63 - 1)))
            for start in range(0, len(order), batch_size)
        ]
        return tasks, pool.imap(_augmented_batch, tasks)

    current = epoch()
    while True:
        following = epoch()
        tasks, results = current
        for (indices, _seed), inputs in zip(tasks, results):
            y = labels[indices]
            yield inputs, y, weights[y].astype(np.float32)
        current = following


def main(argv: list[str] | None = None) -> int:
    global _PACK
    parser = argparse.ArgumentParser(prog="python -m ml.accel_train", description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--architecture", choices=ARCHITECTURES, default="sepres-wide")
    parser.add_argument("--groups", nargs="+", default=["main"])
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=101)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--budget-s", type=float, default=None, help="start no member after this many seconds")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2),
                        help="augmentation processes (0: augment in this process)")
    args = parser.parse_args(argv)

    started = time.time()
    _PACK = pack = load_pack(args.pack)
    unknown = [g for g in args.groups if g not in pack.groups]
    if unknown:
        parser.error(f"groups {unknown} not in the pack ({sorted(pack.groups)})")
    # Fork the workers before Keras starts any thread; 0 workers augments in this process.
    pool = multiprocessing.get_context("fork").Pool(args.workers) if args.workers > 0 else _InlinePool()

    import keras

    from ml.architectures import build_model

    print(f"backend {keras.backend.backend()} keras {keras.__version__}; pack {len(pack.keys)} films; "
          f"loaded in {time.time() - started:.1f}s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    summary_path = args.out / "members.json"
    summary = {
        "architecture": args.architecture, "input_size": pack.config.input_size,
        "preprocessing": pack.config.to_dict(), "pack_info": pack.info, "backend": keras.backend.backend(),
        "recipe": {
            "optimizer": "Adam", "learning_rate": args.learning_rate, "batch_size": args.batch_size,
            "max_epochs": args.epochs, "patience": args.patience, "augmentation": STRONG.to_dict(),
            "film_augmentation_on": "lung frame at model-input size (ml.pack)",
        },
        "groups": {group: [] for group in args.groups},
    }
    weights_by_group: dict[str, dict[str, np.ndarray]] = {group: {} for group in args.groups}
    val_inputs = {group: pack.model_inputs(pack.groups[group]["val"]) for group in args.groups}
    model = None
    for member in range(args.members):
        for group in args.groups:
            if args.budget_s is not None and time.time() - started > args.budget_s:
                print(f"budget of {args.budget_s:.0f}s spent: stopping before {group} member {member}", flush=True)
                pool.terminate()
                return 0
            seed = args.first_seed + member
            member_started = time.time()
            keras.utils.set_random_seed(seed)
            fresh = build_model(architecture=args.architecture, input_size=pack.config.input_size)
            if model is None:
                model = fresh
                model.compile(
                    optimizer=keras.optimizers.Adam(args.learning_rate),
                    loss=keras.losses.SparseCategoricalCrossentropy(),
                    metrics=["accuracy"],
                )
            else:
                # Reuse the compiled model (no recompilation): fresh weights and a reset optimiser.
                model.set_weights(fresh.get_weights())
                for variable in model.optimizer.variables:
                    variable.assign(np.zeros(variable.shape, variable.dtype))
                model.optimizer.learning_rate = args.learning_rate
            train = np.asarray(pack.groups[group]["train"])
            val = pack.groups[group]["val"]
            batches = _batches(
                pool=pool, labels=pack.labels, train=train, batch_size=args.batch_size,
                weights=np.array(list(class_weights(pack.labels[train]).values()), np.float32), seed=seed,
            )
            history = model.fit(
                batches,
                steps_per_epoch=int(np.ceil(len(train) / args.batch_size)),
                validation_data=(val_inputs[group], pack.labels[val]),
                epochs=args.epochs,
                shuffle=False,  # the batches come shuffled
                callbacks=[
                    keras.callbacks.EarlyStopping(monitor="val_loss", patience=args.patience, restore_best_weights=True),
                    keras.callbacks.ReduceLROnPlateau(
                        monitor="val_loss", factor=0.5, patience=max(2, args.patience // 2), min_lr=1e-5),
                ],
                verbose=2,
            )
            history_data = {key: [float(v) for v in values] for key, values in history.history.items()}
            for index, array in enumerate(model.get_weights()):
                weights_by_group[group][f"m{member}_w{index:03d}"] = np.asarray(array)
            np.savez(args.out / f"{group}.npz", **weights_by_group[group])
            best = int(np.argmin(history_data["val_loss"]))
            summary["groups"][group].append({
                "member": member, "seed": seed, "epochs": len(history_data["loss"]), "best_epoch": best + 1,
                "best_val_loss": history_data["val_loss"][best], "best_val_accuracy": history_data["val_accuracy"][best],
                "n_train": len(train), "n_val": len(val), "seconds": round(time.time() - member_started, 1),
                "history": history_data,
            })
            summary["seconds"] = round(time.time() - started, 1)
            summary_path.write_text(json.dumps(summary, indent=1) + "\n")
            print(f"[{time.time() - started:6.0f}s] {group} member {member} (seed {seed}): "
                  f"{len(history_data['loss'])} epochs, best val_loss {history_data['val_loss'][best]:.4f} "
                  f"val_accuracy {history_data['val_accuracy'][best]:.3f} in {time.time() - member_started:.0f}s",
                  file=sys.stderr, flush=True)
    pool.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

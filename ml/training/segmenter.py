"""Train the lung segmenter (a small U-Net on the V7 lung masks) that preprocessing crops to and masks with.

    python -m ml segmenter --data ../shared/data/cxr --out ml/artifacts/lung_segmenter
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ml.evaluation.datasets import decode_file, default_data_dir
from ml.serving.pixels import resize
from ml.serving.segmentation import METADATA_FILE, MODEL_FILE, SEGMENTER_INPUT, segmenter_dir, segmenter_input
from ml.training.augment import STRONG, augment_film, augment_geometry
from ml.training.export import export_tflite, max_tflite_difference
from ml.training.keras_setup import configure_tensorflow


def build_unet(*, input_size: int = SEGMENTER_INPUT):
    import keras

    def block(x, filters: int, name: str):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv1")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn1")(x)
        x = keras.layers.ReLU(name=f"{name}_relu1")(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn2")(x)
        return keras.layers.ReLU(name=f"{name}_relu2")(x)

    inputs = keras.Input((input_size, input_size, 1), name="image")
    skips = []
    x = inputs
    for level, filters in enumerate((8, 16, 24)):
        x = block(x, filters, f"down{level}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = block(x, 32, "bottom")
    for level, filters in reversed(list(enumerate((8, 16, 24)))):
        x = keras.layers.UpSampling2D(2, name=f"up{level}")(x)
        x = keras.layers.Concatenate(name=f"concat{level}")([x, skips[level]])
        x = block(x, filters, f"decode{level}")
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid", name="lung_probability")(x)
    return keras.Model(inputs, outputs, name="lung_unet")


def _load_masked_films(data_dir: Path) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:

    films, masks, names = [], [], []
    with open(data_dir / "lung_masks" / "index.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            films.append(decode_file(data_dir / row["file"]))
            mask = np.asarray(Image.open(data_dir / "lung_masks" / row["mask"]).convert("L")) >= 128
            masks.append(mask)
            names.append(row["file"])
    return films, masks, names


def _training_pair(film: np.ndarray, mask: np.ndarray, rng: np.random.Generator, *, augment: bool):

    if augment:
        film = augment_film(film, rng)
    image = segmenter_input(film)
    target = resize(mask.astype(np.float32), height=SEGMENTER_INPUT, width=SEGMENTER_INPUT)
    if augment:
        state = rng.bit_generator.state
        image = augment_geometry(image, rng, STRONG)
        rng.bit_generator.state = state  # the same transform for the mask
        target = augment_geometry(target, rng, STRONG)
    return image[..., None], (target >= 0.5).astype(np.float32)[..., None]


def dice_score(predicted: np.ndarray, reference: np.ndarray) -> float:
    predicted, reference = predicted.astype(bool), reference.astype(bool)
    total = predicted.sum() + reference.sum()
    return float(2 * (predicted & reference).sum() / total) if total else 1.0


def train_segmenter(*, data_dir: Path, out_dir: Path, epochs: int, seed: int, threads: int = 2) -> dict:

    configure_tensorflow(threads=threads, seed=seed)
    import keras
    import tensorflow as tf


    films, masks, names = _load_masked_films(data_dir)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(films))
    val_count = len(films) // 7
    val_index, train_index = order[:val_count], order[val_count:]
    val_pairs = [_training_pair(films[i], masks[i], rng, augment=False) for i in val_index]
    val_x = np.stack([p[0] for p in val_pairs])
    val_y = np.stack([p[1] for p in val_pairs])

    class Batches(keras.utils.PyDataset):
        def __len__(self) -> int:
            return int(np.ceil(len(train_index) / 16))

        def __getitem__(self, index: int):
            picked = rng.choice(train_index, size=16, replace=False)
            pairs = [_training_pair(films[i], masks[i], rng, augment=True) for i in picked]
            return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def loss(y_true, y_pred):
        bce = keras.losses.binary_crossentropy(y_true, y_pred)
        overlap = tf.reduce_sum(y_true * y_pred, axis=(1, 2, 3))
        total = tf.reduce_sum(y_true + y_pred, axis=(1, 2, 3))
        return tf.reduce_mean(bce, axis=(1, 2)) + 1.0 - (2.0 * overlap + 1.0) / (total + 1.0)

    model = build_unet()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss)
    started = time.time()
    history = model.fit(
        Batches(), validation_data=(val_x, val_y), epochs=epochs, verbose=2,
        callbacks=[
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=4, min_lr=1e-4),
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True),
        ],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    export_tflite(keras_model=model, path=out_dir / MODEL_FILE)
    model.save(out_dir / "segmenter.keras")
    predicted = model.predict(val_x, verbose=0) >= 0.5
    dices = [dice_score(p[..., 0], t[..., 0]) for p, t in zip(predicted, val_y)]
    metadata = {
        "input_size": SEGMENTER_INPUT,
        "threshold": 0.5,
        "trained_on": "V7 lung masks of 316 Cohen COVID-19 films (lung_masks/index.csv)",
        "val_images": [names[i] for i in val_index],
        "val_dice_mean": float(np.mean(dices)),
        "val_dice_min": float(np.min(dices)),
        "epochs": len(history.history["loss"]),
        "seed": seed,
        "seconds": round(time.time() - started, 1),
        "tflite_max_abs_difference": max_tflite_difference(
            keras_model=model, tflite_path=out_dir / MODEL_FILE, inputs=val_x[:4]
        ),
    }
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=1) + "\n")
    return metadata


EXAMPLE = """example:
    python -m ml segmenter --data ../shared/data/cxr --out ml/artifacts/lung_segmenter
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ml segmenter", description=__doc__.splitlines()[0], epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=segmenter_dir("lung_segmenter"))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    metadata = train_segmenter(data_dir=args.data, out_dir=args.out, epochs=args.epochs, seed=args.seed, threads=args.threads)
    print(json.dumps({k: v for k, v in metadata.items() if k != "val_images"}, indent=1), file=sys.stderr)
    return 0

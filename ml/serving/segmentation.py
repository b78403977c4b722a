"""Lung-field segmentation used by preprocessing to crop to, and mask, the lungs.

Why: in the development pool the class is confounded with the source
(SOURCES.md), and sources differ mostly outside the lungs (borders, burnt-in
text, collimation, devices). A classifier that only ever sees the lung
fields cannot use those. The segmenter is a small U-Net trained on the 316
V7 lung masks (Cohen COVID-19 images only: see lung_masks/README.md; that is
fine here because the segmenter never sees the class and its output is only
a region, not a feature).

Note for ml.lungs / the shortcut audit: with ``mask_outside_lungs`` the
model input is exactly 0 outside the segmented lungs; ``preprocess_with_lung_mask``
in ml.preprocess returns that mask in the model's frame.

Train: ``python -m ml.segmentation --data ../shared/data/cxr --out ml/artifacts/lung_segmenter``
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
SEGMENTER_INPUT = 96
MODEL_FILE = "segmenter.tflite"
METADATA_FILE = "segmenter.json"
# Below this share of the frame the segmentation has failed (blank or
# occluded film); the fixed anatomical prior is used instead.
MIN_LUNG_FRACTION = 0.05


def segmenter_dir(name: str) -> Path:
    """Folder of a named segmenter: $CXR_SEGMENTER_ROOT/<name> or ml/artifacts/<name>."""
    root = Path(os.environ.get("CXR_SEGMENTER_ROOT", REPO_ROOT / "ml" / "artifacts"))
    return root / name


def _segmenter_input(pixels: np.ndarray) -> np.ndarray:
    from ml.preprocess import equalize_histogram, resize

    small = resize(np.asarray(pixels, dtype=np.float32), height=SEGMENTER_INPUT, width=SEGMENTER_INPUT)
    return equalize_histogram(small)


def _square_filter(mask: np.ndarray, size: int, combine) -> np.ndarray:
    """Erosion (``np.logical_and``) or dilation (``np.logical_or``) by a size x size square.

    Same result as Pillow's MinFilter/MaxFilter on a 0/255 image (edges
    replicated), in a fraction of the time: separable, rows then columns.
    """
    reach = size // 2
    padded = np.pad(mask, reach, mode="edge")
    height, width = mask.shape
    rows = padded[:, reach:reach + width].copy()
    for offset in range(size):
        if offset != reach:
            rows = combine(rows, padded[:, offset:offset + width])
    out = rows[reach:reach + height].copy()
    for offset in range(size):
        if offset != reach:
            out = combine(out, rows[offset:offset + height])
    return out


@dataclass
class LungSegmenter:
    interpreter: object
    threshold: float = 0.5

    @classmethod
    def load(cls, folder: Path) -> "LungSegmenter":
        from ml.export import make_interpreter

        metadata = json.loads((folder / METADATA_FILE).read_text())
        return cls(interpreter=make_interpreter(folder / MODEL_FILE, threads=1), threshold=float(metadata.get("threshold", 0.5)))

    def probability_map(self, pixels: np.ndarray) -> np.ndarray:
        from ml.export import run_interpreter

        return run_interpreter(self.interpreter, _segmenter_input(pixels)[..., None])[..., 0]

    def mask(self, pixels: np.ndarray) -> np.ndarray:
        """Boolean lung mask at the film's own size."""
        return self.segment(pixels)[0]

    def segment(self, pixels: np.ndarray) -> tuple[np.ndarray, bool]:
        """The lung mask and whether the lungs were found (False: the fixed anatomical prior stands in)."""
        height, width = pixels.shape
        small = self.probability_map(pixels) >= self.threshold
        # Opening removes specks; the final dilation keeps the lung edge (pleura) inside.
        small = _square_filter(_square_filter(_square_filter(small, 3, np.logical_and), 3, np.logical_or), 5, np.logical_or)
        image = Image.fromarray((small * 255).astype(np.uint8), mode="L")
        mask = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR)) >= 128
        if mask.mean() < MIN_LUNG_FRACTION:
            from ml.lungs import prior_lung_mask

            return np.array(prior_lung_mask(height=height, width=width)), False
        return mask, True


@lru_cache(maxsize=4)
def load_segmenter(name: str) -> LungSegmenter:
    """Loaded once per process, like the classifier."""
    return LungSegmenter.load(segmenter_dir(name))


def segment_lungs(pixels: np.ndarray, *, segmenter: str) -> tuple[np.ndarray, bool]:
    """The lung mask, and whether the segmenter found the lungs (``LungSegmenter.segment``)."""
    return load_segmenter(segmenter).segment(pixels)


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
    from ml.datasets import decode_file

    films, masks, names = [], [], []
    with open(data_dir / "lung_masks" / "index.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            films.append(decode_file(data_dir / row["file"]))
            mask = np.asarray(Image.open(data_dir / "lung_masks" / row["mask"]).convert("L")) >= 128
            masks.append(mask)
            names.append(row["file"])
    return films, masks, names


def _training_pair(film: np.ndarray, mask: np.ndarray, rng: np.random.Generator, *, augment: bool):
    from ml.augment import STRONG, augment_film, augment_geometry
    from ml.preprocess import resize

    if augment:
        film = augment_film(film, rng)
    image = _segmenter_input(film)
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
    from ml.train import configure_tensorflow

    configure_tensorflow(threads=threads, seed=seed)
    import keras
    import tensorflow as tf

    from ml.export import export_tflite, max_tflite_difference

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


def main(argv: list[str] | None = None) -> int:
    from ml.datasets import default_data_dir

    parser = argparse.ArgumentParser(prog="python -m ml.segmentation")
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=segmenter_dir("lung_segmenter"))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    metadata = train_segmenter(data_dir=args.data, out_dir=args.out, epochs=args.epochs, seed=args.seed, threads=args.threads)
    print(json.dumps({k: v for k, v in metadata.items() if k != "val_images"}, indent=1), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

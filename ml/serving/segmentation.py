"""Lung-field segmentation used by preprocessing to crop to, and mask, the lungs.

Why: in the development pool the class is confounded with the source
(SOURCES.md), and sources differ mostly outside the lungs (borders, burnt-in
text, collimation, devices). A classifier that only ever sees the lung
fields cannot use those. The segmenter is a small U-Net trained on the 316
V7 lung masks (Cohen COVID-19 images only: see lung_masks/README.md; that is
fine here because the segmenter never sees the class and its output is only
a region, not a feature).

Note for ml.serving.lungs / the shortcut audit: with ``mask_outside_lungs`` the
model input is exactly 0 outside the segmented lungs; ``preprocess_with_lung_mask``
in ml.serving.preprocess returns that mask in the model's frame.

Train: ``python -m ml segmenter --data ../shared/data/cxr --out ml/artifacts/lung_segmenter``
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from ml.serving.interpreter import make_interpreter, run_interpreter
from ml.serving.lungs import prior_lung_mask
from ml.serving.pixels import equalize_histogram, resize

REPO_ROOT = Path(__file__).resolve().parents[2]
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


def segmenter_input(pixels: np.ndarray) -> np.ndarray:

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

        metadata = json.loads((folder / METADATA_FILE).read_text())
        return cls(interpreter=make_interpreter(folder / MODEL_FILE, threads=1), threshold=float(metadata.get("threshold", 0.5)))

    def probability_map(self, pixels: np.ndarray) -> np.ndarray:

        return run_interpreter(self.interpreter, segmenter_input(pixels)[..., None])[..., 0]

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

            return np.array(prior_lung_mask(height=height, width=width)), False
        return mask, True


@lru_cache(maxsize=4)
def load_segmenter(name: str) -> LungSegmenter:
    """Loaded once per process, like the classifier."""
    return LungSegmenter.load(segmenter_dir(name))


def segment_lungs(pixels: np.ndarray, *, segmenter: str) -> tuple[np.ndarray, bool]:
    """The lung mask, and whether the segmenter found the lungs (``LungSegmenter.segment``)."""
    return load_segmenter(segmenter).segment(pixels)



"""Resizing and histogram equalisation of float32 grey images in [0, 1]: the steps every layer shares."""

from __future__ import annotations

import numpy as np
from PIL import Image

# Training films are decoded and shrunk to this longest side once, before augmentation and preprocessing
# (the development pool's films are at most this size already).
FILM_MAX_SIDE = 512


def resize(pixels: np.ndarray, *, height: int, width: int) -> np.ndarray:
    """Resize a float32 image with antialiasing (Pillow's float mode)."""
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def shrink_longest_side(pixels: np.ndarray, *, max_side: int) -> np.ndarray:
    height, width = pixels.shape
    longest = max(height, width)
    if longest <= max_side:
        return pixels
    scale = max_side / longest
    return resize(pixels, height=max(1, round(height * scale)), width=max(1, round(width * scale)))


def equalize_histogram(pixels: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Global histogram equalisation, computed only over ``mask`` when given.

    It removes most of the brightness/contrast/gamma differences between
    sources. Pixels outside the mask are set to 0.
    """
    levels = np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)
    selected = levels if mask is None else levels[mask]
    if selected.size == 0:
        return np.zeros_like(pixels, dtype=np.float32)
    histogram = np.bincount(selected.ravel(), minlength=256).astype(np.float64)
    cdf = np.cumsum(histogram)
    first = cdf[np.nonzero(histogram)[0][0]]
    span = cdf[-1] - first
    if span <= 0:
        # A flat region carries no information; map it to mid-grey consistently.
        lookup = np.full(256, 0.5, dtype=np.float32)
    else:
        lookup = np.clip((cdf - first) / span, 0.0, 1.0).astype(np.float32)
    out = lookup[levels]
    if mask is not None:
        out = np.where(mask, out, 0.0).astype(np.float32)
    return out

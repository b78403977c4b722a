"""Training-time augmentation.

Two stages, because they attack different things:

* ``augment_film`` works on the decoded film before preprocessing and
  imitates what differs between sources: JPEG re-compression, blur and noise,
  brightness/contrast/gamma, black or white borders, burnt-in text and
  markers. Randomising these makes them useless as class evidence.
* ``augment_geometry`` works on the preprocessed model input: small
  rotations, shifts and zooms (zoom-in doubles as a random crop), so the model
  does not memorise where the anatomy sits in the frame.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


@dataclass(frozen=True)
class AugmentConfig:
    film: bool = True  # source-artefact augmentation before preprocessing
    rotation_degrees: float = 10.0
    shift_fraction: float = 0.08
    zoom_range: tuple[float, float] = (0.9, 1.15)
    flip: bool = False  # off by default: situs (heart on the left) is real anatomy

    def to_dict(self) -> dict:
        return {
            "film": self.film,
            "rotation_degrees": self.rotation_degrees,
            "shift_fraction": self.shift_fraction,
            "zoom_range": list(self.zoom_range),
            "flip": self.flip,
        }


LIGHT = AugmentConfig(film=False, rotation_degrees=5.0, shift_fraction=0.05, zoom_range=(0.95, 1.05))
STRONG = AugmentConfig()


def _to_image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8), mode="L")


def _jpeg(pixels: np.ndarray, *, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    _to_image(pixels).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer), dtype=np.float32) / 255.0


def _blur(pixels: np.ndarray, *, radius: float) -> np.ndarray:
    return np.asarray(_to_image(pixels).filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32) / 255.0


def _borders(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = pixels.copy()
    height, width = out.shape
    value = float(rng.choice([0.0, 1.0, rng.uniform(0, 1)]))
    for side in range(4):
        if rng.random() < 0.35:
            depth = int(rng.uniform(0.02, 0.10) * (height if side < 2 else width))
            if side == 0:
                out[:depth] = value
            elif side == 1:
                out[height - depth:] = value
            elif side == 2:
                out[:, :depth] = value
            else:
                out[:, width - depth:] = value
    return out


def _text_marks(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Burnt-in letters, labels and arrows, as web figures and hospital films carry."""
    image = _to_image(pixels)
    draw = ImageDraw.Draw(image)
    height, width = pixels.shape
    for _ in range(int(rng.integers(1, 4))):
        x, y = int(rng.uniform(0, 0.85) * width), int(rng.uniform(0, 0.9) * height)
        shade = int(rng.choice([0, 255, int(rng.integers(0, 256))]))
        kind = rng.random()
        if kind < 0.5:
            letters = "".join(rng.choice(list("LRAPUPRIGHTLEFT0123456789"), size=int(rng.integers(1, 6))))
            draw.text((x, y), letters, fill=shade, font_size=max(1, int(rng.uniform(0.03, 0.08) * height)))
        elif kind < 0.8:
            box_w, box_h = int(rng.uniform(0.03, 0.15) * width), int(rng.uniform(0.02, 0.06) * height)
            draw.rectangle((x, y, x + box_w, y + box_h), fill=shade)
        else:
            length = rng.uniform(0.05, 0.15) * width
            angle = rng.uniform(0, 2 * np.pi)
            end = (x + length * np.cos(angle), y + length * np.sin(angle))
            draw.line((x, y, *end), fill=shade, width=max(1, int(0.006 * width)))
    return np.asarray(image, dtype=np.float32) / 255.0


def augment_film(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Randomise source artefacts on a decoded film (HxW float32 in [0, 1])."""
    out = np.asarray(pixels, dtype=np.float32)
    if rng.random() < 0.8:
        gamma = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
        out = np.clip(out, 0, 1) ** gamma
    if rng.random() < 0.8:
        contrast = rng.uniform(0.7, 1.3)
        brightness = rng.uniform(-0.12, 0.12)
        out = (out - 0.5) * contrast + 0.5 + brightness
    out = np.clip(out, 0, 1)
    if rng.random() < 0.3:
        out = _borders(out, rng)
    if rng.random() < 0.4:
        out = _text_marks(out, rng)
    if rng.random() < 0.3:
        out = _blur(out, radius=float(rng.uniform(0.3, 1.5)))
    if rng.random() < 0.3:
        out = out + rng.normal(0, rng.uniform(0.005, 0.04), out.shape).astype(np.float32)
    if rng.random() < 0.5:
        out = _jpeg(out, quality=int(rng.integers(25, 96)))
    return np.clip(out, 0, 1).astype(np.float32)


def augment_geometry(model_input: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Random rotation, shift and zoom of an (S, S, 1) or (S, S) input; empty areas are filled with 0."""
    plane = model_input[..., 0] if model_input.ndim == 3 else model_input
    size = plane.shape[0]
    angle = np.deg2rad(rng.uniform(-config.rotation_degrees, config.rotation_degrees))
    zoom = rng.uniform(*config.zoom_range)
    shift_x, shift_y = rng.uniform(-config.shift_fraction, config.shift_fraction, size=2) * size
    centre = (size - 1) / 2.0
    # Inverse mapping (output pixel -> input pixel) as Pillow's AFFINE expects.
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    a, b = cos, sin
    d, e = -sin, cos
    c = centre - a * (centre + shift_x) - b * (centre + shift_y)
    f = centre - d * (centre + shift_x) - e * (centre + shift_y)
    image = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F")
    out = np.asarray(
        image.transform((size, size), Image.Transform.AFFINE, (a, b, c, d, e, f), resample=Image.Resampling.BILINEAR),
        dtype=np.float32,
    )
    if config.flip and rng.random() < 0.5:
        out = out[:, ::-1]
    out = np.clip(out, 0, 1)
    return out[..., None] if model_input.ndim == 3 else out

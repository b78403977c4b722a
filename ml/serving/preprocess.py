"""Image preprocessing shared by training, evaluation and inference.

Every model input goes through ``preprocess`` so that training and serving can
never drift apart. The configuration is stored in each artifact's metadata.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from ml.serving.pixels import equalize_histogram, resize, shrink_longest_side
from ml.serving.segmentation import segment_lungs

EQUALIZE_CHOICES = ("none", "histogram")
EQUALIZE_REGION_CHOICES = ("mask", "frame")
CROP_CHOICES = ("none", "lungs")


@dataclass(frozen=True)
class PreprocessConfig:
    """How a decoded image becomes a model input of shape (S, S, 1).

    ``crop="lungs"`` crops to the bounding box of the lung fields found by the
    lung segmenter named in ``lung_segmenter`` (a folder under ml/artifacts/),
    and ``mask_outside_lungs`` blanks everything outside the lungs, so that
    borders, burnt-in text and collimation (which identify the source
    hospital) never reach the classifier.
    """

    input_size: int = 256
    equalize: str = "none"
    crop: str = "none"
    mask_outside_lungs: bool = False
    lung_segmenter: str = ""
    crop_margin: float = 0.05
    # "frame": equalise over the whole (cropped) chest, then blank outside the
    # lungs, so lung density stays comparable with the mediastinum and a
    # diffusely opaque lung still looks opaque. "mask": equalise inside the
    # lungs only (erases overall lung density; kept for older artifacts).
    equalize_region: str = "mask"

    def __post_init__(self) -> None:
        if self.input_size < 8:
            raise ValueError(f"input_size too small: {self.input_size}")
        if self.equalize not in EQUALIZE_CHOICES:
            raise ValueError(f"equalize must be one of {EQUALIZE_CHOICES}")
        if self.crop not in CROP_CHOICES:
            raise ValueError(f"crop must be one of {CROP_CHOICES}")
        if self.equalize_region not in EQUALIZE_REGION_CHOICES:
            raise ValueError(f"equalize_region must be one of {EQUALIZE_REGION_CHOICES}")
        if (self.crop == "lungs" or self.mask_outside_lungs) and not self.lung_segmenter:
            raise ValueError("lung cropping/masking needs lung_segmenter")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessConfig":
        known = {f.name for f in fields(cls)}
        # Unknown keys come from newer artifacts; ignoring them keeps old code loading.
        return cls(**{key: value for key, value in data.items() if key in known})


def _bounding_box(mask: np.ndarray, *, margin: float) -> tuple[int, int, int, int]:
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    if rows.size == 0:
        # No lung pixel at all (a frame a few pixels across): keep the whole frame rather than fail.
        return (0, mask.shape[0], 0, mask.shape[1])
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    height, width = mask.shape
    pad_y = int(round((bottom - top) * margin))
    pad_x = int(round((right - left) * margin))
    return (max(0, top - pad_y), min(height, bottom + pad_y), max(0, left - pad_x), min(width, right + pad_x))


# Warnings a model input can carry to the result (codes; the portal words them).
LUNGS_NOT_FOUND = "lungs_not_found"


@dataclass(frozen=True)
class CropBox:
    """The part of the film the model saw, as fractions of the film's height and width (the whole film: 0, 1, 0, 1).

    A heatmap is drawn in the model input's frame; this box puts it back over the film at its true position
    and aspect.
    """

    top: float = 0.0
    bottom: float = 1.0
    left: float = 0.0
    right: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def preprocess(pixels: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Turn decoded pixels (HxW float32 in [0, 1], air dark) into a model input (S, S, 1)."""
    return _prepare(pixels, config)[0]


def preprocess_checked(pixels: np.ndarray, config: PreprocessConfig) -> tuple[np.ndarray, list[str]]:
    """The model input and what the result should warn about.

    ``lungs_not_found``: the lung segmenter found no lung fields (not a chest
    film, an unusual view, or a very abnormal film), so a fixed anatomical
    prior chose the region the model saw; the result is unreliable.
    """
    model_input, warnings, _box = preprocess_located(pixels, config)
    return model_input, warnings


def preprocess_located(pixels: np.ndarray, config: PreprocessConfig) -> tuple[np.ndarray, list[str], CropBox]:
    """``preprocess_checked`` plus where on the film the model input comes from (serving maps heatmaps back)."""
    frame, mask, lungs_found, box = _lung_frame_located(pixels, config)
    return finish_frame(frame, mask, config), ([LUNGS_NOT_FOUND] if lungs_found is False else []), box


def preprocess_with_lung_mask(pixels: np.ndarray, config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """The model input and, when the config masks outside the lungs, the lung mask (S, S) in its frame.

    For the shortcut audit: with ``mask_outside_lungs`` this is exactly the
    region the classifier can see.
    """
    model_input, mask, _found = _prepare(pixels, config)
    return model_input, mask


def _prepare(pixels: np.ndarray, config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray | None, bool | None]:
    """Model input, lung mask in its frame (or None) and whether the lungs were found (None: not looked for)."""
    frame, mask, lungs_found = lung_frame(pixels, config)
    return finish_frame(frame, mask, config), mask, lungs_found


def lung_frame(pixels: np.ndarray, config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray | None, bool | None]:
    """The first half of preprocessing: the (cropped) frame resized to (S, S), before equalisation.

    Returns the frame, the lung mask at (S, S) when the config masks outside
    the lungs (else None) and whether the lungs were found (None: not looked
    for). ``finish_frame`` turns the frame into the model input.
    """
    return _lung_frame_located(pixels, config)[:3]


def _lung_frame_located(pixels: np.ndarray, config: PreprocessConfig):
    """``lung_frame`` and the crop box it took from the film (CropBox)."""
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {pixels.shape}")
    size = config.input_size
    # Work at about twice the output size: enough detail for cropping, and fast.
    work = shrink_longest_side(np.asarray(pixels, dtype=np.float32), max_side=max(2 * size, 64))
    mask, lungs_found, box = None, None, CropBox()
    if config.crop == "lungs" or config.mask_outside_lungs:

        lung_mask, lungs_found = segment_lungs(work, segmenter=config.lung_segmenter)
        if config.crop == "lungs":
            top, bottom, left, right = _bounding_box(lung_mask, margin=config.crop_margin)
            height, width = work.shape
            box = CropBox(top=top / height, bottom=bottom / height, left=left / width, right=right / width)
            work = work[top:bottom, left:right]
            lung_mask = lung_mask[top:bottom, left:right]
        if config.mask_outside_lungs:
            mask = resize(lung_mask.astype(np.float32), height=size, width=size) >= 0.5
    return resize(work, height=size, width=size), mask, lungs_found, box


def finish_frame(frame: np.ndarray, mask: np.ndarray | None, config: PreprocessConfig) -> np.ndarray:
    """The second half of preprocessing: equalise, blank outside the lungs; returns (S, S, 1) in [0, 1]."""
    out = np.asarray(frame, dtype=np.float32)
    if config.equalize == "histogram":
        out = equalize_histogram(out, mask if config.equalize_region == "mask" else None)
    if mask is not None:
        out = np.where(mask, out, 0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)[..., None]


def preprocess_batch(images: list[np.ndarray], config: PreprocessConfig) -> np.ndarray:
    size = config.input_size
    out = np.empty((len(images), size, size, 1), dtype=np.float32)
    for index, pixels in enumerate(images):
        out[index] = preprocess(pixels, config)
    return out

"""The lung region the shortcut audit hides or keeps, per artifact (segmented mask, or the fixed prior)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from ml.serving.lungs import lung_mask
from ml.serving.pixels import resize
from ml.serving.preprocess import preprocess_with_lung_mask
from ml.serving.segmentation import MIN_LUNG_FRACTION, MODEL_FILE, load_segmenter, segmenter_dir


@dataclass(frozen=True)
class LungRegion:
    """How the audit finds the lungs for one artifact: ``mask(film, model_input) -> bool (S, S)``."""

    description: str
    mask: Callable[[np.ndarray, np.ndarray], np.ndarray]
    # Value preprocessing already gives pixels outside the lungs (None: it does not blank them).
    blank_value: float | None = None


def _exact_preprocessing_mask(config) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:

    def mask(film: np.ndarray, model_input: np.ndarray) -> np.ndarray:
        return np.asarray(preprocess_with_lung_mask(film, config)[1], dtype=bool)

    return mask


def _segmented_full_frame_mask(segmenter: str, size: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:

    def mask(film: np.ndarray, model_input: np.ndarray) -> np.ndarray:
        # The full-frame input is the whole film resized to S x S, so the segmenter's probability map
        # (computed on the whole film) maps onto it by a plain resize. The raw map is used, not
        # LungSegmenter.mask: that one is dilated on purpose for cropping (about 27 % larger than the
        # drawn outlines) and would hide more than the lungs here.
        loaded = load_segmenter(segmenter)
        probability = loaded.probability_map(np.asarray(film, dtype=np.float32))
        region = resize(probability, height=size, width=size) >= loaded.threshold
        if region.mean() < MIN_LUNG_FRACTION:
            return lung_mask(model_input)
        return region

    return mask


def _segmenter_available(name: str) -> bool:
    return (segmenter_dir(name) / MODEL_FILE).is_file()


def lung_region_for_config(config, *, use_segmenter: bool = True, segmenter: str = "lung_segmenter") -> LungRegion:
    """The lung region matching the frame ``ml.serving.preprocess`` produces for ``config``.

    In order of preference:

    1. ``mask_outside_lungs``: the segmented mask preprocessing itself applied
       (``ml.serving.preprocess.preprocess_with_lung_mask``): exactly what the model sees.
    2. whole-film inputs (``crop="none"``) with the lung segmenter available
       (``ml.serving.segmentation``, trained on the V7 masks): a per-image mask.
    3. otherwise the fixed prior for the input's frame.

    ``config`` is an ``ml.serving.preprocess.PreprocessConfig`` (``crop``,
    ``mask_outside_lungs``, ``lung_segmenter`` and ``input_size`` are read).
    """
    name = getattr(config, "lung_segmenter", "") or segmenter
    if getattr(config, "mask_outside_lungs", False):
        return LungRegion(
            description=f"the lung mask preprocessing applies (segmenter {name!r}); outside it the input is blank",
            mask=_exact_preprocessing_mask(config),
            blank_value=0.0,
        )
    frame = "lung_crop" if getattr(config, "crop", "none") == "lungs" else "full"
    if frame == "full" and use_segmenter and _segmenter_available(name):
        return LungRegion(
            description=f"per-image lung segmentation (segmenter {name!r}) resized to the input frame",
            mask=_segmented_full_frame_mask(name, int(config.input_size)),
        )
    prior = partial(lung_mask, frame=frame)
    return LungRegion(
        description=f"fixed two-ellipse anatomical prior, frame {frame!r} (ml.serving.lungs)",
        mask=lambda film, model_input: prior(model_input),
    )

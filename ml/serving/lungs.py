"""Lung-region masks in the model's input frame, for every image of every class.

The shortcut audit (``ml.evaluation.shortcut_audit``) needs a lung region for all images,
but the only drawn lung outlines in the development pool belong to COVID-19
images of one source (``lung_masks/README.md``): using them per image would
hide the lungs of one class only. So the region of every image comes from
something blind to the label: the lung segmenter (per image, see
:func:`lung_region_for_config`) or, as the fallback, the fixed anatomical
prior below.

The prior is two axis-aligned ellipses in the square preprocessed frame
(fractions of the side ``S``, origin top-left, x to the right, image left =
patient's right on a PA film). There is one prior per input frame that
``ml.serving.preprocess`` can produce:

``frame="full"`` (``crop="none"``: the whole film resized to ``S x S``)::

    patient's right lung: centre (0.28, 0.45), semi-axes (0.18, 0.34)
    patient's left lung:  centre (0.71, 0.47), semi-axes (0.18, 0.36)

``frame="lung_crop"`` (``crop="lungs"``: the lung bounding box plus a 5 %
margin resized to ``S x S``)::

    patient's right lung: centre (0.26, 0.47), semi-axes (0.21, 0.43)
    patient's left lung:  centre (0.73, 0.50), semi-axes (0.21, 0.45)

These numbers are the first and second moments of each half of the mean of
the 316 V7 lung masks after bringing each mask into that frame (a filled
ellipse of semi-axis ``a`` has standard deviation ``a / 2``), rounded up
slightly so the ellipses cover the lung fields of most films. On those 316
masks the full-frame prior has a mean Dice of 0.77 (5th-95th percentile
0.62-0.86) at 128 x 128. Like the V7 outlines, they
include most of the cardiac silhouette. They do not follow an individual
patient's anatomy: rotated, cropped or paediatric films are only roughly
covered, which makes the audit conservative in one direction (some lung
tissue stays visible at the ellipse edges when the lungs are "hidden").

The prior is the fallback. When a per-image region is available,
:func:`lung_region_for_config` prefers it: the mask preprocessing applied when
it blanks everything outside the lungs (``mask_outside_lungs``), or the lung
segmenter of ``ml.serving.segmentation`` (a small U-Net trained on the V7 masks) for
whole-film inputs: its raw probability map reaches a mean Dice of 0.946 on the
45 V7 masks held out from its training (measured at film size), against 0.769
for the prior on the same films. Both this module and ``ml.serving.segmentation``
fall back to the prior (frame ``"full"``) when a segmentation is implausibly
small.

For whoever changes preprocessing: a new crop mode needs its own frame here
(``LUNG_PRIORS`` is the single place to change) and a branch in
:func:`lung_region_for_config`.

Function shape, stable for callers: ``lung_mask(model_input, frame=...) ->
bool (S, S)`` accepting ``(S, S)`` or ``(S, S, 1)`` inputs of any side.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Ellipse:
    centre_x: float  # fraction of the width
    centre_y: float  # fraction of the height
    semi_axis_x: float
    semi_axis_y: float


LUNG_PRIORS: dict[str, tuple[Ellipse, Ellipse]] = {
    "full": (
        Ellipse(centre_x=0.28, centre_y=0.45, semi_axis_x=0.18, semi_axis_y=0.34),
        Ellipse(centre_x=0.71, centre_y=0.47, semi_axis_x=0.18, semi_axis_y=0.36),
    ),
    "lung_crop": (
        Ellipse(centre_x=0.26, centre_y=0.47, semi_axis_x=0.21, semi_axis_y=0.43),
        Ellipse(centre_x=0.73, centre_y=0.50, semi_axis_x=0.21, semi_axis_y=0.45),
    ),
}


@lru_cache(maxsize=16)
def _prior_mask(height: int, width: int, frame: str) -> np.ndarray:
    # Pixel centres, so the mask is symmetric and independent of rounding.
    ys = (np.arange(height) + 0.5) / height
    xs = (np.arange(width) + 0.5) / width
    mask = np.zeros((height, width), dtype=bool)
    for ellipse in LUNG_PRIORS[frame]:
        inside = ((xs[None, :] - ellipse.centre_x) / ellipse.semi_axis_x) ** 2 + (
            (ys[:, None] - ellipse.centre_y) / ellipse.semi_axis_y
        ) ** 2 <= 1.0
        mask |= inside
    mask.setflags(write=False)
    return mask


def prior_lung_mask(*, height: int, width: int, frame: str = "full") -> np.ndarray:
    """The fixed two-ellipse lung prior as a read-only bool array."""
    if frame not in LUNG_PRIORS:
        raise ValueError(f"unknown frame {frame!r}; choose from {sorted(LUNG_PRIORS)}")
    return _prior_mask(height, width, frame)


def _plane(model_input: np.ndarray) -> np.ndarray:
    image = np.asarray(model_input)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 2:
        raise ValueError(f"expected an (S, S) or (S, S, 1) image, got shape {np.shape(model_input)}")
    return image


def lung_mask(model_input: np.ndarray, *, frame: str = "full") -> np.ndarray:
    """Lung region of one preprocessed image, as a new bool ``(S, S)`` array.

    This is the anatomical prior for ``frame``, the same for every image (see
    the module docstring); the image values are not read.
    """
    image = _plane(model_input)
    return prior_lung_mask(height=image.shape[0], width=image.shape[1], frame=frame).copy()



"""Is an upload a colour picture? A chest radiograph is grey; a photograph, a screenshot or a drawing is not.

The model sees every film in grey, so a holiday photo still gets a confident-looking answer. How much of
the original is clearly coloured is measured once, at upload, before the colour is thrown away.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# The result warning for a film that is probably not a chest radiograph (the portal words it).
NOT_RADIOGRAPH = "not_radiograph"

# A pixel is clearly coloured when its HSV saturation is at least this and it is not near black, where hue is noise.
PIXEL_SATURATION = 0.25
PIXEL_MIN_VALUE = 0.15
# Share of clearly coloured pixels above which the picture is a colour picture, not a radiograph. Greyscale films
# saved as RGB, and films with a coloured annotation or a tinted scan, stay far below it.
COLOURFUL_SHARE = 0.2
MEASURE_SIDE = 256


def colour_share(data: bytes) -> float | None:
    """Share of the picture's pixels that are clearly coloured, in [0, 1]; None when the format has no colour.

    ``data`` is a PNG or JPEG that has already been validated (size limits checked); it is measured on a
    thumbnail of at most MEASURE_SIDE pixels a side.
    """
    with Image.open(io.BytesIO(data)) as image:
        if image.mode not in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV"):
            return None  # L, LA, I;16, 1: no colour at all
        if image.format == "JPEG":
            image.draft("RGB", (MEASURE_SIDE, MEASURE_SIDE))
        picture = image.convert("RGB")
    picture.thumbnail((MEASURE_SIDE, MEASURE_SIDE))
    hsv = np.asarray(picture.convert("HSV"), dtype=np.float32) / 255.0
    coloured = (hsv[..., 1] >= PIXEL_SATURATION) & (hsv[..., 2] >= PIXEL_MIN_VALUE)
    return float(coloured.mean()) if coloured.size else 0.0


def is_colour_picture(share: float | None) -> bool:
    return share is not None and share >= COLOURFUL_SHARE

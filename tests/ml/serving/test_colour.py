"""Colour pictures are told apart from grey radiographs by how much of them is clearly coloured."""

import io

import numpy as np
from PIL import Image

from ml.serving.colour import colour_share, is_colour_picture


def encoded(array: np.ndarray, *, mode: str, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format=format)
    return buffer.getvalue()


def test_a_grey_film_has_no_colour_even_when_saved_as_rgb_or_jpeg():
    grey = (np.random.default_rng(0).random((120, 100)) * 255).astype(np.uint8)
    assert colour_share(encoded(grey, mode="L")) is None
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    assert colour_share(encoded(rgb, mode="RGB")) == 0.0
    assert colour_share(encoded(rgb, mode="RGB", format="JPEG")) < 0.01


def test_a_colour_photo_is_a_colour_picture_and_a_small_coloured_mark_is_not():
    rng = np.random.default_rng(1)
    photo = np.zeros((120, 160, 3), np.uint8)
    photo[:60] = (40, 120, 230)  # sky
    photo[60:] = (230, 200, 90)  # sand
    photo = np.clip(photo + rng.integers(-20, 20, photo.shape), 0, 255).astype(np.uint8)
    share = colour_share(encoded(photo, mode="RGB", format="JPEG"))
    assert share > 0.9 and is_colour_picture(share)

    film = np.repeat((rng.random((120, 160)) * 200 + 30).astype(np.uint8)[..., None], 3, axis=-1)
    film[5:15, 5:30] = (255, 0, 0)  # a red annotation
    assert not is_colour_picture(colour_share(encoded(film, mode="RGB")))


import numpy as np
import pytest

from ml.serving.pixels import equalize_histogram
from ml.serving.preprocess import PreprocessConfig, preprocess


def _film(height=512, width=400, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (height, width)).astype(np.float32)


def test_output_shape_dtype_and_range():
    out = preprocess(_film(), PreprocessConfig(input_size=128))
    assert out.shape == (128, 128, 1)
    assert out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_is_deterministic():
    config = PreprocessConfig(input_size=96, equalize="histogram")
    film = _film()
    assert np.array_equal(preprocess(film, config), preprocess(film, config))


def test_config_round_trips_through_dict_and_ignores_unknown_keys():
    config = PreprocessConfig(input_size=192, equalize="histogram")
    data = config.to_dict() | {"added_in_a_later_version": 1}
    assert PreprocessConfig.from_dict(data) == config


def test_rejects_unknown_equalisation_and_colour_images():
    with pytest.raises(ValueError):
        PreprocessConfig(equalize="clahe-ish")
    with pytest.raises(ValueError):
        preprocess(np.zeros((10, 10, 3), np.float32), PreprocessConfig(input_size=8))


def test_lung_crop_requires_a_segmenter():
    with pytest.raises(ValueError):
        PreprocessConfig(crop="lungs")


def test_histogram_equalisation_spreads_a_narrow_range_and_zeroes_outside_mask():
    pixels = np.linspace(0.4, 0.5, 64 * 64, dtype=np.float32).reshape(64, 64)
    mask = np.zeros((64, 64), bool)
    mask[:, :32] = True
    out = equalize_histogram(pixels, mask)
    assert out[mask].max() == pytest.approx(1.0)
    assert out[mask].min() == pytest.approx(0.0)
    assert np.all(out[~mask] == 0)


def test_equalisation_removes_a_gamma_change():
    film = _film(64, 64)  # same size as the input: gamma and resizing do not commute on noise
    config = PreprocessConfig(input_size=64, equalize="histogram")
    assert np.abs(preprocess(film, config) - preprocess(film ** 1.5, config)).max() < 0.03



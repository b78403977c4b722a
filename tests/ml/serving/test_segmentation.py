"""Lung segmentation plumbing, with an untrained U-Net standing in for the trained one."""

import json

import numpy as np
import pytest

from ml.serving.preprocess import PreprocessConfig, preprocess_with_lung_mask


@pytest.fixture(scope="module")
def segmenter_root(tmp_path_factory):
    from ml.serving.segmentation import METADATA_FILE, MODEL_FILE
    from ml.training.export import export_tflite
    from ml.training.segmenter import build_unet

    root = tmp_path_factory.mktemp("segmenters")
    for name, threshold in (("untrained", 0.5), ("never_finds_lungs", 1.5)):
        folder = root / name
        folder.mkdir()
        export_tflite(keras_model=build_unet(), path=folder / MODEL_FILE)
        (folder / METADATA_FILE).write_text(json.dumps({"threshold": threshold}))
    return root


@pytest.fixture
def segmenters(segmenter_root, monkeypatch):
    """The stand-in segmenters ("untrained", "never_finds_lungs") in place of the trained one, for one test."""
    from ml.serving.segmentation import load_segmenter

    monkeypatch.setenv("CXR_SEGMENTER_ROOT", str(segmenter_root))
    load_segmenter.cache_clear()
    yield
    load_segmenter.cache_clear()


# Crop to the lungs and blank outside them, with a segmenter that never finds them (so the prior is used).
LUNG_CROP = dict(input_size=64, equalize="histogram", crop="lungs", mask_outside_lungs=True,
                 lung_segmenter="never_finds_lungs")


def test_mask_has_film_size_and_falls_back_to_the_prior(segmenters):
    from ml.serving.lungs import prior_lung_mask
    from ml.serving.segmentation import segment_lungs

    film = np.random.default_rng(0).uniform(0, 1, (300, 250)).astype(np.float32)
    mask, _ = segment_lungs(film, segmenter="untrained")
    assert mask.shape == (300, 250) and mask.dtype == bool
    fallback, found = segment_lungs(film, segmenter="never_finds_lungs")
    assert np.array_equal(fallback, prior_lung_mask(height=300, width=250)) and found is False


def test_lung_preprocessing_blanks_everything_outside_the_mask(segmenters):
    config = PreprocessConfig(**LUNG_CROP)
    film = np.random.default_rng(1).uniform(0.2, 1, (200, 200)).astype(np.float32)
    model_input, mask = preprocess_with_lung_mask(film, config)
    assert model_input.shape == (64, 64, 1) and mask.shape == (64, 64)
    assert np.all(model_input[~mask] == 0) and model_input[mask].max() > 0.9


def test_frame_equalisation_keeps_lung_density_relative_to_the_chest(segmenters):
    film = np.full((200, 200), 0.9, np.float32)  # bright body...
    film[60:140, 40:160] = np.linspace(0.1, 0.2, 120, dtype=np.float32)  # ...with dark lungs
    by_frame, mask = preprocess_with_lung_mask(film, PreprocessConfig(**LUNG_CROP, equalize_region="frame"))
    by_mask, _ = preprocess_with_lung_mask(film, PreprocessConfig(**LUNG_CROP, equalize_region="mask"))
    assert np.all(by_frame[~mask] == 0)
    # Equalised inside the lungs only, the dark lungs are stretched to full range; over the frame they stay darker.
    assert by_frame[mask].mean() < by_mask[mask].mean()


@pytest.mark.parametrize("size", [3, 5])
def test_square_filters_equal_pillows_rank_filters(size):
    from PIL import Image, ImageFilter

    from ml.serving.segmentation import _square_filter

    rng = np.random.default_rng(size)
    mask = rng.random((96, 80)) < 0.55
    image = Image.fromarray((mask * 255).astype(np.uint8), mode="L")
    eroded = np.asarray(image.filter(ImageFilter.MinFilter(size))) == 255
    dilated = np.asarray(image.filter(ImageFilter.MaxFilter(size))) == 255
    assert np.array_equal(_square_filter(mask, size, np.logical_and), eroded)
    assert np.array_equal(_square_filter(mask, size, np.logical_or), dilated)


def test_preprocessing_reports_when_the_lungs_were_not_found(segmenters):
    from ml.serving.preprocess import LUNGS_NOT_FOUND, preprocess, preprocess_checked

    film = np.random.default_rng(2).uniform(0.2, 1, (200, 180)).astype(np.float32)
    lungs = PreprocessConfig(**LUNG_CROP)
    model_input, warnings = preprocess_checked(film, lungs)
    assert warnings == [LUNGS_NOT_FOUND]
    assert np.array_equal(model_input, preprocess(film, lungs))
    # A whole-film model never looks for lungs, so it has nothing to warn about.
    assert preprocess_checked(film, PreprocessConfig(input_size=64))[1] == []


def test_a_strip_too_thin_for_any_lung_pixel_is_preprocessed_whole(segmenters):
    from ml.serving.preprocess import LUNGS_NOT_FOUND, preprocess_checked

    # 8192 x 32 shrinks to one pixel across in the working frame: the fallback lung prior has no pixel there.
    strip = np.random.default_rng(3).uniform(0, 1, (8192, 32)).astype(np.float32)
    lungs = PreprocessConfig(**LUNG_CROP)
    model_input, warnings = preprocess_checked(strip, lungs)
    assert model_input.shape == (64, 64, 1) and warnings == [LUNGS_NOT_FOUND]

"""The lung prior: shape, frames, and agreement with the drawn V7 masks."""

import numpy as np
import pytest

from ml import lungs
from ml.datasets import default_data_dir
from ml.preprocess import PreprocessConfig

LUNG_MASKS = default_data_dir() / "lung_masks"


def test_mask_is_bool_square_and_accepts_channel_axis():
    mask = lungs.lung_mask(np.zeros((96, 96, 1), dtype=np.float32))
    assert mask.shape == (96, 96) and mask.dtype == bool
    assert np.array_equal(mask, lungs.lung_mask(np.ones((96, 96), dtype=np.float32)))


def test_rejects_colour_images():
    with pytest.raises(ValueError):
        lungs.lung_mask(np.zeros((32, 32, 3)))


def test_prior_has_two_lungs_and_a_mediastinum_gap():
    mask = lungs.lung_mask(np.zeros((128, 128)))
    middle_row = mask[int(0.45 * 128)]
    assert middle_row[int(0.28 * 128)] and middle_row[int(0.71 * 128)]
    assert not middle_row[64]  # spine and mediastinum between the lungs
    assert not mask[:5].any() and not mask[-5:].any()  # neck and abdomen are outside
    assert 0.3 < mask.mean() < 0.5


def test_returned_mask_is_a_copy_callers_may_edit():
    first = lungs.lung_mask(np.zeros((32, 32)))
    first[:] = False
    assert lungs.lung_mask(np.zeros((32, 32))).any()


def test_lung_crop_frame_covers_more_of_the_input():
    full = lungs.lung_mask(np.zeros((64, 64)), frame="full")
    cropped = lungs.lung_mask(np.zeros((64, 64)), frame="lung_crop")
    assert cropped.mean() > full.mean()


def test_mask_function_follows_preprocessing_config():
    _, full = lungs.lung_mask_for_config(PreprocessConfig(input_size=64))
    assert np.array_equal(full(np.zeros((64, 64))), lungs.lung_mask(np.zeros((64, 64))))
    _, cropped = lungs.lung_mask_for_config(
        PreprocessConfig(input_size=64, crop="lungs", lung_segmenter="lung_segmenter")
    )
    assert np.array_equal(cropped(np.zeros((64, 64))), lungs.lung_mask(np.zeros((64, 64)), frame="lung_crop"))


def test_blanked_inputs_use_their_visible_region_with_holes_closed():
    image = np.zeros((40, 40), dtype=np.float32)
    image[5:30, 8:20] = 0.6
    image[12, 12] = 0.0  # darkest lung level after equalisation
    description, mask_fn = lungs.lung_mask_for_config(
        PreprocessConfig(input_size=40, mask_outside_lungs=True, lung_segmenter="lung_segmenter")
    )
    mask = mask_fn(image)
    assert "non-blank" in description
    assert mask[12, 12] and mask[5:30, 8:20].all()
    assert mask.sum() == 25 * 12


def test_dice_by_hand():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True  # 8 pixels
    b[1:3] = True  # 8 pixels, 4 shared
    assert lungs.dice(predicted=a, reference=b) == pytest.approx(0.5)
    assert lungs.dice(predicted=b * False, reference=b * False) is None


@pytest.mark.skipif(not LUNG_MASKS.is_dir(), reason="development pool not available")
def test_prior_overlaps_drawn_v7_masks():
    """On a sample of the 316 drawn masks, the prior reaches the Dice its docstring claims."""
    import csv

    from PIL import Image

    with open(LUNG_MASKS / "index.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[::16]
    prior = lungs.lung_mask(np.zeros((128, 128)))
    scores = []
    for row in rows:
        drawn = Image.open(LUNG_MASKS / row["mask"]).convert("L").resize((128, 128), Image.Resampling.BILINEAR)
        scores.append(lungs.dice(predicted=prior, reference=np.asarray(drawn) > 127))
    assert 0.7 < np.mean(scores) < 0.85

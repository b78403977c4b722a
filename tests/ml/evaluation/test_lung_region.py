"""The lung prior: shape, frames, and agreement with the drawn V7 masks."""

import numpy as np
import pytest

from ml.evaluation import lung_region
from ml.evaluation.datasets import default_data_dir
from ml.serving import lungs
from ml.serving.preprocess import PreprocessConfig
from ml.training.segmenter import dice_score

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


def test_region_uses_the_prior_for_the_input_frame_without_segmenter():
    full = lung_region.lung_region_for_config(PreprocessConfig(input_size=64), use_segmenter=False)
    assert "prior" in full.description
    assert np.array_equal(full.mask(np.zeros((80, 90)), np.zeros((64, 64, 1))), lungs.lung_mask(np.zeros((64, 64))))
    cropped = lung_region.lung_region_for_config(
        PreprocessConfig(input_size=64, crop="lungs", lung_segmenter="lung_segmenter"), use_segmenter=False
    )
    assert np.array_equal(
        cropped.mask(np.zeros((80, 90)), np.zeros((64, 64))), lungs.lung_mask(np.zeros((64, 64)), frame="lung_crop")
    )


def test_region_is_the_preprocessing_mask_when_preprocessing_blanks_outside_the_lungs(monkeypatch):
    from ml.serving import segmentation

    film = np.full((100, 80), 0.5, dtype=np.float32)
    film_mask = np.zeros((100, 80), dtype=bool)
    film_mask[20:80, 10:70] = True
    monkeypatch.setattr(segmentation, "segment_lungs", lambda pixels, segmenter: (film_mask, True))
    config = PreprocessConfig(input_size=50, mask_outside_lungs=True, lung_segmenter="lung_segmenter")
    region = lung_region.lung_region_for_config(config)
    from ml.serving.preprocess import preprocess

    model_input = preprocess(film, config)
    mask = region.mask(film, model_input)
    assert mask.shape == (50, 50) and 0.3 < mask.mean() < 0.6
    assert region.blank_value == 0.0
    assert np.all(model_input[~mask, 0] == region.blank_value)


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
        scores.append(dice_score(prior, np.asarray(drawn) > 127))
    assert 0.7 < np.mean(scores) < 0.85


def test_region_is_segmented_per_image_for_whole_film_inputs_when_a_segmenter_exists(monkeypatch):
    class HalfFilmSegmenter:
        threshold = 0.5

        def probability_map(self, pixels):
            probability = np.zeros((96, 96), dtype=np.float32)
            probability[:, :48] = 0.9  # left half of the film
            return probability

    monkeypatch.setattr(lung_region, "_segmenter_available", lambda name: True)
    monkeypatch.setattr(lung_region, "load_segmenter", lambda name: HalfFilmSegmenter())
    region = lung_region.lung_region_for_config(PreprocessConfig(input_size=20))
    assert "segmentation" in region.description
    mask = region.mask(np.zeros((100, 80), dtype=np.float32), np.zeros((20, 20, 1)))
    assert mask[:, :10].all() and not mask[:, 10:].any()


def test_segmentation_failure_falls_back_to_the_prior(monkeypatch):
    class BlankSegmenter:
        threshold = 0.5

        def probability_map(self, pixels):
            return np.zeros((96, 96), dtype=np.float32)

    monkeypatch.setattr(lung_region, "_segmenter_available", lambda name: True)
    monkeypatch.setattr(lung_region, "load_segmenter", lambda name: BlankSegmenter())
    region = lung_region.lung_region_for_config(PreprocessConfig(input_size=20))
    mask = region.mask(np.zeros((100, 80), dtype=np.float32), np.zeros((20, 20, 1)))
    assert np.array_equal(mask, lungs.lung_mask(np.zeros((20, 20))))


@pytest.mark.skipif(
    not (LUNG_MASKS.is_dir() and lung_region._segmenter_available("lung_segmenter")),
    reason="development pool or trained lung segmenter not available",
)
def test_segmented_region_matches_held_out_v7_masks_in_the_input_frame():
    """Dice in the classifier's 128 x 128 frame on masks the segmenter never trained on."""
    import csv
    import json

    from PIL import Image

    from ml.evaluation.datasets import decode_file
    from ml.serving.segmentation import segmenter_dir

    held_out = json.loads((segmenter_dir("lung_segmenter") / "segmenter.json").read_text())["val_images"][::4]
    with open(LUNG_MASKS / "index.csv", newline="") as handle:
        mask_of = {row["file"]: row["mask"] for row in csv.DictReader(handle)}
    region = lung_region.lung_region_for_config(PreprocessConfig(input_size=128))
    scores = []
    for name in held_out:
        film = decode_file(default_data_dir() / name)
        drawn = Image.open(LUNG_MASKS / mask_of[name]).convert("L").resize((128, 128), Image.Resampling.BILINEAR)
        scores.append(dice_score(region.mask(film, np.zeros((128, 128))), np.asarray(drawn) > 127))
    assert np.mean(scores) > 0.9

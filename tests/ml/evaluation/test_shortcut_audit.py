"""Shortcut audit on synthetic inputs with stand-in models (no TensorFlow)."""

import numpy as np
import pytest

from ml.evaluation import shortcut_audit
from ml.serving.lungs import lung_mask

SIZE = 32


def _inputs(n: int, seed: int = 0):
    """Class k has a bright bar: inside the lungs (``lung`` cue) and in a border corner (``border`` cue)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = rng.random((n, SIZE, SIZE, 1)).astype(np.float32) * 0.2
    mask = lung_mask(np.zeros((SIZE, SIZE)))
    lung_rows, lung_cols = np.nonzero(mask)
    for i, k in enumerate(labels):
        images[i, lung_rows, lung_cols, 0] += 0.2 * k  # lung brightness says the class
        images[i, 0:2, 0:2, 0] = 0.4 * k  # so does a 2x2 "burnt-in marker" in the corner
    return images, labels, mask


def _one_hot(predicted: np.ndarray) -> np.ndarray:
    probabilities = np.full((predicted.size, 3), 0.05)
    probabilities[np.arange(predicted.size), predicted] = 0.9
    return probabilities


def _border_reader(batch: np.ndarray) -> np.ndarray:
    return _one_hot(np.clip(np.round(batch[:, 0, 0, 0] / 0.4), 0, 2).astype(int))


def _lung_reader(batch: np.ndarray) -> np.ndarray:
    # Background noise averages 0.1; the lung brightness adds 0.2 per class step.
    inside = batch[:, lung_mask(np.zeros((SIZE, SIZE))), 0].mean(axis=1)
    return _one_hot(np.clip(np.round((inside - 0.1) / 0.2), 0, 2).astype(int))


def test_hide_lungs_fills_with_mean_of_visible_pixels():
    image = np.zeros((4, 4, 1), dtype=np.float32)
    image[:, :2, 0] = 1.0
    region = np.zeros((4, 4), bool)
    region[:, 2:] = True  # hide the dark half: fill comes from the bright half
    hidden = shortcut_audit.hide_lungs(image, region)
    assert np.all(hidden[:, 2:, 0] == 1.0)
    assert image[:, 2:, 0].max() == 0.0  # the input is not modified
    kept = shortcut_audit.keep_only_lungs(image, region)
    assert np.all(kept[:, :2, 0] == 0.0) and np.all(kept[:, 2:, 0] == 0.0)


def test_model_reading_a_border_marker_is_flagged():
    images, labels, _ = _inputs(60)
    audit = shortcut_audit.run_shortcut_audit(
        model_inputs=images, y_true=labels, predict_model_inputs=_border_reader, n_resamples=100
    )
    assert audit.full.accuracy == 1.0
    assert audit.lungs_hidden.accuracy == 1.0
    assert audit.shortcut_suspected
    assert "shortcut suspected" in audit.findings[0]


def test_model_reading_the_lungs_is_not_flagged():
    images, labels, _ = _inputs(60)
    audit = shortcut_audit.run_shortcut_audit(
        model_inputs=images, y_true=labels, predict_model_inputs=_lung_reader, n_resamples=100
    )
    assert audit.full.accuracy == 1.0
    assert audit.lungs_only.accuracy == 1.0
    # Lungs filled with the outside mean look like class 0 to this reader: exactly chance.
    assert audit.lungs_hidden.accuracy == pytest.approx(1 / 3)
    assert not audit.shortcut_suspected
    assert audit.lungs_hidden.predicted_class_counts == [60, 0, 0]


def test_gradcam_energy_share_outside_lungs():
    mask = np.zeros((4, 4), bool)
    mask[:, :2] = True
    heatmap = np.zeros((4, 4))
    heatmap[:, :2] = 1.0
    heatmap[0, 3] = 2.0  # 2 of a total of 10 lie outside
    assert shortcut_audit.gradcam_share_outside(heatmap, mask) == pytest.approx(0.2)
    assert shortcut_audit.gradcam_share_outside(np.zeros((4, 4)), mask) is None


def test_audit_summarises_gradcam_maps_and_attaches_loso(tmp_path):
    images, labels, mask = _inputs(9)
    inside_map = mask.astype(np.float32)
    outside_map = (~mask).astype(np.float32)
    (tmp_path / "loso.json").write_text('{"results": [{"source": "cxnet", "accuracy": 0.4}]}')
    audit = shortcut_audit.run_shortcut_audit(
        model_inputs=images,
        y_true=labels,
        predict_model_inputs=_lung_reader,
        heatmaps=[inside_map, outside_map],
        heatmap_indices=[0, 4],
        loso=shortcut_audit.load_loso(tmp_path),
        n_resamples=50,
    )
    assert audit.gradcam.n == 2
    assert audit.gradcam.mean_share_outside_lungs == pytest.approx(0.5)
    assert audit.gradcam.share_of_images_mostly_outside == pytest.approx(0.5)
    assert audit.gradcam.area_share_outside_lungs == pytest.approx(1 - mask.mean())
    assert audit.loso == {"results": [{"source": "cxnet", "accuracy": 0.4}]}
    assert shortcut_audit.load_loso(tmp_path / "missing") is None
    as_dict = audit.to_dict()
    assert as_dict["lungs_hidden"]["accuracy"] == audit.lungs_hidden.accuracy


def test_report_tabulates_loso_runs():
    from ml.evaluation.report import loso_lines

    loso = {
        "runs": {
            "seed/cxnet": {"architecture": "seed", "left_out_source": "cxnet", "n": 400, "accuracy": 0.5,
                           "macro_auc": None, "covid_auc": 0.61, "covid_sensitivity_at_threshold": 0.2,
                           "covid_specificity_at_threshold": 0.9},
        },
        "note": "each run trains without one source",
    }
    lines = loso_lines(loso)
    assert lines[0].startswith("| architecture | left-out source | test images")
    assert "| seed | cxnet | 400 | 0.500 | n/a | 0.610 | 0.200 | 0.900 |" in lines
    assert "each run trains without one source" in lines
    assert loso_lines({"other": 1})[0] == "```json"


def test_fixed_fill_value_for_inputs_already_blank_outside_the_lungs():
    image = np.zeros((4, 4, 1), dtype=np.float32)
    region = np.zeros((4, 4), bool)
    region[1:3, 1:3] = True
    image[1:3, 1:3, 0] = 0.8
    # Preprocessing blanked the outside to 0: "lungs only" must give back the input unchanged.
    assert np.array_equal(shortcut_audit.keep_only_lungs(image, region, fill_value=0.0), image)
    assert not shortcut_audit.hide_lungs(image, region, fill_value=0.0).any()

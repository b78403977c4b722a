"""The familiarity check: Gaussian fit, threshold, serving and evaluation."""

import json
import shutil

import numpy as np
import pytest

from tests import images

from ml.evaluation.familiarity import summarize_familiarity
from ml.serving.familiarity import UNFAMILIAR, FamiliarityModel
from ml.training.familiarity import fit_familiarity, ledoit_wolf_covariance

MEANS = np.array([[0.0] * 8, [3.0] + [0.0] * 7, [0.0, 3.0] + [0.0] * 6])


def _features(n_per_class: int, *, seed: int, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per_class)
    features = MEANS[labels] + rng.normal(0.0, 1.0, (labels.size, 8))
    features[:, 7] += shift  # another collection: a direction the training films never varied in this much
    return features * 10.0 + 5.0, labels  # features are not standardised in the network


def test_shrunk_covariance_is_invertible_with_more_features_than_films():
    centered = np.random.default_rng(0).normal(size=(20, 50))
    centered -= centered.mean(axis=0)
    covariance, shrinkage = ledoit_wolf_covariance(centered)
    assert 0.0 < shrinkage <= 1.0
    assert np.linalg.eigvalsh(covariance).min() > 0


def test_shrunk_covariance_approaches_the_true_one_with_many_films():
    true_scales = np.array([1.0, 2.0, 3.0, 4.0])
    centered = np.random.default_rng(1).normal(size=(5000, 4)) * np.sqrt(true_scales)
    covariance, _shrinkage = ledoit_wolf_covariance(centered - centered.mean(axis=0))
    np.testing.assert_allclose(np.diag(covariance), true_scales, rtol=0.1)


def test_films_from_another_collection_score_above_the_threshold_and_familiar_ones_rarely_do():
    train, labels = _features(200, seed=0)
    val, _ = _features(100, seed=1)
    familiar, _ = _features(200, seed=2)
    foreign, _ = _features(100, seed=3, shift=6.0)

    model = fit_familiarity(train_features=train, train_labels=labels, val_features=val, quantile=0.95)

    assert np.mean(model.scores(val) <= model.threshold) == pytest.approx(0.95, abs=0.01)
    assert np.mean(model.scores(familiar) > model.threshold) < 0.12
    assert np.mean(model.scores(foreign) > model.threshold) > 0.9
    # A film sitting on a class mean is as familiar as can be, whichever class.
    on_means = MEANS * 10.0 + 5.0
    assert np.all(model.scores(on_means) < np.median(model.scores(familiar)))


def test_fit_refuses_a_quantile_that_would_flag_most_films():
    train, labels = _features(20, seed=0)
    with pytest.raises(ValueError, match="quantile"):
        fit_familiarity(train_features=train, train_labels=labels, val_features=train, quantile=0.2)


def test_statistics_survive_a_round_trip_through_bytes(tmp_path):
    train, labels = _features(50, seed=0)
    model = fit_familiarity(train_features=train, train_labels=labels, val_features=train[:30])
    path = tmp_path / "familiarity.npz"
    path.write_bytes(model.to_bytes())
    loaded = FamiliarityModel.load(path)
    assert loaded.threshold == model.threshold and loaded.quantile == model.quantile
    np.testing.assert_array_equal(loaded.scores(train), model.scores(train))


def test_summary_per_source_and_how_well_the_score_finds_the_left_out_source():
    scores = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 2.5])
    correct = np.array([True, True, False, False, True, True])
    sources = ["a", "a", "a", "b", "b", "b"]

    summary = summarize_familiarity(scores=scores, threshold=5.0, correct=correct, sources=sources,
                                    left_out_source="b")

    assert summary["n"] == 6 and summary["n_flagged"] == 2 and summary["flagged_share"] == pytest.approx(1 / 3)
    assert summary["accuracy_flagged"] == pytest.approx(0.5) and summary["accuracy_familiar"] == pytest.approx(0.75)
    assert summary["per_source"]["a"]["n_flagged"] == 0 and summary["per_source"]["a"]["accuracy_flagged"] is None
    assert summary["per_source"]["b"]["flagged_share"] == pytest.approx(2 / 3)
    assert summary["left_out_auc"] == pytest.approx(8 / 9)  # 2.5 (b) ranks below 3.0 (a)
    only_b = summarize_familiarity(scores=scores[3:], threshold=5.0, correct=correct[3:], sources=sources[3:],
                                   left_out_source="b")
    assert only_b["left_out_auc"] is None  # nothing familiar to tell it from


def test_predictor_flags_a_film_unlike_the_training_films(familiar_model_dir):
    from tests.conftest import synthetic_training_set

    from ml.serving.artifact import file_sha256, load_metadata, verify_artifact
    from ml.serving.predictor import Predictor

    metadata = load_metadata(familiar_model_dir)
    assert metadata.familiarity["features_sha256"] == file_sha256(familiar_model_dir / "features.tflite")
    assert verify_artifact(familiar_model_dir)  # model.tflite untouched
    predictor = Predictor.load(familiar_model_dir)
    films, _labels = synthetic_training_set(count_per_class=10, seed=12)
    familiar = [predictor.predict_one(film) for film in films]
    assert all(result.familiarity_score is not None for result in familiar)
    assert sum(UNFAMILIAR in result.warnings for result in familiar) <= 6

    foreign = predictor.predict_one(images.checkerboard())
    assert foreign.familiarity_score > metadata.familiarity["threshold"]
    assert UNFAMILIAR in foreign.warnings
    assert foreign.probabilities  # flagged, still answered


def test_predictor_without_the_check_scores_nothing(tiny_model_dir):
    from tests.conftest import synthetic_training_set

    from ml.serving.predictor import Predictor

    result = Predictor.load(tiny_model_dir).predict_one(synthetic_training_set()[0][0])
    assert result.familiarity_score is None and UNFAMILIAR not in result.warnings


def test_a_tampered_statistics_file_is_refused(familiar_model_dir, tmp_path):
    from ml.serving.predictor import Predictor

    copy = tmp_path / "tampered"
    shutil.copytree(familiar_model_dir, copy)
    with open(copy / "familiarity.npz", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ValueError, match="SHA-256"):
        Predictor.load(copy)


def test_evaluation_reports_familiarity_with_a_picture(familiar_model_dir, tmp_path):
    from tests.conftest import write_synthetic_folder

    from ml.evaluation import evaluate

    data = write_synthetic_folder(tmp_path / "external", count_per_class=4, seed=13)
    out = tmp_path / "eval"

    assert evaluate.main(["--model", str(familiar_model_dir), "--data", str(data), "--out", str(out), "--quiet",
                          "--bootstrap", "50", "--gradcam-samples", "0"]) == 0

    familiarity = json.loads((out / "metrics.json").read_text())["familiarity"]
    assert familiarity["n"] == 12 and familiarity["quantile"] == 0.95
    assert familiarity["per_source"]["unknown"]["n"] == 12
    assert familiarity["left_out_source"] is None and familiarity["left_out_auc"] is None
    assert (out / "familiarity.png").read_bytes().startswith(b"\x89PNG")
    assert "Familiarity: films unlike the training films" in (out / "report.md").read_text()


def test_shift_table_measures_every_shift_against_the_films_as_stored(familiar_model_dir):
    from tests.conftest import synthetic_training_set

    from ml.evaluation.familiarity import shift_table, shifts
    from ml.serving.predictor import Predictor

    predictor = Predictor.load(familiar_model_dir)
    films, labels = synthetic_training_set(count_per_class=4, seed=14)

    table = shift_table(predictor=predictor, films=films, labels=labels, progress=False)

    assert list(table) == [shift.name for shift in shifts()]
    assert {"jpeg_q90", "half_resolution", "gamma_0.8", "rotated_90", "inverted"} <= set(table)
    as_stored = [predictor.predict_one(film) for film in films]
    assert table["none"]["same_class"] == 1.0
    assert table["none"]["accuracy"] == pytest.approx(
        np.mean([predictor.class_names.index(r.label) == k for r, k in zip(as_stored, labels)]))
    assert table["none"]["unfamiliar"] == pytest.approx(np.mean([UNFAMILIAR in r.warnings for r in as_stored]))
    for row in table.values():
        assert row["n"] == 12 and 0.0 <= row["unfamiliar"] <= 1.0 and 0.0 <= row["same_class"] <= 1.0


def test_the_familiarity_pass_gives_the_same_heatmap_as_the_heatmap_model(familiar_model_dir):
    from tests.conftest import synthetic_training_set

    from ml.serving.artifact import load_metadata
    from ml.serving.predictor import Predictor

    assert load_metadata(familiar_model_dir).familiarity["class_maps"] is True  # pooling + Dense head
    predictor = Predictor.load(familiar_model_dir)
    for film in synthetic_training_set(count_per_class=2, seed=15)[0]:
        result = predictor.predict_one(film, with_heatmap=True)
        from_cam = predictor.heatmap(result.model_input[..., None], predictor.class_names.index(result.label))
        np.testing.assert_allclose(result.heatmap, from_cam, atol=1e-5)
        assert result.heatmap.max() == pytest.approx(1.0) or result.heatmap.max() == 0.0
        # The same pass gives the pooled features (ml.evaluate's source probe reads them instead of a second pass).
        np.testing.assert_array_equal(result.features, predictor.features(result.model_input[..., None]))

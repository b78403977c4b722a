"""End-to-end on synthetic data: train tiny, export, load with Predictor."""

import json

import numpy as np
import pytest

from ml.serving.artifact import file_sha256, load_metadata, verify_artifact
from ml.serving.labels import CLASS_NAMES


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory):
    from ml.training.recipe import recipe_for
    from ml.training.train import train_from_arrays

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    images = rng.uniform(0, 0.3, (60, 64, 64)).astype(np.float32)
    for index, label in enumerate(labels):
        images[index, 8 + 16 * label:24 + 16 * label, 8:56] += 0.6  # class = band position
    out = tmp_path_factory.mktemp("artifact") / "tiny"
    path = train_from_arrays(images, labels, recipe=recipe_for("tiny", seed=1), out_dir=out, name="tiny", version="0",
                             familiarity=True, monitoring=True)
    return path, images


def test_artifact_folder_is_complete(tiny_artifact):
    path, _ = tiny_artifact
    metadata = load_metadata(path)
    assert metadata.class_names == list(CLASS_NAMES)
    assert metadata.input_size == 64 and metadata.architecture == "tiny"
    assert 0 < metadata.temperature and 0 <= metadata.covid_threshold <= 1
    assert metadata.sha256 == file_sha256(path / "model.tflite")
    assert verify_artifact(path)
    for name in ("model.keras", "history.json", "split.json", "features.tflite", "familiarity.npz"):
        assert (path / name).is_file()
    assert metadata.familiarity["n_train"] + metadata.familiarity["n_val"] == 60
    # The site monitor's reference: the served model on the 12 validation films, exactly as the worker runs it.
    reference = metadata.monitoring
    assert reference["n"] == 12 and sum(map(sum, reference["confusion"])) == 12
    assert [sum(row) for row in reference["confusion"]] == [4, 4, 4]
    assert {code: sum(counts) for code, counts in reference["warnings_by_predicted"].items()} == reference["warnings"]
    assert set(json.loads((path / "split.json").read_text())) >= {"train", "val"}
    assert metadata.training["tflite_max_abs_difference"] <= 1e-4


def test_tflite_matches_keras_on_fixed_inputs(tiny_artifact):
    import keras

    from ml.training.export import max_tflite_difference

    path, _ = tiny_artifact
    model = keras.models.load_model(path / "model.keras", compile=False)
    inputs = np.random.default_rng(5).uniform(0, 1, (4, 64, 64, 1)).astype(np.float32)
    assert max_tflite_difference(keras_model=model, tflite_path=path / "model.tflite", inputs=inputs) <= 1e-4


def test_predictor_returns_calibrated_probabilities_and_heatmap(tiny_artifact):
    from ml.serving.predictor import Predictor

    path, images = tiny_artifact
    predictor = Predictor.load(path)
    result = predictor.predict_one(images[0], with_heatmap=True)
    assert set(result.probabilities) == set(CLASS_NAMES)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.label in CLASS_NAMES
    assert result.covid_alert == (result.covid_probability >= result.covid_threshold)
    assert result.heatmap.shape == (64, 64) and 0 <= result.heatmap.min() and result.heatmap.max() <= 1
    assert result.model_input.shape == (64, 64)
    assert len(predictor.predict([images[1], images[2]])) == 2


def test_predictor_warns_when_a_change_that_should_not_matter_moves_the_answer(tiny_artifact, monkeypatch):
    import ml.serving.stability
    from ml.serving.predictor import Predictor
    from ml.serving.stability import UNSTABLE, Perturbation

    path, images = tiny_artifact
    predictor = Predictor.load(path)
    first = images[0]
    answer = predictor.predict_one(first)
    # A film whose answer differs (class or COVID-19 alert) from the first one's.
    other = next(film for film in [*images, *(1.0 - images)]
                 if (result := predictor.predict_one(film)).label != answer.label or result.covid_alert != answer.covid_alert)

    plain = predictor.predict_one(first)
    checked = predictor.predict_one(first, check_stability=True)
    assert checked.probabilities == plain.probabilities  # the check adds a warning at most, never changes the answer
    assert UNSTABLE not in plain.warnings

    monkeypatch.setattr(ml.serving.stability, "PERTURBATIONS", (Perturbation("same", "unchanged", lambda film: film),))
    assert UNSTABLE not in predictor.predict_one(first, check_stability=True).warnings
    # A "change" that swaps in a film of another class is the extreme case of a moved answer.
    monkeypatch.setattr(ml.serving.stability, "PERTURBATIONS", (Perturbation("swap", "another film", lambda film: other),))
    assert predictor.predict_one(first, check_stability=True).warnings == [UNSTABLE]
    assert predictor.predict_one(first).warnings == []
    # Far from every boundary (ml.serving.stability.near_a_boundary) the passes are skipped: no warning.
    monkeypatch.setattr("ml.serving.predictor.near_a_boundary", lambda *args, **kwargs: np.array([False]))
    assert predictor.predict_one(first, check_stability=True).warnings == []


def test_collect_loso_gathers_runs_by_architecture_and_source(tmp_path):
    from ml.serving.artifact import ArtifactMetadata, save_metadata
    from ml.training.train import collect_loso

    runs = []
    for architecture, source, auc in (("seed", "cohen", 0.57), ("sepres", "cohen", 0.58)):
        run = tmp_path / f"{architecture}_{source}"
        run.mkdir()
        save_metadata(artifact_dir=run, metadata=ArtifactMetadata(
            name="x", version="1", architecture=architecture, class_names=list(CLASS_NAMES), input_size=64,
            recipe={"preprocessing": {}}, temperature=1.0, covid_threshold=0.5, target_sensitivity=0.95, metrics={}, sha256="0",
            training={"leave_out_source": source, "n_train": 10, "epochs": 2},
        ))
        (run / "test_metrics.json").write_text(json.dumps({
            "n": 5, "covid_auc": auc, "accuracy": 0.6, "covid_sensitivity": 0.9, "covid_specificity": 0.2, "macro_auc": 0.6,
        }))
        (run / "split.json").write_text(json.dumps({"notes": {"loso_test": "all cohen"}}))
        runs.append(run)
    summary = collect_loso(run_dirs=runs, path=tmp_path / "out" / "loso.json")
    assert summary["runs"]["seed/cohen"]["covid_auc"] == 0.57
    assert summary["runs"]["sepres/cohen"]["architecture"] == "sepres"
    assert json.loads((tmp_path / "out" / "loso.json").read_text()) == summary
    assert summary["runs"]["seed/cohen"]["measured_by"].startswith("python -m ml train")

    # An ml.evaluate run of the LOSO test set (after recalibration) replaces the training-time numbers.
    evaluation = runs[1] / "loso_evaluation"
    evaluation.mkdir()
    (evaluation / "metrics.json").write_text(json.dumps({
        "n": 7, "accuracy": 0.7, "macro_auc": 0.65, "per_class": {"covid": {"auc": 0.61}},
        "threshold": {"sensitivity": 0.97, "specificity": 0.1},
    }))
    summary = collect_loso(run_dirs=runs[1:], path=tmp_path / "out" / "loso.json")
    updated = summary["runs"]["sepres/cohen"]
    assert (updated["n"], updated["covid_auc"], updated["covid_sensitivity_at_threshold"]) == (7, 0.61, 0.97)
    assert updated["measured_by"].startswith("python -m ml evaluate")
    assert summary["runs"]["seed/cohen"]["covid_auc"] == 0.57  # kept from the earlier call

"""The source probe: can the collection be read off a model's input, features or answers within one class?"""

import json
import shutil

import numpy as np
import pytest

from ml.evaluation.source_probe import (
    MIN_PATIENTS_PER_SOURCE,
    fit_logistic,
    input_grid,
    patient_folds,
    probe_findings,
    probe_model,
    probe_sources,
)

CLASSES = ["covid", "normal", "pneumonia"]


def _films(*, per_source: int, sources_by_class: dict[int, list[str]], seed: int, signal: float, d: int = 12):
    """Features with class structure everywhere and, when ``signal`` > 0, a collection offset in feature 0."""
    rng = np.random.default_rng(seed)
    features, labels, sources, patients = [], [], [], []
    for label, class_sources in sources_by_class.items():
        for position, source in enumerate(class_sources):
            for film in range(per_source):
                row = rng.normal(size=d)
                row[1] += 2.0 * label
                row[0] += signal * position
                features.append(row)
                labels.append(label)
                sources.append(source)
                patients.append(f"{source}-{label}-{film // 2}")  # two films per patient
    return np.array(features), np.array(labels), sources, patients


def test_logistic_fit_reaches_the_optimum_of_its_penalised_loss():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 6))
    labels = rng.integers(0, 3, size=150)
    x[:, 0] += labels
    weights, bias = fit_logistic(x, labels, n_labels=3, c=0.5)
    logits = x @ weights + bias
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    residual = probabilities - np.eye(3)[labels]
    # The gradient of sum(log loss) + ||W||^2 / (2 c) vanishes at the optimum (the bias is not penalised);
    # at the start its entries are of the order of the 150 films.
    np.testing.assert_allclose(x.T @ residual + weights / 0.5, 0.0, atol=1e-4)
    np.testing.assert_allclose(residual.sum(axis=0), 0.0, atol=1e-4)


def test_folds_keep_each_patient_together_and_spread_every_source():
    sources = ["a"] * 20 + ["b"] * 12
    patients = [f"a{i // 2}" for i in range(20)] + [f"b{i // 3}" for i in range(12)]
    folds = patient_folds(sources=sources, patients=patients, folds=4, seed=3)
    for patient in set(patients):
        assert len({folds[i] for i, p in enumerate(patients) if p == patient}) == 1
    for source in ("a", "b"):
        assert {folds[i] for i, s in enumerate(sources) if s == source} == {0, 1, 2, 3}


def test_a_planted_collection_signal_is_found_and_its_absence_is_not():
    layout = {0: ["cohen", "cxnet"], 1: ["nih"], 2: ["cohen", "nih"]}
    marked = _probe(per_source=40, sources_by_class=layout, seed=1, signal=3.0)
    assert marked.by_class["normal"] is None  # one source: nothing to tell apart
    for class_name in ("covid", "pneumonia"):
        probe = marked.by_class[class_name]
        assert probe.auc > 0.9 and probe.auc_ci[0] > 0.8
        assert probe.accuracy > probe.majority_share
        assert probe.sources == {source: 40 for source in probe.sources} and probe.patients == {
            source: 20 for source in probe.sources
        }
        assert probe.folds == 5

    # Without the offset the out-of-fold AUC is 0.49 +- 0.08 over seeds at this size; more films narrow it.
    clean = _probe(per_source=100, sources_by_class=layout, seed=1, signal=0.0)
    for class_name in ("covid", "pneumonia"):
        probe = clean.by_class[class_name]
        assert 0.35 < probe.auc < 0.65 and probe.auc_ci[0] < 0.5 < probe.auc_ci[1]


def _probe(**film_layout):
    features, labels, sources, patients = _films(**film_layout)
    return probe_sources(features=features, y_true=labels, sources=sources, patients=patients,
                         class_names=CLASSES, representation="features")


def test_three_sources_are_scored_by_macro_auc_and_thin_sources_are_left_out():
    per_source = 4 * MIN_PATIENTS_PER_SOURCE
    features, labels, sources, patients = _films(
        per_source=per_source, sources_by_class={0: ["a", "b", "c"], 2: ["a", "b"]}, seed=2, signal=4.0
    )
    # Source "b" of pneumonia keeps only two patients: too few to enter the probe.
    keep = np.array([not (label == 2 and source == "b" and int(patient.rsplit("-", 1)[1]) >= 2)
                     for label, source, patient in zip(labels, sources, patients)])
    result = probe_sources(
        features=features[keep], y_true=labels[keep], sources=np.array(sources)[keep],
        patients=np.array(patients)[keep], class_names=CLASSES, representation="features",
    )
    covid = result.by_class["covid"]
    assert set(covid.sources) == {"a", "b", "c"} and covid.auc > 0.8
    assert result.by_class["pneumonia"] is None
    assert result.skipped_sources == {"pneumonia": {"b": 2}}


def test_input_grid_is_the_block_mean_of_the_model_input():
    rng = np.random.default_rng(4)
    inputs = rng.random((3, 34, 34, 1)).astype(np.float32)
    grid = input_grid(inputs, grid=4)
    assert grid.shape == (3, 16)
    np.testing.assert_allclose(grid[1, 4 * 2 + 3], inputs[1, 16:24, 24:32, 0].mean(), rtol=1e-6)
    with pytest.raises(ValueError, match="smaller than"):
        input_grid(np.zeros((1, 8, 8)), grid=16)


def test_model_probe_covers_input_features_and_answers_and_reads_as_a_sentence():
    features, labels, sources, patients = _films(
        per_source=30, sources_by_class={0: ["cohen", "cxnet"], 2: ["cohen", "nih"]}, seed=5, signal=3.0
    )
    n = labels.size
    rng = np.random.default_rng(6)
    inputs = rng.random((n, 32, 32))
    probabilities = rng.dirichlet(np.ones(3), size=n)
    probes = probe_model(
        model_inputs=inputs, features=features, probabilities=probabilities, y_true=labels, sources=sources,
        patients=patients, class_names=CLASSES, n_resamples=200,
    )
    assert set(probes) == {"input", "features", "outputs"}
    assert probes["input"].n_features == 16 * 16 and probes["outputs"].n_features == 3
    assert probes["features"].by_class["pneumonia"].auc > 0.9
    assert probes["outputs"].by_class["pneumonia"].auc < 0.75  # random answers carry no collection
    as_dicts = json.loads(json.dumps({name: probe.to_dict() for name, probe in probes.items()}))
    findings = probe_findings(as_dicts)
    assert len(findings) == 2
    assert findings[1].startswith("Within pneumonia (60 films), a linear probe on the model's features tells cohen "
                                  "from nih with AUC")
    assert "input 0." in findings[1] and "outputs 0." in findings[1]


def test_features_from_keras_equal_those_of_the_exported_features_model(familiar_model_dir, tmp_path):
    from tests.conftest import synthetic_training_set

    from ml.serving.predictor import Predictor
    from ml.serving.preprocess import preprocess_checked

    without_check = tmp_path / "no-familiarity"
    shutil.copytree(familiar_model_dir, without_check)
    metadata_path = without_check / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata.pop("familiarity")
    metadata_path.write_text(json.dumps(metadata))

    exported, keras_backed = Predictor.load(familiar_model_dir), Predictor.load(without_check)
    films, _labels = synthetic_training_set(count_per_class=2, seed=9)
    for film in films:
        model_input = preprocess_checked(film, exported.config)[0]
        from_tflite, from_keras = exported.features(model_input), keras_backed.features(model_input)
        assert from_tflite.ndim == 1 and from_tflite.shape == from_keras.shape
        np.testing.assert_allclose(from_tflite, from_keras, atol=1e-4 * max(1.0, np.abs(from_keras).max()))

"""Site adaptation (ml.training.adapt) and its evaluation (ml.evaluation.site) on the tiny synthetic model."""

import json

import numpy as np
import pytest

from tests.conftest import write_synthetic_folder

from ml.evaluation.features import FeatureCache, Head
from ml.evaluation.site import paired_difference, refusal_reasons
from ml.serving.artifact import load_metadata, verify_artifact
from ml.evaluation.site import SITE_TEST, patient_position, site_part
from ml.training.adapt import fit_head, fit_weights, main


def test_site_part_is_stable_and_keeps_patients_together():
    parts = {patient: site_part(patient) for patient in (f"patient-{i}" for i in range(400))}
    assert parts == {patient: site_part(patient) for patient in parts}
    share = sum(part == SITE_TEST for part in parts.values()) / len(parts)
    assert 0.4 < share < 0.6
    # A smaller adaptation share takes a subset of a larger one's patients (the site-film curve is nested).
    ten = {p for p in parts if patient_position(p) >= 0.9}
    thirty = {p for p in parts if patient_position(p) >= 0.7}
    assert ten < thirty


def test_site_weight_is_the_site_share_of_the_fit():
    weights = fit_weights(dev_labels=np.array([0, 1, 1, 2]), site_labels=np.array([0, 2]), site_weight=0.3)
    assert weights[:4].sum() == pytest.approx(0.7)
    assert weights[4:].sum() == pytest.approx(0.3)


def test_fit_head_learns_a_separable_problem_and_stays_a_dense_head():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 50)
    features = rng.normal(0, 1, (150, 8)) + np.eye(3, 8)[labels] * 4 + 10  # offset: standardisation folds back
    initial = Head(kernel=np.zeros((8, 3)), bias=np.zeros(3))
    head = fit_head(features=features, labels=labels, weights=np.ones(150), initial=initial)
    assert (head.raw_probabilities(features).argmax(axis=1) == labels).mean() > 0.95


def test_paired_difference_of_a_model_with_itself_is_zero():
    rng = np.random.default_rng(1)
    y_true = np.repeat([0, 1, 2], 20)
    probabilities = rng.dirichlet(np.ones(3), 60)
    paired = paired_difference(y_true=y_true, candidate=probabilities, candidate_threshold=0.3,
                               active=probabilities, active_threshold=0.3, n_resamples=50)
    assert paired["macro_auc"]["difference"] == 0
    assert paired["macro_auc"]["difference_ci"] == [0, 0]


def test_refuses_a_candidate_that_misses_the_sensitivity_target():
    comparison = {"n": 10, "paired": {}, "candidate": {"threshold": {"sensitivity": 0.8}}}
    reasons = refusal_reasons(comparison, target_sensitivity=0.95)
    assert len(reasons) == 1 and "below the target" in reasons[0]
    assert refusal_reasons(None, target_sensitivity=0.95)


@pytest.mark.parametrize("steps", ["calibrate", "head", "finetune"])
def test_adapt_writes_a_servable_candidate_with_its_parent_recorded(steps, familiar_model_dir, tmp_path):
    site = write_synthetic_folder(tmp_path / "site", count_per_class=8, seed=5)
    out = tmp_path / "candidate"
    code = main(["--model", str(familiar_model_dir), "--data", str(site), "--out", str(out), "--steps", steps,
                 "--version", f"site-{steps}", "--feature-cache", str(tmp_path / "cache"), "--resamples", "50",
                 "--threshold-confidence", "0"])
    assert code == 0
    metadata = load_metadata(out)
    assert verify_artifact(out)
    adaptation = metadata.training["adaptation"]
    assert adaptation["parent"]["version"] == "1" and adaptation["steps"][-1] == steps
    assert metadata.version == f"site-{steps}"
    assert metadata.monitoring["subset"] == "site_adaptation"
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["site_test"]["n"] + adaptation["n_site_adaptation"] == 24
    assert set(evaluation["site_test"]["paired"]) >= {"macro_auc", "covid_sensitivity"}
    header = (out / "predictions.csv").read_text().splitlines()[0]
    assert header.startswith("file,source,patient,true_label,p_covid")
    if steps == "calibrate":
        assert metadata.sha256 == load_metadata(familiar_model_dir).sha256
    if steps == "finetune":
        assert adaptation["finetune"]["layers"] == ["gradcam_features", "logits"]
        assert adaptation["backbone"] == metadata.sha256  # a new backbone: its own feature cache
    if steps == "head":
        assert metadata.sha256 != load_metadata(familiar_model_dir).sha256
        assert metadata.familiarity["n_train"] == adaptation["n_site_adaptation"]  # no dev films reachable
        assert adaptation["backbone"] == load_metadata(familiar_model_dir).sha256


def test_cached_features_are_not_recomputed(familiar_model_dir, tmp_path):
    from ml.evaluation.features import LabelledFilm, extract_features
    from ml.serving.predictor import Predictor

    predictor = Predictor.load(familiar_model_dir)
    cache = FeatureCache(tmp_path / "cache")
    film = LabelledFilm(key="a" * 64, label=0, patient="p", load=lambda: np.full((64, 64), 0.5, np.float32))
    first = extract_features(predictor=predictor, films=[film], cache=cache)

    def unreadable():
        raise AssertionError("the film was decoded again")

    again = extract_features(predictor=predictor, films=[LabelledFilm(key=film.key, label=0, patient="p",
                                                                      load=unreadable)], cache=cache)
    np.testing.assert_array_equal(first.features, again.features)

"""Metrics checked against small cases computed by hand."""

import numpy as np
import pytest

from ml.evaluation import metrics


def test_accuracy_counts_matches():
    assert metrics.accuracy(y_true=[0, 1, 2, 2], y_pred=[0, 2, 2, 2]) == pytest.approx(0.75)


def test_accuracy_of_nothing_is_undefined():
    assert metrics.accuracy(y_true=[], y_pred=[]) is None


def test_confusion_matrix_rows_are_true_class():
    matrix = metrics.confusion_matrix(y_true=[0, 0, 1, 2, 2, 2], y_pred=[0, 1, 1, 2, 0, 2], n_classes=3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_per_class_precision_recall_f1_by_hand():
    # class 0: TP 1, predicted 2, true 2 -> P 1/2, R 1/2, F1 1/2
    # class 1: TP 1, predicted 2, true 1 -> P 1/2, R 1,   F1 2/3
    # class 2: TP 2, predicted 2, true 3 -> P 1,   R 2/3, F1 0.8
    scores = metrics.per_class_scores(y_true=[0, 0, 1, 2, 2, 2], y_pred=[0, 1, 1, 2, 0, 2], n_classes=3)
    assert [s.precision for s in scores] == pytest.approx([0.5, 0.5, 1.0])
    assert [s.recall for s in scores] == pytest.approx([0.5, 1.0, 2 / 3])
    assert [s.f1 for s in scores] == pytest.approx([0.5, 2 / 3, 0.8])
    assert [s.support for s in scores] == [2, 1, 3]


def test_class_never_seen_or_predicted_has_undefined_scores():
    scores = metrics.per_class_scores(y_true=[0, 0, 1], y_pred=[0, 1, 1], n_classes=3)
    assert scores[2].precision is None and scores[2].recall is None and scores[2].f1 is None
    assert scores[2].support == 0


def test_auc_perfect_and_inverted():
    assert metrics.roc_auc(y_true_binary=[0, 0, 1, 1], scores=[0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.roc_auc(y_true_binary=[0, 0, 1, 1], scores=[0.9, 0.8, 0.2, 0.1]) == 0.0


def test_auc_counts_ties_as_half():
    # Pairs (pos, neg): (0.5 vs 0.5) tie -> 0.5, (0.5 vs 0.1) -> 1,
    # (0.9 vs 0.5) -> 1, (0.9 vs 0.1) -> 1: total 3.5 / 4.
    assert metrics.roc_auc(y_true_binary=[1, 1, 0, 0], scores=[0.5, 0.9, 0.5, 0.1]) == pytest.approx(0.875)


def test_auc_all_scores_equal_is_chance():
    assert metrics.roc_auc(y_true_binary=[1, 0, 1, 0, 0], scores=[0.3] * 5) == pytest.approx(0.5)


def test_auc_without_positives_is_undefined():
    assert metrics.roc_auc(y_true_binary=[0, 0, 0], scores=[0.1, 0.2, 0.3]) is None
    assert metrics.roc_curve(y_true_binary=[0, 0], scores=[0.1, 0.2]).auc is None


def test_roc_curve_points_and_trapezoid_match_auc():
    curve = metrics.roc_curve(y_true_binary=[1, 1, 0, 0], scores=[0.5, 0.9, 0.5, 0.1])
    # Thresholds 0.9, 0.5 (tie: one diagonal step), 0.1.
    assert curve.true_positive_rate.tolist() == [0.0, 0.5, 1.0, 1.0]
    assert curve.false_positive_rate.tolist() == [0.0, 0.0, 0.5, 1.0]
    assert curve.thresholds[1:].tolist() == [0.9, 0.5, 0.1]
    trapezoid = np.trapezoid(curve.true_positive_rate, curve.false_positive_rate)
    assert trapezoid == pytest.approx(curve.auc) == pytest.approx(0.875)


def test_trapezoid_equals_rank_auc_on_random_scores_with_ties():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, size=200).astype(bool)
    scores = np.round(rng.random(200) + 0.3 * labels, 1)  # rounding makes many ties
    curve = metrics.roc_curve(y_true_binary=labels, scores=scores)
    # Brute force over all positive/negative pairs.
    pos, neg = scores[labels], scores[~labels]
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert curve.auc == pytest.approx(pairwise)
    assert np.trapezoid(curve.true_positive_rate, curve.false_positive_rate) == pytest.approx(pairwise)


def test_macro_auc_skips_class_without_positives():
    y_true = [0, 0, 1, 1]
    probabilities = np.array(
        [[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.7, 0.2, 0.1]]
    )
    per_class = metrics.one_vs_rest_auc(y_true=y_true, probabilities=probabilities)
    # class 0: positives 0.8, 0.6 vs negatives 0.3, 0.7 -> (1 + 1 + 1 + 0) / 4
    # class 1: positives 0.6, 0.2 vs negatives 0.1, 0.3 -> (1 + 1 + 1 + 0) / 4
    assert per_class[0] == pytest.approx(0.75)
    assert per_class[1] == pytest.approx(0.75)
    assert per_class[2] is None
    assert metrics.macro_auc(y_true=y_true, probabilities=probabilities) == pytest.approx(0.75)


def test_ece_by_hand_with_four_bins():
    # bin (0.5, 0.75]: conf 0.6, acc 1 -> |1 - 0.6| = 0.4, weight 1/2
    # bin (0.75, 1]:   conf 0.9, acc 0.5 -> 0.4, weight 1/2
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.6, 0.4]])
    y_true = [0, 1, 1, 0]
    result = metrics.expected_calibration_error(y_true=y_true, probabilities=probabilities, n_bins=4)
    assert result.ece == pytest.approx(0.4)
    assert result.bin_counts == [0, 0, 2, 2]
    assert result.bin_accuracy[2] == pytest.approx(1.0)
    assert result.bin_confidence[3] == pytest.approx(0.9)
    assert result.bin_accuracy[0] is None


def test_ece_is_zero_for_perfectly_calibrated_bins():
    # 10 cases at confidence 0.8 with 8 correct.
    probabilities = np.tile([0.8, 0.1, 0.1], (10, 1))
    y_true = [0] * 8 + [1] * 2
    assert metrics.expected_calibration_error(y_true=y_true, probabilities=probabilities).ece == pytest.approx(0.0)


def test_ece_default_uses_fifteen_bins_and_bin_edges_are_right_closed():
    # 1/15 exactly belongs to bin 0, just above goes to bin 1.
    probabilities = np.array([[1 / 15, 0.0], [1 / 15 + 1e-9, 0.0]])
    result = metrics.expected_calibration_error(y_true=[0, 0], probabilities=probabilities)
    assert result.n_bins == 15
    assert result.bin_counts[0] == 1 and result.bin_counts[1] == 1


def test_sensitivity_and_specificity_at_threshold():
    labels = [1, 1, 1, 1, 0, 0]
    scores = [0.9, 0.5, 0.49, 0.1, 0.5, 0.2]
    assert metrics.sensitivity_at_threshold(y_true_binary=labels, scores=scores, threshold=0.5) == 0.5
    assert metrics.specificity_at_threshold(y_true_binary=labels, scores=scores, threshold=0.5) == 0.5
    assert metrics.sensitivity_at_threshold(y_true_binary=[0, 0], scores=[0.1, 0.2], threshold=0.5) is None


def test_bootstrap_is_reproducible_with_a_seed_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    correct = rng.random(300) < 0.7

    def statistic(indices):
        return float(correct[indices].mean())

    first = metrics.bootstrap_ci(statistic=statistic, n=300, n_resamples=300, seed=7)
    second = metrics.bootstrap_ci(statistic=statistic, n=300, n_resamples=300, seed=7)
    assert (first.low, first.high) == (second.low, second.high)
    assert first.low < correct.mean() < first.high
    # Binomial standard error ~0.026: the 95% interval is about +-0.05 wide.
    assert 0.06 < first.high - first.low < 0.14


def test_bootstrap_resamples_whole_patients():
    # Two patients, each with many identical images: a patient-level bootstrap
    # can only produce 0, 0.5 or 1 as the accuracy.
    correct = np.array([1.0] * 50 + [0.0] * 50)
    groups = ["a"] * 50 + ["b"] * 50
    seen = set()

    def statistic(indices):
        value = float(correct[indices].mean())
        seen.add(round(value, 6))
        return value

    metrics.bootstrap_ci(statistic=statistic, n=100, groups=groups, n_resamples=200, seed=1)
    assert seen <= {0.0, 0.5, 1.0}


def test_bootstrap_drops_undefined_resamples():
    labels = np.array([1] + [0] * 9)
    scores = np.linspace(0, 1, 10)

    def statistic(indices):
        return metrics.roc_auc(y_true_binary=labels[indices], scores=scores[indices])

    interval = metrics.bootstrap_ci(statistic=statistic, n=10, n_resamples=200, seed=0)
    assert 0 < interval.n_valid < 200  # some resamples draw no positive


def test_bootstrap_with_no_defined_value_has_no_bounds():
    interval = metrics.bootstrap_ci(statistic=lambda indices: None, n=5, n_resamples=10)
    assert interval.low is None and interval.high is None and interval.n_valid == 0


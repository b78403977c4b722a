"""The stability check: benign changes to a film, and how often the answer moves."""

import numpy as np
import pytest

from tests import images

from ml.serving.stability import (
    PERTURBATIONS,
    answer_moves,
    changed_films,
    gamma_adjusted,
    half_resolution,
    jpeg_reencoded,
    summarize_stability,
)


def test_perturbations_keep_a_film_a_film():
    film = images.gradient(96, 80)
    for perturbation in PERTURBATIONS:
        changed = perturbation.apply(film)
        assert changed.dtype == np.float32 and changed.ndim == 2
        assert 0.0 <= changed.min() and changed.max() <= 1.0
    assert half_resolution(film).shape == (40, 48)
    assert jpeg_reencoded(film).shape == film.shape
    # A quality-90 JPEG is close to, but not exactly, the 8-bit film.
    difference = np.abs(jpeg_reencoded(film) - np.round(film * 255) / 255)
    assert 0 < difference.mean() < 0.02
    # Gamma below 1 brightens mid-tones and keeps black and white.
    assert gamma_adjusted(np.array([[0.0, 0.25, 1.0]], np.float32))[0].tolist() == pytest.approx([0.0, 0.25**0.8, 1.0])


def test_changes_are_made_at_training_resolution_whatever_the_film_size():
    def half(film):
        return next(changed for perturbation, changed in changed_films(film) if perturbation.name == "half_resolution")

    detector = images.gradient(1600, 2000)  # width 1600, height 2000
    assert half(detector).shape == (256, 205)  # half of the 512-pixel training frame
    small = images.gradient(96, 80)
    assert half(small).shape == (40, 48)  # films under 512 pixels are not enlarged first
    assert [p.name for p, _ in changed_films(small)] == [p.name for p in PERTURBATIONS]


def test_counts_class_changes_alert_flips_and_probability_changes():
    y_true = np.array([0, 1, 2, 0])
    original = np.array([[0.60, 0.30, 0.10], [0.20, 0.70, 0.10], [0.10, 0.20, 0.70], [0.40, 0.50, 0.10]])
    changed = np.array([[0.55, 0.35, 0.10], [0.20, 0.70, 0.10], [0.10, 0.60, 0.30], [0.55, 0.40, 0.05]])

    summary = summarize_stability(
        y_true=y_true, probabilities=original, perturbed={"jpeg_q90": changed}, positive_index=0, threshold=0.5
    )
    result = summary["perturbations"]["jpeg_q90"]

    assert result["name"] == "jpeg_q90" and result["description"].startswith("re-encoded as JPEG")
    assert result["n"] == 4
    assert result["same_class"] == pytest.approx(0.5)  # films 3 (pneumonia -> normal) and 4 (normal -> covid) moved
    assert result["alert_changed"] == pytest.approx(0.25)  # film 4 crossed the 0.5 COVID-19 threshold
    assert result["probability_change_max"] == pytest.approx(0.40)
    assert result["probability_change_median"] == pytest.approx((0.05 + 0.15) / 2)
    assert result["accuracy_original"] == pytest.approx(0.75)
    assert result["accuracy"] == pytest.approx(0.75)  # film 3 is now wrong, film 4 now right

    # Films 3 and 4 would carry the "unstable" warning: the flagged half is 50% right, the rest all right.
    unstable = summary["unstable"]
    assert (unstable["n_flagged"], unstable["share_flagged"]) == (2, 0.5)
    assert unstable["accuracy_flagged"] == pytest.approx(0.5) and unstable["accuracy_unflagged"] == pytest.approx(1.0)
    # Alert (covid >= 0.5) right: film 1 yes, 2 yes, 3 yes (no alert, not covid), 4 no (no alert, but covid).
    assert unstable["alert_correct_flagged"] == pytest.approx(0.5) and unstable["alert_correct_unflagged"] == 1.0


def test_reports_the_flags_the_workers_gated_check_would_miss():
    original = np.array([[0.05, 0.90, 0.05], [0.10, 0.85, 0.05], [0.40, 0.55, 0.05]])
    changed = np.array([[0.05, 0.90, 0.05], [0.60, 0.35, 0.05], [0.50, 0.45, 0.05]])
    summary = summarize_stability(y_true=np.array([1, 1, 0]), probabilities=original,
                                  perturbed={"jpeg_q90": changed}, positive_index=0, threshold=0.5)
    # Films 2 and 3 move; the gate (margin 0.25) checks only film 3 (top two 0.15 apart). Film 2's 0.5 move is
    # larger than any the margin allows for: the one flag the worker would miss.
    assert summary["unstable"]["n_flagged"] == 2
    assert summary["unstable"]["gate"] == {"margin": 0.25, "n_checked": 1, "share_checked": pytest.approx(1 / 3),
                                           "n_flagged_missed": 1}


def test_the_gate_checks_films_near_the_class_or_the_alert_boundary():
    from ml.serving.stability import near_a_boundary

    probabilities = np.array([
        [0.05, 0.90, 0.05],  # far from both: skipped
        [0.05, 0.60, 0.35],  # top two 0.25 apart (< 2 x 0.25): checked
        [0.30, 0.65, 0.05],  # COVID-19 0.30, threshold 0.50: within 0.25 of the alert boundary, checked
    ])
    assert near_a_boundary(probabilities, positive_index=0, threshold=0.5).tolist() == [False, True, True]
    # With the production model's high-sensitivity threshold (0.10) a film with COVID-19 at 0.05 is near it.
    assert near_a_boundary(probabilities[0], positive_index=0, threshold=0.10).tolist() == [True]


def test_a_class_change_or_an_alert_flip_moves_the_answer():
    original = np.array([[0.45, 0.50, 0.05], [0.45, 0.50, 0.05], [0.45, 0.50, 0.05]])
    changed = np.array([[0.40, 0.55, 0.05], [0.55, 0.40, 0.05], [0.49, 0.46, 0.05]])
    moved = answer_moves(probabilities=original, changed=changed, positive_index=0, threshold=0.48)
    # Same class and both under the threshold; another class; same class but the alert flips (0.49 >= 0.48).
    assert moved.tolist() == [False, True, True]


def test_no_films_gives_undefined_numbers_not_an_error():
    empty = np.zeros((0, 3))
    summary = summarize_stability(
        y_true=np.zeros(0), probabilities=empty, perturbed={"gamma_0.8": empty}, positive_index=0, threshold=0.5
    )
    result = summary["perturbations"]["gamma_0.8"]
    assert result["n"] == 0 and result["same_class"] is None and result["accuracy"] is None
    assert summary["unstable"]["n_flagged"] == 0 and summary["unstable"]["accuracy_flagged"] is None

"""Applying temperature scaling (fitting it, and the alert threshold: ml.evaluation.operating_point).

Plain numpy: the model outputs probabilities, and softmax(log(p) / T) equals
temperature scaling of the logits because softmax ignores a per-row shift.
"""

from __future__ import annotations

import numpy as np

PROBABILITY_FLOOR = 1e-7


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """log p in float64, with p clipped to [1e-7, 1] so a zero stays finite."""
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), PROBABILITY_FLOOR, 1.0))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by each row's maximum so no exponential overflows."""
    logits = np.asarray(logits, dtype=np.float64)
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    return softmax(log_probabilities(probabilities) / temperature).astype(np.float32)



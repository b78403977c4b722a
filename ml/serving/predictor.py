"""Serving: load an artifact once per process and classify decoded images."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ml.serving.artifact import ArtifactMetadata, file_sha256, load_metadata
from ml.serving.calibration import apply_temperature
from ml.serving.familiarity import UNFAMILIAR, FamiliarityModel, features_model, split_outputs
from ml.serving.gradcam import gradcam, heatmap_from_class_maps
from ml.serving.interpreter import make_interpreter, run_interpreter, run_interpreter_outputs
from ml.serving.labels import POSITIVE_CLASS
from ml.serving.preprocess import CropBox, preprocess_checked, preprocess_located
from ml.serving.stability import UNSTABLE, answer_moves, changed_films, near_a_boundary


@dataclass
class PredictionResult:
    probabilities: dict[str, float]
    raw_probabilities: dict[str, float]
    label: str
    covid_probability: float
    covid_threshold: float
    covid_alert: bool
    inference_ms: float
    heatmap: np.ndarray | None
    model_input: np.ndarray
    # Codes from ml.preprocess ("lungs_not_found"), ml.familiarity ("unfamiliar") and ml.stability
    # ("unstable"): the result is less reliable.
    warnings: list[str] = field(default_factory=list)
    # ml.familiarity score (None: the artifact has no familiarity check); above its threshold: unfamiliar.
    familiarity_score: float | None = None
    # The pooled features (C,) of the familiarity pass (None without one); ml.evaluate's source probe reads them.
    features: np.ndarray | None = None
    # Where on the film the model input (and so the heatmap) comes from.
    crop_box: CropBox = field(default_factory=CropBox)


def _verified(path: Path, sha256: str | None) -> Path:
    if file_sha256(path) != sha256:
        raise ValueError(f"{path} does not match the SHA-256 recorded in its metadata")
    return path


class Predictor:
    """TFLite model plus its preprocessing and calibration.

    The TFLite interpreter is loaded once (single-threaded: one worker process
    per core). Heatmaps come from the artifact's cam.tflite when it has one
    (pooling + Dense heads: the class activation map equals Grad-CAM); otherwise
    Keras is loaded when a heatmap is first requested. An artifact with a
    familiarity check (features.tflite, familiarity.npz) scores every film and
    warns ``unfamiliar`` above its threshold.
    """

    def __init__(
        self, *, artifact_dir: Path, metadata: ArtifactMetadata, interpreter, cam_interpreter=None,
        features_interpreter=None, familiarity: FamiliarityModel | None = None,
    ) -> None:
        self.artifact_dir = artifact_dir
        self.metadata = metadata
        self.class_names = list(metadata.class_names)
        self.config = metadata.preprocess_config
        self._interpreter = interpreter
        self._keras_model = None
        self._keras_features_model = None
        self._cam_interpreter = cam_interpreter
        self._positive_index = self.class_names.index(POSITIVE_CLASS)
        self._features_interpreter = features_interpreter
        self._familiarity = familiarity

    @classmethod
    def load(cls, artifact_dir: Path | str, *, threads: int = 1) -> "Predictor":
        artifact_dir = Path(artifact_dir)
        metadata = load_metadata(artifact_dir)
        interpreter = make_interpreter(artifact_dir / metadata.model_file, threads=threads)
        cam_interpreter = None
        if metadata.cam_file:
            cam_path = artifact_dir / metadata.cam_file
            _verified(cam_path, metadata.cam_sha256)
            cam_interpreter = make_interpreter(cam_path, threads=threads)
        features_interpreter = familiarity = None
        if metadata.familiarity:
            features_path = _verified(artifact_dir / metadata.familiarity["features_file"],
                                      metadata.familiarity["features_sha256"])
            stats_path = _verified(artifact_dir / metadata.familiarity["stats_file"],
                                   metadata.familiarity["stats_sha256"])
            features_interpreter = make_interpreter(features_path, threads=threads)
            familiarity = FamiliarityModel.load(stats_path)
        return cls(artifact_dir=artifact_dir, metadata=metadata, interpreter=interpreter,
                   cam_interpreter=cam_interpreter, features_interpreter=features_interpreter,
                   familiarity=familiarity)

    @property
    def keras_model(self):
        if self._keras_model is None:
            import keras

            self._keras_model = keras.models.load_model(self.artifact_dir / self.metadata.keras_file, compile=False)
        return self._keras_model

    def predict(self, pixels_batch: list[np.ndarray]) -> list[PredictionResult]:
        return [self.predict_one(pixels) for pixels in pixels_batch]

    def predict_one(
        self, pixels: np.ndarray, *, with_heatmap: bool = False, check_stability: bool = False
    ) -> PredictionResult:
        """Classify one decoded film.

        ``check_stability`` also classifies the film after each of
        ``ml.stability.PERTURBATIONS`` (changes that should not matter) and adds
        the warning ``unstable`` when one of them moves the class or the COVID-19
        alert. It costs up to three more passes (``inference_ms`` excludes them),
        spent only where the answer lies near a boundary (``near_a_boundary``).
        """
        started = time.perf_counter()
        model_input, warnings, crop_box = preprocess_located(pixels, self.config)
        raw, calibrated = self._run(model_input)
        inference_ms = (time.perf_counter() - started) * 1000.0
        label_index = int(np.argmax(calibrated))
        familiarity_score, features, class_maps = self._familiarity_pass(model_input)
        if familiarity_score is not None and self._familiarity.is_unfamiliar(familiarity_score):
            warnings = [*warnings, UNFAMILIAR]
        if check_stability and self._near_a_boundary(calibrated) and self._answer_moves(pixels, calibrated):
            warnings = [*warnings, UNSTABLE]
        heatmap = None
        if with_heatmap and class_maps is not None:  # the familiarity pass gave the class maps already
            heatmap = heatmap_from_class_maps(class_maps, label_index, model_input.shape[0])
        elif with_heatmap:
            heatmap = self.heatmap(model_input, label_index)
        covid_probability = float(calibrated[self._positive_index])
        return PredictionResult(
            probabilities={name: float(p) for name, p in zip(self.class_names, calibrated)},
            raw_probabilities={name: float(p) for name, p in zip(self.class_names, raw)},
            label=self.class_names[label_index],
            covid_probability=covid_probability,
            covid_threshold=float(self.metadata.covid_threshold),
            covid_alert=covid_probability >= self.metadata.covid_threshold,
            inference_ms=inference_ms,
            heatmap=heatmap,
            model_input=model_input[..., 0],
            warnings=warnings,
            familiarity_score=familiarity_score,
            features=features,
            crop_box=crop_box,
        )

    def _run(self, model_input: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw and calibrated probabilities for one model input (S, S, 1)."""
        raw = run_interpreter(self._interpreter, model_input)
        return raw, apply_temperature(raw[None], self.metadata.temperature)[0]

    def familiarity_score(self, model_input: np.ndarray) -> float | None:
        """ml.familiarity score of one model input (S, S, 1); None when the artifact has no such check."""
        return self._familiarity_pass(model_input)[0]

    def _familiarity_pass(self, model_input: np.ndarray):
        """The familiarity score, the pooled features and, when features.tflite gives them, the class
        activation maps; (None, None, None) when the artifact has no familiarity check."""
        if self._familiarity is None:
            return None, None, None
        features, class_maps = split_outputs(run_interpreter_outputs(self._features_interpreter, model_input))
        return float(self._familiarity.scores(features[None])[0]), features, class_maps

    def features(self, model_input: np.ndarray) -> np.ndarray:
        """The pooled features (C,) the classifier head reads, for one model input (S, S, 1).

        From features.tflite when the artifact has it; otherwise from Keras (loaded on first use).
        """
        if self._features_interpreter is not None:
            return split_outputs(run_interpreter_outputs(self._features_interpreter, model_input))[0]
        if self._keras_features_model is None:

            self._keras_features_model = features_model(self.keras_model)
        outputs = self._keras_features_model([model_input[None]], training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return split_outputs([np.asarray(output)[0] for output in outputs])[0]

    def calibrated_probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities of one decoded film, nothing else (no warnings, heatmap or checks)."""
        return self._run(preprocess_checked(pixels, self.config)[0])[1]

    def _near_a_boundary(self, calibrated: np.ndarray) -> bool:
        return bool(near_a_boundary(calibrated, positive_index=self._positive_index,
                                    threshold=float(self.metadata.covid_threshold))[0])

    def _answer_moves(self, pixels: np.ndarray, calibrated: np.ndarray) -> bool:
        for _perturbation, changed_film in changed_films(pixels):
            changed = self.calibrated_probabilities(changed_film)
            if answer_moves(probabilities=calibrated, changed=changed, positive_index=self._positive_index,
                            threshold=float(self.metadata.covid_threshold))[0]:
                return True  # one change that moves the answer is enough
        return False

    def heatmap(self, model_input: np.ndarray, class_index: int) -> np.ndarray:
        """Grad-CAM (S, S) in [0, 1] for one preprocessed input (S, S, 1)."""

        if self._cam_interpreter is not None:
            class_maps = run_interpreter(self._cam_interpreter, model_input)
            return heatmap_from_class_maps(class_maps, class_index, model_input.shape[0])
        return gradcam(self.keras_model, model_input, class_index)

    def predict_model_inputs(self, model_inputs: np.ndarray) -> np.ndarray:
        """Raw (uncalibrated) probabilities for already-preprocessed inputs (N, S, S, 1); for evaluation."""
        return np.stack([run_interpreter(self._interpreter, image) for image in model_inputs])

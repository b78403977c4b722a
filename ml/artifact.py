"""The model artifact folder and its metadata.json.

A folder holds model.tflite (served), model.keras (Grad-CAM, retraining),
metadata.json, history.json and split.json. ``sha256`` pins model.tflite so
the portal can record exactly which model produced a prediction.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

METADATA_FILE = "metadata.json"
MODEL_FILE = "model.tflite"
KERAS_FILE = "model.keras"
HISTORY_FILE = "history.json"
SPLIT_FILE = "split.json"


@dataclass
class ArtifactMetadata:
    name: str
    version: str
    architecture: str
    class_names: list[str]
    input_size: int
    preprocessing: dict
    temperature: float
    covid_threshold: float
    target_sensitivity: float
    metrics: dict
    sha256: str
    model_file: str = MODEL_FILE
    keras_file: str = KERAS_FILE
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    training: dict = field(default_factory=dict)
    # One-sided confidence at which validation proved target_sensitivity (None: point estimate, older artifacts).
    threshold_confidence: float | None = None
    # Class-activation-map model (ml.export.add_cam): heatmaps without TensorFlow at serving time.
    cam_file: str | None = None
    cam_sha256: str | None = None
    # Familiarity check (ml.familiarity.add_familiarity): features model, fitted statistics and threshold.
    familiarity: dict | None = None
    # Site monitor's reference (ml.monitoring): what the model did on its validation films.
    monitoring: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ArtifactMetadata":
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_metadata(path: Path | str) -> ArtifactMetadata:
    """Read metadata.json from an artifact folder (or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / METADATA_FILE
    return ArtifactMetadata.from_dict(json.loads(path.read_text()))


def save_metadata(*, artifact_dir: Path | str, metadata: ArtifactMetadata) -> Path:
    path = Path(artifact_dir) / METADATA_FILE
    path.write_text(json.dumps(metadata.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def verify_artifact(artifact_dir: Path | str) -> bool:
    """True when model.tflite still matches the SHA-256 recorded at training time."""
    artifact_dir = Path(artifact_dir)
    metadata = load_metadata(artifact_dir)
    return file_sha256(artifact_dir / metadata.model_file) == metadata.sha256

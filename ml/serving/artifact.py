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

from ml.serving.preprocess import PreprocessConfig

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
    # Class-activation-map model (ml.training.export.add_cam): heatmaps without TensorFlow at serving time.
    cam_file: str | None = None
    cam_sha256: str | None = None
    # Familiarity check (ml.serving.familiarity.add_familiarity): features model, fitted statistics and threshold.
    familiarity: dict | None = None
    # Site monitor's reference (ml.serving.monitoring): what the model did on its validation films.
    monitoring: dict | None = None
    # How the network was trained (ml.training.recipe.Recipe.to_dict()): architecture, preprocessing,
    # augmentation, optimiser, learning rate, batch size, epochs, patience, seed, sensitivity target.
    recipe: dict = field(default_factory=dict)

    @property
    def preprocessing(self) -> dict:
        """How a decoded film becomes this model's input, as the recipe declares it."""
        return self.recipe["preprocessing"]

    @property
    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.preprocessing)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ArtifactMetadata":
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        if "recipe" not in data:
            values["recipe"] = _recipe_of_older_artifact(data)
        return cls(**values)


def _recipe_of_older_artifact(data: dict) -> dict:
    """The recipe of an artifact written before recipes were saved: its "preprocessing" and training record.

    The shipped artifacts (ml/artifacts/production, seed) are such; their metadata.json stays as it was
    written. Fields they did not record (patience) are left out.
    """
    training = data.get("training") or {}
    recipe = {"architecture": data["architecture"], "preprocessing": data["preprocessing"]}
    recorded = {"augmentation": "augmentation", "learning_rate": "learning_rate", "batch_size": "batch_size",
                "epochs": "max_epochs", "seed": "seed"}
    recipe.update({key: training[name] for key, name in recorded.items() if name in training})
    if "optimizer" in training:
        recipe["optimizer"] = training["optimizer"].lower()
    recipe.update({key: data[key] for key in ("target_sensitivity", "threshold_confidence") if key in data})
    return recipe


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


SHORTCUT_AUDIT_FILE = "shortcut_audit.json"
HELD_OUT_PARTS = ("test", "loso", "shortcut_audit")
HELD_OUT_TEST_KEYS = ("n", "accuracy", "macro_auc", "covid_auc", "covid_sensitivity", "covid_specificity", "ece")
HELD_OUT_LOSO_KEYS = ("n", "covid_auc", "accuracy")
OPERATING_POINT_KEYS = ("covid_sensitivity", "covid_specificity", "ece")


def shortcut_audit_record(metrics: dict) -> dict:
    """What a model version keeps of an ``ml.evaluation.evaluate`` result: its shortcut audit, condensed.

    For the portal's model version pages and the activation warning: accuracy with the lungs hidden against
    chance, where the Grad-CAM maps fall, whether a shortcut is suspected, and, per class, how well a probe
    reads the collection off the model's features (``ml.evaluation.source_probe``). Tied to the evaluated file's SHA-256.
    """
    audit = metrics["shortcut_audit"]
    data = metrics.get("data") or {}
    gradcam = audit.get("gradcam") or {}
    record = {
        "sha256": metrics["model"]["sha256"],
        "subset": data.get("subset"),
        "n": audit["n"],
        "chance_accuracy": audit["chance_accuracy"],
        "margin": audit["margin"],
        "full_accuracy": audit["full"]["accuracy"],
        "lungs_hidden_accuracy": audit["lungs_hidden"]["accuracy"],
        "lungs_hidden_accuracy_ci": audit["lungs_hidden"].get("accuracy_ci"),
        "lungs_only_accuracy": audit["lungs_only"]["accuracy"],
        "gradcam_n": gradcam.get("n", 0),
        "gradcam_share_outside_lungs": gradcam.get("mean_share_outside_lungs"),
        "gradcam_area_outside_lungs": gradcam.get("area_share_outside_lungs"),
        "shortcut_suspected": bool(audit["shortcut_suspected"]),
    }
    probes = audit.get("source_probe") or {}
    by_class = {}
    for class_name, result in sorted(((probes.get("features") or {}).get("by_class") or {}).items()):
        if not result:
            continue
        by_class[class_name] = {
            "sources": result["sources"],
            "auc": result["auc"],
            "auc_ci": result.get("auc_ci"),
            **{f"{kind}_auc": ((probes.get(kind) or {}).get("by_class", {}).get(class_name) or {}).get("auc")
               for kind in ("input", "outputs")},
        }
    if by_class:
        record["source_probe"] = by_class
    return record


def record_shortcut_audit(artifact_dir: Path | str, metrics: dict) -> Path:
    """Store ``shortcut_audit_record(metrics)`` with the artifact it evaluated (refused for another file)."""
    artifact_dir = Path(artifact_dir)
    record = shortcut_audit_record(metrics)
    if record["sha256"] != load_metadata(artifact_dir).sha256:
        raise ValueError(f"the evaluation is of another file than {artifact_dir}'s model")
    path = artifact_dir / SHORTCUT_AUDIT_FILE
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def loso_runs_for(loso: dict | None, architecture: str) -> dict[str, dict]:
    """The leave-one-source-out runs of one architecture's recipe in a loso.json, by left-out source."""
    runs = (loso or {}).get("runs") if isinstance(loso, dict) else None
    if not isinstance(runs, dict):
        return {}
    return {run["left_out_source"]: run for key, run in sorted(runs.items())
            if key.split("/")[0] == architecture and isinstance(run, dict) and run.get("left_out_source")}


def held_out_evaluation(artifact_dir: Path | str) -> dict:
    """What the artifact measured on films it never trained or calibrated on.

    ``test``: its test split (``test_metrics.json``, written by ``ml.training.train``); ``loso``: its recipe's
    leave-one-source-out runs (``loso.json``), each on the source it never saw; ``shortcut_audit``: the
    record ``python -m ml evaluate --record`` stored, when it is of this very file. Missing or unreadable files give
    missing keys, never an error: an artifact is servable without them.
    """
    artifact_dir = Path(artifact_dir)

    def read(name: str):
        try:
            return json.loads((artifact_dir / name).read_text())
        except (OSError, ValueError):
            return None

    evaluation: dict = {}
    metadata = read("metadata.json")
    test = read("test_metrics.json")
    if isinstance(test, dict) and test.get("n"):
        evaluation["test"] = {key: test[key] for key in HELD_OUT_TEST_KEYS if key in test}
        training = metadata.get("training") if isinstance(metadata, dict) else None
        if isinstance(training, dict) and training.get("recalibrations"):
            # ml.training.recalibrate refitted the temperature and threshold after this test: what depends on them is stale.
            for key in OPERATING_POINT_KEYS:
                evaluation["test"].pop(key, None)
            evaluation["test"]["recalibrated_since"] = True
    architecture = metadata.get("architecture") if isinstance(metadata, dict) else None
    loso = {source: {key: run.get(key) for key in HELD_OUT_LOSO_KEYS}
            for source, run in loso_runs_for(read("loso.json"), architecture or "").items()}
    if loso:
        evaluation["loso"] = loso
    audit = read(SHORTCUT_AUDIT_FILE)
    if isinstance(audit, dict) and isinstance(metadata, dict) and audit.get("sha256") == metadata.get("sha256"):
        evaluation["shortcut_audit"] = audit
    return evaluation

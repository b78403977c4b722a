"""Rows for diagnosis tests that do not need a real model run: model versions and stored predictions."""

import itertools

from django.utils import timezone

from diagnosis.models import ModelVersion, Prediction, Study, StudyStatus
from diagnosis.services.ingest import study_create
from ml.serving.labels import CLASS_NAMES
from tests import images
from tests.conftest import inference_queue_as_list

_sequence = itertools.count(1)

VALIDATION_METRICS = {
    "n": 120, "accuracy": 0.91, "macro_auc": 0.95, "covid_auc": 0.97,
    "covid_sensitivity": 0.93, "covid_specificity": 0.88, "ece": 0.04,
}


def model_version(*, version: str = "", covid_threshold: float = 0.5, status: str = "candidate") -> ModelVersion:
    number = next(_sequence)
    return ModelVersion.objects.create(
        name="cxr-test", version=version or f"v{number}", artifact_path=f"runs/test-{number}",
        file_sha256=f"{number:064x}", architecture="tiny", class_names=list(CLASS_NAMES), input_size=64,
        metrics=dict(VALIDATION_METRICS), temperature=1.0, covid_threshold=covid_threshold, status=status,
    )


def uploaded_study(*, patient, uploaded_by, monkeypatch, accession_number: str = "") -> Study:
    """A received study, with the inference bell silenced."""
    inference_queue_as_list(monkeypatch)
    number = next(_sequence)
    return study_create(
        patient=patient, uploaded_by=uploaded_by, data=images.png_bytes(images.gradient(seed=number)),
        accession_number=accession_number or f"ACC-{number}",
    )


def completed_prediction(
    *, study: Study, model: ModelVersion, covid: float = 0.1, label: str = "", warnings: list[str] | None = None
) -> Prediction:
    """Store a prediction as the worker would (without the model run) and mark the study completed."""
    rest = (1.0 - covid) / 2
    probabilities = {"covid": covid, "normal": rest + 0.01 if covid < 0.98 else rest, "pneumonia": rest - 0.01 if covid < 0.98 else rest}
    label = label or max(probabilities, key=probabilities.get)
    prediction = Prediction.objects.create(
        study=study, model_version=model, probabilities=probabilities, raw_probabilities=probabilities,
        predicted_label=label, covid_probability=covid, covid_threshold=model.covid_threshold,
        covid_alert=model.covid_threshold is not None and covid >= model.covid_threshold, inference_ms=12.0,
        warnings=warnings or [],
    )
    Study.objects.filter(id=study.id).update(status=StudyStatus.COMPLETED, completed_at=timezone.now())
    study.refresh_from_db()
    return prediction

"""Rows the access tests need, made directly: these tests check who may read them, not how they are made."""

from diagnosis.models import Alert, Feedback, ModelVersion, Prediction
from diagnosis.services import storage
from ml.serving.imaging import encode_png
from tests import images


def make_model_version(name: str = "test-model", *, status: str = "active") -> ModelVersion:
    return ModelVersion.objects.create(
        name=name, version="1", artifact_path=f"/nowhere/{name}", file_sha256="0" * 64, architecture="tiny",
        class_names=["covid", "normal", "pneumonia"], input_size=64, metrics={"accuracy": 0.9}, status=status,
        covid_threshold=0.4,
    )


def make_prediction(study, model_version: ModelVersion, *, covid: float = 0.7) -> Prediction:
    heatmap = storage.blob_put(encode_png(images.gradient()), kind=storage.HEATMAP, digest=study.image.sha256)
    rest = (1.0 - covid) / 2
    return Prediction.objects.create(
        study=study, model_version=model_version,
        probabilities={"covid": covid, "normal": rest, "pneumonia": rest},
        raw_probabilities={"covid": covid, "normal": rest, "pneumonia": rest},
        predicted_label="covid" if covid >= rest else "normal", covid_probability=covid,
        covid_threshold=model_version.covid_threshold, covid_alert=covid >= (model_version.covid_threshold or 1.0),
        inference_ms=12.0, heatmap_sha256=heatmap,
    )


def make_feedback(prediction: Prediction, author, *, correct_label: str = "normal", note: str = "") -> Feedback:
    return Feedback.objects.create(study=prediction.study, prediction=prediction, author=author,
                                   agrees=correct_label == prediction.predicted_label, correct_label=correct_label, note=note)


def make_alert(prediction: Prediction) -> Alert:
    return Alert.objects.create(study=prediction.study, prediction=prediction, covid_probability=prediction.covid_probability,
                                covid_threshold=prediction.covid_threshold)

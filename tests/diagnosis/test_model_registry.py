import json
import shutil

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from diagnosis.models import ModelVersion, ModelVersionStatus
from diagnosis.services.model_registry import model_version_activate, model_version_register
from ml.serving.artifact import held_out_evaluation


@pytest.mark.django_db
def test_registers_candidate_from_artifact_metadata(tiny_model_dir):
    version = model_version_register(artifact_dir=tiny_model_dir)
    metadata = json.loads((tiny_model_dir / "metadata.json").read_text())
    assert version.status == ModelVersionStatus.CANDIDATE
    assert version.file_sha256 == metadata["sha256"]
    assert version.class_names == ["covid", "normal", "pneumonia"]
    assert model_version_register(artifact_dir=tiny_model_dir) == version  # idempotent


@pytest.mark.django_db
def test_rejects_artifact_whose_file_does_not_match_its_hash(tiny_model_dir, tmp_path):
    copy = tmp_path / "tampered"
    shutil.copytree(tiny_model_dir, copy)
    model_file = copy / json.loads((copy / "metadata.json").read_text())["model_file"]
    model_file.write_bytes(model_file.read_bytes() + b"tampered")
    with pytest.raises(ValidationError, match="does not match"):
        model_version_register(artifact_dir=copy)


@pytest.mark.django_db
def test_recalibrated_artifact_must_come_as_a_new_version(tiny_model_dir, tmp_path):
    from ml.training.recalibrate import recalibrate

    first = model_version_register(artifact_dir=tiny_model_dir)
    copy = tmp_path / "recalibrated"
    shutil.copytree(tiny_model_dir, copy)
    probabilities = [[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4], [0.1, 0.2, 0.7]] * 5
    labels = [0, 1, 0, 2] * 5
    recalibrate(artifact_dir=copy, raw_probabilities=probabilities, labels=labels, data_description="site")
    with pytest.raises(ValidationError, match="different temperature or COVID-19 threshold"):
        model_version_register(artifact_dir=copy)

    recalibrate(artifact_dir=copy, raw_probabilities=probabilities, labels=labels, data_description="site",
                version="1-site")
    second = model_version_register(artifact_dir=copy)
    assert second != first and second.version == "1-site" and second.file_sha256 == first.file_sha256
    metadata = json.loads((copy / "metadata.json").read_text())
    assert second.covid_threshold == metadata["covid_threshold"]
    assert second.temperature == metadata["temperature"]


@pytest.mark.django_db
def test_activating_retires_the_previous_active_version(tiny_model_dir):
    first = model_version_register(artifact_dir=tiny_model_dir, activate=True)
    second = ModelVersion.objects.create(
        name="other", version="2", artifact_path=str(tiny_model_dir), file_sha256=first.file_sha256,
        architecture="tiny", class_names=first.class_names, input_size=first.input_size,
    )
    model_version_activate(model_version=second)
    first.refresh_from_db()
    assert first.status == ModelVersionStatus.RETIRED
    assert ModelVersion.objects.filter(status=ModelVersionStatus.ACTIVE).get() == second


@pytest.mark.django_db
def test_database_allows_at_most_one_active_version(tiny_model_dir):
    first = model_version_register(artifact_dir=tiny_model_dir, activate=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.create(
            name="rogue", version="1", artifact_path="x", file_sha256="0" * 64, architecture="tiny",
            class_names=first.class_names, input_size=64, status=ModelVersionStatus.ACTIVE,
        )


def _artifact_with_held_out_results(tiny_model_dir, folder):
    """A copy of the tiny artifact with a test split's metrics and LOSO runs of its recipe and of another one."""
    shutil.copytree(tiny_model_dir, folder)
    (folder / "test_metrics.json").write_text(json.dumps({
        "n": 40, "accuracy": 0.7, "macro_auc": 0.8, "covid_auc": 0.85, "covid_sensitivity": 0.95,
        "covid_specificity": 0.5, "ece": 0.04, "nll": 0.61,
    }))
    (folder / "loso.json").write_text(json.dumps({"runs": {
        "tiny/alpha": {"architecture": "tiny", "left_out_source": "alpha", "n": 100, "covid_auc": 0.62,
                       "accuracy": 0.5, "macro_auc": 0.6},
        "seed/alpha": {"architecture": "seed", "left_out_source": "alpha", "n": 100, "covid_auc": 0.9},
    }}))
    return folder


@pytest.mark.django_db
def test_registration_keeps_the_held_out_test_and_leave_one_source_out_results(tiny_model_dir, tmp_path):
    version = model_version_register(artifact_dir=_artifact_with_held_out_results(tiny_model_dir, tmp_path / "a"))
    assert version.evaluation == {
        "test": {"n": 40, "accuracy": 0.7, "macro_auc": 0.8, "covid_auc": 0.85, "covid_sensitivity": 0.95,
                 "covid_specificity": 0.5, "ece": 0.04},
        "loso": {"alpha": {"n": 100, "covid_auc": 0.62, "accuracy": 0.5}},  # its own recipe's runs only
    }
    assert held_out_evaluation(tiny_model_dir) == {}  # the plain artifact has none, and registers all the same


@pytest.mark.django_db
def test_a_version_registered_without_held_out_results_gets_them_when_registered_again(tiny_model_dir, tmp_path):
    from audit.models import AuditEvent

    artifact = _artifact_with_held_out_results(tiny_model_dir, tmp_path / "a")
    version = model_version_register(artifact_dir=artifact)
    ModelVersion.objects.filter(pk=version.pk).update(evaluation={})  # as registered before the field existed

    again = model_version_register(artifact_dir=artifact)
    assert again.pk == version.pk and again.evaluation["test"]["n"] == 40
    event = AuditEvent.objects.get(action="model_version.evaluation_recorded")
    assert event.object_id == str(version.pk) and event.details["evaluation"] == again.evaluation
    model_version_register(artifact_dir=artifact)
    assert AuditEvent.objects.filter(action="model_version.evaluation_recorded").count() == 1


@pytest.mark.django_db
def test_a_recalibrated_version_does_not_show_the_old_operating_points_test_figures(tiny_model_dir, tmp_path):
    from ml.training.recalibrate import recalibrate

    artifact = _artifact_with_held_out_results(tiny_model_dir, tmp_path / "a")
    recalibrate(artifact_dir=artifact, raw_probabilities=[[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]] * 5,
                labels=[0, 1, 2] * 5, data_description="site", version="1-site")
    test = model_version_register(artifact_dir=artifact).evaluation["test"]
    assert test == {"n": 40, "accuracy": 0.7, "macro_auc": 0.8, "covid_auc": 0.85, "recalibrated_since": True}


@pytest.mark.django_db
def test_start_up_records_the_held_out_results_of_an_active_version_registered_without_them(
    tiny_model_dir, tmp_path, settings
):
    from diagnosis.services.model_registry import model_version_ensure_default

    artifact = _artifact_with_held_out_results(tiny_model_dir, tmp_path / "a")
    settings.DEFAULT_MODEL_ARTIFACT = str(tmp_path / "not-shipped")
    version = model_version_register(artifact_dir=artifact, activate=True)
    ModelVersion.objects.filter(pk=version.pk).update(evaluation={})

    assert model_version_ensure_default() == version
    version.refresh_from_db()
    assert version.evaluation["loso"]["alpha"]["covid_auc"] == 0.62

    # A folder that now holds another version is left alone: no candidate appears, the active one is served.
    ModelVersion.objects.filter(pk=version.pk).update(evaluation={})
    metadata = json.loads((artifact / "metadata.json").read_text())
    (artifact / "metadata.json").write_text(json.dumps({**metadata, "version": "2"}))
    assert model_version_ensure_default() == version
    assert ModelVersion.objects.count() == 1
    version.refresh_from_db()
    assert version.evaluation == {}


@pytest.mark.django_db
def test_a_shortcut_audit_recorded_later_is_added_and_nothing_recorded_is_rewritten(tiny_model_dir, tmp_path, settings):
    from audit.models import AuditEvent
    from diagnosis.services.model_registry import model_version_ensure_default
    from ml.serving.artifact import SHORTCUT_AUDIT_FILE

    artifact = _artifact_with_held_out_results(tiny_model_dir, tmp_path / "a")
    settings.DEFAULT_MODEL_ARTIFACT = str(tmp_path / "not-shipped")
    version = model_version_register(artifact_dir=artifact, activate=True)
    assert set(version.evaluation) == {"test", "loso"}
    sha = json.loads((artifact / "metadata.json").read_text())["sha256"]

    # An audit of another file is not this version's.
    (artifact / SHORTCUT_AUDIT_FILE).write_text(json.dumps({"sha256": "f" * 64, "shortcut_suspected": True}))
    assert model_version_ensure_default() == version
    assert not AuditEvent.objects.filter(action="model_version.evaluation_recorded").exists()

    # ml.evaluate --record audits the unchanged file, and the test results are edited in the folder meanwhile.
    (artifact / SHORTCUT_AUDIT_FILE).write_text(json.dumps({"sha256": sha, "n": 40, "shortcut_suspected": False}))
    (artifact / "test_metrics.json").write_text(json.dumps({"n": 40, "accuracy": 0.99}))
    assert model_version_ensure_default() == version
    version.refresh_from_db()
    assert version.evaluation["shortcut_audit"] == {"sha256": sha, "n": 40, "shortcut_suspected": False}
    assert version.evaluation["test"]["accuracy"] == 0.7  # what the version carried stays as recorded
    event = AuditEvent.objects.get(action="model_version.evaluation_recorded")
    assert list(event.details["evaluation"]) == ["shortcut_audit"]
    model_version_register(artifact_dir=artifact)
    assert AuditEvent.objects.filter(action="model_version.evaluation_recorded").count() == 1


@pytest.mark.django_db
def test_start_up_does_not_rehash_the_model_when_its_folder_has_nothing_to_add(
    tiny_model_dir, tmp_path, settings, monkeypatch
):
    import ml.serving.artifact
    from diagnosis.services.model_registry import model_version_ensure_default

    artifact = _artifact_with_held_out_results(tiny_model_dir, tmp_path / "a")
    settings.DEFAULT_MODEL_ARTIFACT = str(tmp_path / "not-shipped")
    version = model_version_register(artifact_dir=artifact, activate=True)
    assert "shortcut_audit" not in version.evaluation  # missing here and in its folder

    hashed = []
    monkeypatch.setattr(ml.serving.artifact, "file_sha256", lambda path: hashed.append(path) or "0" * 64)
    assert model_version_ensure_default() == version
    assert hashed == []

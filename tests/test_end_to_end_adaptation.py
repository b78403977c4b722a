"""Site adaptation end to end, through a real Celery worker fed by Redis (inference, default and training queues):
import labelled films, adapt, refuse a worse candidate, shadow it unseen, promote with a reason, roll back."""

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from audit.models import AuditEvent
from diagnosis.models import AdaptationRun, JobStatus, LabelImport, Prediction, ShadowPrediction, Study, StudyStatus
from tests import images
from tests.portal_processes import celery_worker, portal_environment
from tests.portal_processes import wait_until as wait_for

TIMEOUT_SECONDS = 240


@pytest.fixture
def training_worker(image_store, tmp_path):
    environment = portal_environment(image_store, CXR_CANDIDATE_DIR=str(tmp_path / "models"),
                                     CXR_FEATURE_CACHE_DIR=str(tmp_path / "feature-cache"))
    with celery_worker(queues="inference,default,training", name="e2e-adapt", env=environment,
                       log_path=tmp_path / "worker.log") as worker:
        yield worker


def wait_until(condition, *, what: str, worker) -> None:
    wait_for(condition, what=what, worker=worker, timeout=TIMEOUT_SECONDS)


def write_site_manifest(root: Path) -> Path:
    """Synthetic films whose adaptation part is labelled wrongly (each class named as the next), the locked test
    part rightly: a head refitted on them is worse on the test part, so its promotion must be refused."""
    from django.conf import settings as django_settings

    from diagnosis.services.site_films import hashed_mrn
    from ml.serving.labels import CLASS_NAMES
    from ml.evaluation.site import SITE_TEST, site_part
    from tests.conftest import write_synthetic_folder

    write_synthetic_folder(root, count_per_class=10, seed=31)
    rows = []
    for index, path in enumerate(sorted(root.glob("*/*.png"))):
        patient = f"site-patient-{index}"
        label = path.parent.name
        if site_part(hashed_mrn(patient), test_share=django_settings.CXR_SITE_TEST_SHARE) != SITE_TEST:
            label = CLASS_NAMES[(CLASS_NAMES.index(label) + 1) % len(CLASS_NAMES)]
        rows.append(f"{path.relative_to(root)},{label},{patient}")
    manifest = root / "labels.csv"
    manifest.write_text("file,label,patient\n" + "\n".join(rows) + "\n")
    return manifest


def upload(client: APIClient, patient, accession: str) -> int:
    response = client.post("/api/studies/", {"patient": patient.id, "file": SimpleUploadedFile(
        "chest.dcm", images.dicom_bytes(accession_number=accession))}, format="multipart")
    assert response.status_code == 201, response.content
    return response.json()["id"]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_site_adaptation_through_a_real_worker(administrator, clinician, patient, familiar_model_dir, tmp_path,
                                               settings, training_worker):
    from diagnosis.services.adaptation import (
        PromotionRefused,
        adaptation_request,
        model_version_promote_gated,
        model_version_rollback,
        model_version_shadow_set,
    )
    from diagnosis.services.model_registry import model_version_register
    from diagnosis.services.site_films import label_import_start

    active = model_version_register(artifact_dir=familiar_model_dir, activate=True)
    settings.CXR_SITE_IMPORT_DIR = tmp_path / "import"
    manifest = write_site_manifest(settings.CXR_SITE_IMPORT_DIR / "site")

    # 1. Import: every film becomes a study, goes through inference, and carries its confirmed label.
    label_import = label_import_start(user=administrator, root="site", manifest=str(manifest.relative_to(
        settings.CXR_SITE_IMPORT_DIR)))
    wait_until(lambda: LabelImport.objects.get(pk=label_import.pk).status == JobStatus.DONE, what="the import",
               worker=training_worker)
    label_import.refresh_from_db()
    assert (label_import.created, label_import.total, label_import.errors) == (30, 30, [])
    wait_until(lambda: Study.objects.filter(status=StudyStatus.COMPLETED).count() == 30,
               what="inference of the imported studies", worker=training_worker)

    # 2. Adaptation on the training queue: a candidate with its parent and its evaluation on the site's films.
    run = adaptation_request(user=administrator, steps="head")
    wait_until(lambda: AdaptationRun.objects.get(pk=run.pk).status in (JobStatus.DONE, JobStatus.FAILED),
               what="the adaptation", worker=training_worker)
    run.refresh_from_db()
    assert run.status == JobStatus.DONE, run.error
    candidate = run.candidate
    assert candidate.parent == active and candidate.status == "candidate"
    evaluation = candidate.site_evaluation
    assert evaluation["n"] > 0 and evaluation["metrics"]["macro_auc_ci"][0] is not None
    assert evaluation["paired"]["macro_auc"]["difference"] < 0

    # 3. Worse on the locked site test part: refused.
    with pytest.raises(PromotionRefused):
        model_version_promote_gated(model_version=candidate, actor=administrator)

    # 4. Shadow mode: the candidate answers on a new study, but nothing a clinician sees comes from it.
    model_version_shadow_set(model_version=candidate, actor=administrator, enabled=True)
    client = APIClient()
    client.force_authenticate(clinician)
    shadowed = upload(client, patient, "E2E-SHADOW")
    wait_until(lambda: ShadowPrediction.objects.filter(study_id=shadowed).exists(), what="the shadow prediction",
               worker=training_worker)
    body = client.get(f"/api/studies/{shadowed}/").json()
    assert body["prediction"]["model_version"]["version"] == active.version
    assert list(Prediction.objects.filter(study_id=shadowed).values_list("model_version", flat=True)) == [active.pk]
    assert candidate.version not in client.get(f"/api/studies/{shadowed}/").content.decode()

    # 5. Promoted with a reason: new studies use the candidate.
    model_version_promote_gated(model_version=candidate, actor=administrator,
                                override_reason="Local review of the discordant films")
    promoted = upload(client, patient, "E2E-PROMOTED")
    wait_until(lambda: Prediction.objects.filter(study_id=promoted).exists(), what="inference by the candidate",
               worker=training_worker)
    assert Prediction.objects.get(study_id=promoted).model_version == candidate

    # 6. Rollback: one action, and the previous version serves again.
    assert model_version_rollback(actor=administrator) == active
    restored = upload(client, patient, "E2E-ROLLED-BACK")
    wait_until(lambda: Prediction.objects.filter(study_id=restored).exists(), what="inference after rollback",
               worker=training_worker)
    assert Prediction.objects.get(study_id=restored).model_version == active

    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"site_labels.import_start", "site_label.create", "site_labels.import", "model_version.adapt_request",
            "model_version.adapt", "model_version.register", "model_version.promote", "model_version.shadow_start",
            "model_version.promote_override", "model_version.activate", "model_version.rollback"} <= actions
    assert AuditEvent.objects.get(action="model_version.promote").outcome == "denied"

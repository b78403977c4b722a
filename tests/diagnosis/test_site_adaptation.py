"""Site adaptation in the portal: importing labelled films, the adaptation job, gated promotion, rollback, shadow."""

import pytest
from django.core.management import call_command
from django.core.exceptions import ValidationError

from audit.models import AuditEvent
from diagnosis.models import AdaptationRun, ModelVersion, SiteLabel, Study
from diagnosis.services.adaptation import (
    PromotionRefused,
    adaptation_request,
    adaptation_run,
    model_version_promote_gated,
    model_version_rollback,
)
from diagnosis.services.site_films import confirmed_site_films, hashed_mrn
from tests.conftest import write_synthetic_folder


@pytest.fixture
def adaptation_settings(settings, tmp_path, monkeypatch, queued_inference):
    settings.CXR_CANDIDATE_DIR = tmp_path / "models"
    settings.CXR_FEATURE_CACHE_DIR = tmp_path / "feature-cache"
    settings.CXR_SITE_VALIDATION_MIN_FILMS = 5
    monkeypatch.setattr("diagnosis.tasks.adapt_model.delay", lambda **kwargs: None)
    return settings


@pytest.fixture
def site_folder(tmp_path):
    root = write_synthetic_folder(tmp_path / "site", count_per_class=8, seed=21)
    (root / "covid" / "broken.png").write_bytes(b"not an image")
    return root


@pytest.mark.django_db
def test_import_labels_each_film_once_and_reports_bad_files(administrator, site_folder, adaptation_settings, capsys):
    call_command("import_labelled_studies", str(site_folder), "--user", administrator.username)
    out = capsys.readouterr().out
    assert "24 labelled, 0 already imported, 1 skipped, of 25 files" in out
    assert "broken.png" in out
    assert SiteLabel.objects.count() == Study.objects.count() == 24
    assert all(label.confirmed_by == administrator for label in SiteLabel.objects.all())
    assert Study.objects.filter(patient__mrn__startswith="SITE-").count() == 24
    assert AuditEvent.objects.filter(action="site_label.create").count() == 24

    call_command("import_labelled_studies", str(site_folder), "--user", administrator.username)
    assert "0 labelled, 24 already imported, 1 skipped" in capsys.readouterr().out
    assert SiteLabel.objects.count() == 24
    assert AuditEvent.objects.filter(action="site_labels.import").count() == 2
    films = confirmed_site_films()
    assert {film.part for film in films} == {"test", "adaptation"}


@pytest.mark.django_db
def test_manifest_import_hashes_patient_ids(administrator, tmp_path, adaptation_settings, capsys):
    root = write_synthetic_folder(tmp_path / "films", count_per_class=2, seed=3)
    manifest = root / "labels.csv"
    rows = [f"{path.relative_to(root)},{path.parent.name},patient-{index // 2}"
            for index, path in enumerate(sorted(root.glob("*/*.png")))]
    manifest.write_text("file,label,patient\n" + "\n".join(rows) + "\nmissing.png,flu,x\n")
    call_command("import_labelled_studies", str(root), "--manifest", str(manifest), "--user", administrator.username)
    assert "6 labelled" in capsys.readouterr().out
    assert set(Study.objects.values_list("patient__mrn", flat=True)) == {hashed_mrn(f"patient-{i}") for i in range(3)}


@pytest.mark.django_db
def test_adaptation_registers_a_candidate_and_promotion_is_gated(
        administrator, site_folder, adaptation_settings, familiar_model_dir):
    from diagnosis.services.model_registry import model_version_register

    active = model_version_register(artifact_dir=familiar_model_dir, activate=True)
    call_command("import_labelled_studies", str(site_folder), "--user", administrator.username)
    run = adaptation_request(user=administrator, steps="head")
    run = adaptation_run(adaptation_run_id=run.pk)
    assert run.status == "done", run.error
    candidate = run.candidate
    assert candidate.status == "candidate" and candidate.parent == active
    evaluation = candidate.site_evaluation
    assert evaluation["n"] > 0 and "macro_auc" in evaluation["paired"]
    assert evaluation["metrics"]["macro_auc_ci"][0] is not None
    active.refresh_from_db()
    assert active.site_evaluation["n"] == evaluation["n"]
    assert adaptation_run(adaptation_run_id=run.pk).candidate == candidate  # a second delivery does nothing

    # Worse on the locked site test part beyond the interval: refused, audited; an override needs a reason.
    candidate.site_evaluation["paired"]["macro_auc"].update(difference=-0.2, difference_ci=[-0.3, -0.1])
    candidate.save(update_fields=["site_evaluation"])
    with pytest.raises(PromotionRefused):
        model_version_promote_gated(model_version=candidate, actor=administrator)
    assert AuditEvent.objects.get(action="model_version.promote").outcome == "denied"
    model_version_promote_gated(model_version=candidate, actor=administrator, override_reason="Reviewed by the board")
    candidate.refresh_from_db()
    assert candidate.status == "active"
    assert AuditEvent.objects.get(action="model_version.promote_override").details["override_reason"]

    restored = model_version_rollback(actor=administrator)
    assert restored == active and ModelVersion.objects.get(status="active") == active
    assert AuditEvent.objects.filter(action="model_version.rollback").count() == 1
    with pytest.raises(ValidationError):
        model_version_rollback(actor=administrator)
    assert AdaptationRun.objects.get().progress == 1.0


@pytest.mark.django_db
def test_pages_show_the_comparison_and_promote_only_with_a_reason(
        admin_client, administrator, site_folder, adaptation_settings, familiar_model_dir):
    from django.urls import reverse

    from diagnosis.services.model_registry import model_version_register

    active = model_version_register(artifact_dir=familiar_model_dir, activate=True)
    call_command("import_labelled_studies", str(site_folder), "--user", administrator.username)
    page = admin_client.get(reverse("diagnosis:site_adaptation")).content.decode()
    assert "Locked site test part" in page and "24" not in page.split("site-film-counts")[0]
    admin_client.post(reverse("diagnosis:site_adapt"), {"steps": "calibrate"})
    run = AdaptationRun.objects.get()
    candidate = adaptation_run(adaptation_run_id=run.pk).candidate
    candidate.site_evaluation["metrics"]["threshold"]["sensitivity"] = 0.5
    candidate.save(update_fields=["site_evaluation"])

    compare = admin_client.get(reverse("diagnosis:model_version_compare", args=[candidate.pk])).content.decode()
    assert "Macro AUC" in compare and "below the target" in compare
    admin_client.post(reverse("diagnosis:model_version_promote", args=[candidate.pk]))
    candidate.refresh_from_db()
    assert candidate.status == "candidate"
    admin_client.post(reverse("diagnosis:model_version_promote", args=[candidate.pk]),
                      {"override_reason": "Sensitivity checked on a larger local audit"})
    candidate.refresh_from_db()
    assert candidate.status == "active"
    versions = admin_client.get(reverse("diagnosis:model_versions")).content.decode()
    assert versions.count('text-bg-success">Validated') == 2  # both evaluated on >= 5 site films of every class
    admin_client.post(reverse("diagnosis:model_version_rollback"))
    active.refresh_from_db()
    assert active.status == "active"


@pytest.mark.django_db
def test_results_say_when_the_version_is_not_validated_at_this_site(clinician, patient, monkeypatch, client, settings):
    from django.urls import reverse

    from diagnosis.services.alerts import alert_raise_for_prediction
    from tests.diagnosis import factories
    from tests.diagnosis.test_reports import pdf_text

    settings.CXR_SITE_VALIDATION_MIN_FILMS = 100
    model = factories.model_version(covid_threshold=0.5, status="active")
    study = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch,
                                     accession_number="ACC-SITE")
    prediction = factories.completed_prediction(study=study, model=model, covid=0.9)
    alert = alert_raise_for_prediction(prediction=prediction)
    client.force_login(clinician)
    notice = "Not validated at this site"
    assert notice in client.get(reverse("diagnosis:study_detail", args=[study.pk])).content.decode()
    assert notice in alert.meaning()
    assert notice in pdf_text(client.get(reverse("diagnosis:study_report", args=[study.pk])).content)[0]

    # Evaluated on 100 site films of every class: the notice goes.
    model.site_evaluation = {"n": 120, "class_counts": {"covid": 30, "normal": 50, "pneumonia": 40}}
    model.save(update_fields=["site_evaluation"])
    assert notice not in client.get(reverse("diagnosis:study_detail", args=[study.pk])).content.decode()
    model.site_evaluation["class_counts"]["covid"] = 0  # a class missing: not validated
    model.save(update_fields=["site_evaluation"])
    assert notice in client.get(reverse("diagnosis:study_detail", args=[study.pk])).content.decode()


@pytest.mark.django_db
def test_the_import_page_reads_only_under_the_import_folder(admin_client, tmp_path, settings, adaptation_settings):
    from django.urls import reverse

    from diagnosis.models import LabelImport

    settings.CXR_SITE_IMPORT_DIR = tmp_path / "import"
    (tmp_path / "import" / "site").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    page = admin_client.post(reverse("diagnosis:site_import"), {"root": "../elsewhere"}, follow=True)
    assert "Only folders under" in page.content.decode()
    assert not LabelImport.objects.exists()
    admin_client.post(reverse("diagnosis:site_import"), {"root": "site"})
    assert LabelImport.objects.get().root == str((tmp_path / "import" / "site").resolve())


@pytest.mark.django_db
def test_feedback_confirms_a_study_with_one_or_two_agreeing_clinicians(
        clinician, second_clinician, patient, monkeypatch, settings):
    from diagnosis.services.feedback import feedback_record
    from tests.diagnosis import factories

    model = factories.model_version(covid_threshold=0.5, status="active")
    study = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch,
                                     accession_number="ACC-CONFIRM")
    prediction = factories.completed_prediction(study=study, model=model, covid=0.1)
    feedback_record(author=clinician, prediction=prediction, agrees=False, correct_label="pneumonia")

    settings.CXR_SITE_LABEL_AGREEMENT = 1
    assert [(film.study_id, film.label) for film in confirmed_site_films()] == [(study.pk, "pneumonia")]
    settings.CXR_SITE_LABEL_AGREEMENT = 2
    assert confirmed_site_films() == []
    feedback_record(author=second_clinician, prediction=prediction, agrees=False, correct_label="pneumonia")
    assert [film.label for film in confirmed_site_films()] == ["pneumonia"]
    feedback_record(author=second_clinician, prediction=prediction, agrees=False, correct_label="other")
    assert confirmed_site_films() == []  # the clinicians now disagree (and "other" is no class)

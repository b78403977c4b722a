"""The Models page: auditors and administrators see every version and its evaluation; administrators promote,
roll back and retire, each change one audit event, and are told what the version's own records already show."""

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from diagnosis.models import ModelVersion
from tests.conftest import only_event


def make_version(name: str, status: str = "candidate") -> ModelVersion:
    return ModelVersion.objects.create(name=name, version="1", artifact_path=f"/nowhere/{name}", file_sha256="0" * 64,
                                       architecture="tiny", class_names=["covid", "normal", "pneumonia"], input_size=64,
                                       metrics={"accuracy": 0.91, "macro_auc": 0.95}, status=status)


@pytest.mark.django_db
def test_promote_retire_and_roll_back_model_versions(admin_client, administrator):
    first = make_version("first", status="active")
    second = make_version("second")
    page = admin_client.get(reverse("diagnosis:model_versions")).content.decode()
    assert "Macro AUC: 0.950" in page and "macro_auc" not in page and "Promote" in page

    admin_client.post(reverse("diagnosis:model_version_activate", args=[second.id]))
    first.refresh_from_db(), second.refresh_from_db()
    assert (first.status, second.status) == ("retired", "active")
    promote = only_event("model_version.activate")
    assert promote.actor_username == administrator.username and promote.object_id == str(second.id)
    assert "Roll back to this" in admin_client.get(reverse("diagnosis:model_versions")).content.decode()

    admin_client.post(reverse("diagnosis:model_version_activate", args=[first.id]))  # roll back
    first.refresh_from_db(), second.refresh_from_db()
    assert (first.status, second.status) == ("active", "retired")
    assert AuditEvent.objects.filter(action="model_version.activate").count() == 2

    third = make_version("third")
    admin_client.post(reverse("diagnosis:model_version_retire", args=[third.id]), {"reason": "superseded"})
    third.refresh_from_db()
    assert third.status == "retired"
    retire = only_event("model_version.retire")
    assert retire.details == {"old_status": "candidate", "new_status": "retired", "reason": "superseded",
                              "analysis_paused": False}


@pytest.mark.django_db
def test_retiring_asks_for_confirmation_and_a_reason(admin_client):
    candidate = make_version("candidate")
    confirm = admin_client.get(reverse("diagnosis:model_version_retire", args=[candidate.id]))
    assert confirm.status_code == 200 and 'data-testid="retire-form"' in confirm.content.decode()
    candidate.refresh_from_db()
    assert candidate.status == "candidate"  # opening the page changes nothing
    refused = admin_client.post(reverse("diagnosis:model_version_retire", args=[candidate.id]), {"reason": "  "})
    assert refused.status_code == 400
    candidate.refresh_from_db()
    assert candidate.status == "candidate" and not AuditEvent.objects.filter(action="model_version.retire").exists()


@pytest.mark.django_db
def test_the_only_active_version_is_retired_only_when_the_administrator_pauses_analysis(admin_client, client,
                                                                                      clinician, administrator):
    active = make_version("only-active", status="active")
    confirm = admin_client.get(reverse("diagnosis:model_version_retire", args=[active.id])).content.decode()
    assert 'data-testid="retire-active-warning"' in confirm and 'name="pause_analysis"' in confirm

    refused = admin_client.post(reverse("diagnosis:model_version_retire", args=[active.id]),
                                {"reason": "wrong threshold"})
    assert refused.status_code == 400
    assert "Promote another version instead, or choose to pause analysis" in refused.content.decode()
    active.refresh_from_db()
    assert active.status == "active"

    paused = admin_client.post(reverse("diagnosis:model_version_retire", args=[active.id]),
                               {"reason": "wrong threshold", "pause_analysis": "on"})
    assert paused.status_code == 302
    active.refresh_from_db()
    assert active.status == "retired"
    retire = only_event("model_version.retire")
    assert retire.details["analysis_paused"] is True and retire.details["reason"] == "wrong threshold"

    models_page = admin_client.get(reverse("diagnosis:model_versions")).content.decode()
    assert 'data-testid="analysis-paused"' in models_page and "wrong threshold" in models_page
    assert "is the active version" not in models_page
    client.force_login(clinician)
    worklist = client.get(reverse("diagnosis:worklist")).content.decode()
    assert 'data-testid="analysis-paused"' in worklist and "Analysis is paused." in worklist


@pytest.mark.django_db
def test_auditor_cannot_change_model_versions(client, auditor):
    version = make_version("candidate")
    client.force_login(auditor)
    page = client.get(reverse("diagnosis:model_versions")).content.decode()
    assert "candidate" in page and "Promote" not in page and "Retire" not in page  # reviewed, not changed
    assert client.post(reverse("diagnosis:model_version_activate", args=[version.id])).status_code == 403
    version.refresh_from_db()
    assert version.status == "candidate"


@pytest.mark.django_db
def test_model_version_pages_show_the_held_out_evaluation(admin_client, client, auditor):
    evaluated = make_version("evaluated")
    ModelVersion.objects.filter(pk=evaluated.pk).update(evaluation={
        "test": {"n": 261, "accuracy": 0.72, "macro_auc": 0.899, "covid_auc": 0.927, "covid_sensitivity": 0.979,
                 "covid_specificity": 0.476, "ece": 0.055},
        "loso": {"cohen": {"n": 488, "covid_auc": 0.541, "accuracy": 0.6}, "nih": {"n": 1094, "covid_auc": 0.7}},
    })
    make_version("unevaluated")
    administrator_page = admin_client.get(reverse("diagnosis:model_versions")).content.decode()
    client.force_login(auditor)
    for page in (administrator_page, client.get(reverse("diagnosis:model_versions")).content.decode()):
        assert "Test split (261 films)" in page and "Macro AUC: 0.899" in page and "Expected calibration error: 0.055" in page
        assert "cohen: 0.541 (488 films)" in page and "nih: 0.700 (1094 films)" in page
        assert "Not recorded" in page  # the version without held-out results says so


SHORTCUT_AUDIT = {
    "sha256": "0" * 64, "subset": "test", "n": 261, "chance_accuracy": 1 / 3, "margin": 0.1, "full_accuracy": 0.824,
    "lungs_hidden_accuracy": 0.563, "lungs_hidden_accuracy_ci": [0.498, 0.626], "lungs_only_accuracy": 0.387,
    "gradcam_n": 48, "gradcam_share_outside_lungs": 0.682, "gradcam_area_outside_lungs": 0.68,
    "shortcut_suspected": True,
    "source_probe": {"pneumonia": {"sources": {"cohen": 16, "nih": 73}, "auc": 0.759, "auc_ci": [0.6, 0.9],
                                   "input_auc": 0.749, "outputs_auc": 0.849}},
}


@pytest.mark.django_db
def test_model_version_pages_show_the_shortcut_audit(admin_client, client, auditor):
    audited = make_version("audited")
    ModelVersion.objects.filter(pk=audited.pk).update(evaluation={"shortcut_audit": SHORTCUT_AUDIT})
    administrator_page = admin_client.get(reverse("diagnosis:model_versions")).content.decode()
    client.force_login(auditor)
    for page in (administrator_page, client.get(reverse("diagnosis:model_versions")).content.decode()):
        assert "Shortcut audit (261 test films)" in page and "Shortcut suspected" in page
        assert "Accuracy with the lungs hidden (chance 0.333): 0.563" in page
        assert "Accuracy with only the lungs visible: 0.387" in page
        assert "Grad-CAM share outside the lungs (a uniform map: 68%): 68%" in page
        assert "Pneumonia, cohen vs nih: 0.759" in page
        assert "Not recorded" not in page


@pytest.mark.django_db
def test_activating_a_version_says_what_its_shortcut_audit_found(admin_client):
    suspected, clean, unaudited = make_version("suspected"), make_version("clean"), make_version("unaudited")
    ModelVersion.objects.filter(pk=suspected.pk).update(evaluation={"shortcut_audit": SHORTCUT_AUDIT})
    ModelVersion.objects.filter(pk=clean.pk).update(
        evaluation={"shortcut_audit": {**SHORTCUT_AUDIT, "shortcut_suspected": False, "lungs_hidden_accuracy": 0.295}})

    def activate(version) -> str:
        response = admin_client.post(reverse("diagnosis:model_version_activate", args=[version.id]), follow=True)
        version.refresh_from_db()
        assert version.status == "active"  # a warning, not a refusal: the administrator decides
        return " ".join(str(message) for message in response.context["messages"])

    said = activate(suspected)
    assert "suspected 1 still classifies 56% of its test films correctly with the lungs hidden (chance 33%)" in said
    assert "shortcut" not in activate(clean).lower()
    assert "No shortcut audit is recorded for unaudited 1" in activate(unaudited)
    # A hand-edited record without the figures still warns, and never breaks the page.
    ModelVersion.objects.filter(pk=unaudited.pk).update(
        evaluation={"shortcut_audit": {"shortcut_suspected": True, "lungs_hidden_accuracy": None}})
    activate(clean)
    assert "unaudited 1 still classifies ? of its test films correctly" in activate(unaudited)

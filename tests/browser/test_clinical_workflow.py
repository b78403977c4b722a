"""The clinical workflow in a real browser: Debian's Chromium, headless, driven by Playwright against a live server.

A clinician signs in, uploads a chest X-ray through the upload page, sees the result, acknowledges the
COVID-19 alert, records feedback and switches to Spanish; an auditor cannot upload. The upload goes through the real page;
the inference task then runs in this process (as a worker would), on a tiny model trained for the tests.
Screenshots of each step go to test-artifacts/browser/.
"""

import json
import shutil

import pytest

from tests import images
from tests.browser.pages import ARTIFACTS, TIMEOUT_MS, screenshot, sign_in
from tests.factories import PatientFactory, UserFactory


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_clinician_uploads_sees_result_acknowledges_alert_and_records_feedback_and_auditor_cannot_upload(
    browser, live_server, tiny_model_dir, monkeypatch, queued_inference, tmp_path
):
    from diagnosis.models import Alert, AlertDelivery, Feedback, Study
    from diagnosis.services.inference import study_run_inference
    from diagnosis.services.model_registry import model_version_register
    from diagnosis.tasks import deliver_alert

    clinician = UserFactory(username="dr_browser", clinician=True)
    auditor = UserFactory(username="auditor_browser", auditor=True)
    patient = PatientFactory(mrn="MRN-BROWSER", name="Lucia Fernandez")
    # Threshold 0: whatever the tiny model says about the synthetic film, this study raises an alert. It is set
    # in a copy of the artifact, so the registered version and its folder agree (the worker refuses a folder whose
    # operating point differs from its version's).
    artifact = tmp_path / "tiny-threshold-0"
    shutil.copytree(tiny_model_dir, artifact)
    metadata = json.loads((artifact / "metadata.json").read_text())
    metadata["covid_threshold"] = 0.0
    # Crop to the lungs, as production does: the heatmap then covers only part of the film.
    metadata["recipe"]["preprocessing"].update(crop="lungs", lung_segmenter="lung_segmenter")
    (artifact / "metadata.json").write_text(json.dumps(metadata))
    model_version = model_version_register(artifact_dir=artifact, activate=True)
    assert model_version.covid_threshold == 0.0

    monkeypatch.setattr("diagnosis.tasks.deliver_alert.delay",
                        lambda **kwargs: deliver_alert.apply(kwargs=kwargs))
    film = tmp_path / "chest.png"
    film.write_bytes(images.png_bytes(images.gradient(320, 256, seed=3)))

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()

    # 1. The clinician signs in.
    sign_in(page, live_server.url, clinician)
    page.wait_for_selector("h1")
    screenshot(page, "01-clinician-signed-in")

    # 2. Uploads a chest X-ray through the upload page.
    page.goto(f"{live_server.url}/patients/{patient.id}/upload/")
    page.set_input_files("input[type=file]", str(film))
    page.fill("input[name=accession_number]", "ACC-BROWSER-1")
    screenshot(page, "02-upload-form")
    page.click("[data-testid=upload-submit]")
    page.wait_for_selector("[data-testid=disclaimer]")
    study = Study.objects.get(accession_number="ACC-BROWSER-1")
    assert page.url.endswith(f"/studies/{study.id}/")
    assert queued_inference == [{"study_id": study.id}]
    screenshot(page, "03-study-queued")

    # 3. The worker's task runs; the page (polling) shows the result.
    assert study_run_inference(study_id=study.id).status == "completed"
    page.wait_for_selector("[data-testid=predicted-label]", timeout=60_000)
    probabilities = page.inner_text("[data-testid=probabilities]")
    assert "COVID-19" in probabilities and "Pneumonia" in probabilities and "No findings" in probabilities
    assert "does not replace" in page.inner_text("[data-testid=disclaimer]")
    assert model_version.name in page.inner_text("[data-testid=model-version]")
    assert page.is_visible("[data-testid=alert-box][data-alert-state=open]")
    # 4. The heatmap lies over the film, on the part the model analysed, at its true aspect; the film stays.
    assert page.is_hidden("#heatmap-layer")
    page.click("#heatmap-toggle")
    page.wait_for_function("() => document.getElementById('heatmap-layer').complete && "
                           "document.getElementById('heatmap-layer').naturalWidth > 0")
    assert page.is_visible("#study-image") and page.is_visible("#heatmap-layer")
    box = study.predictions.get().heatmap_box
    assert box != {"top": 0.0, "bottom": 1.0, "left": 0.0, "right": 1.0}  # a lung crop, not the whole film
    film_rect = page.locator("#study-image").bounding_box()
    layer_rect = page.locator("#heatmap-layer").bounding_box()
    assert film_rect["width"] / film_rect["height"] == pytest.approx(320 / 256, rel=0.02)
    assert layer_rect["x"] == pytest.approx(film_rect["x"] + box["left"] * film_rect["width"], abs=2)
    assert layer_rect["y"] == pytest.approx(film_rect["y"] + box["top"] * film_rect["height"], abs=2)
    assert layer_rect["width"] == pytest.approx((box["right"] - box["left"]) * film_rect["width"], abs=2)
    assert layer_rect["height"] == pytest.approx((box["bottom"] - box["top"]) * film_rect["height"], abs=2)
    page.fill("#heatmap-opacity", "80")
    assert page.evaluate("() => getComputedStyle(document.getElementById('heatmap-layer')).opacity") == "0.8"
    screenshot(page, "04-result-with-heatmap")
    page.click("#heatmap-toggle")
    assert page.is_hidden("#heatmap-layer") and page.is_visible("#study-image")
    page.click("#zoom-toggle")
    assert "zoomed" in page.get_attribute("#film-stack", "class")

    # 4. The alert shows in the navbar badge and the alert list; the clinician acknowledges it.
    assert Alert.objects.filter(study=study).count() == 1
    assert AlertDelivery.objects.filter(alert__study=study, channel="in_app", outcome="succeeded").count() == 1
    page.goto(f"{live_server.url}/worklist/")
    assert page.inner_text("[data-testid=alert-badge]") == "1"
    page.click("[data-testid=nav-alerts]")
    page.wait_for_selector("[data-testid=alert-row][data-alert-state=open]")
    screenshot(page, "05-alert-list")
    page.click("[data-testid=acknowledge-alert]")
    page.wait_for_selector("[data-testid=alert-row][data-alert-state=acknowledged]")
    assert page.locator("[data-testid=alert-badge]").count() == 0
    screenshot(page, "06-alert-acknowledged")
    alert = Alert.objects.get(study=study)
    assert alert.acknowledged_by_id == clinician.id and alert.acknowledged_at is not None

    # 5. Records feedback on the study.
    page.goto(f"{live_server.url}/studies/{study.id}/")
    page.locator("[data-testid=agreement] label", has_text="Disagree").click()
    predicted = study.predictions.get().predicted_label
    correct = "pneumonia" if predicted != "pneumonia" else "normal"
    page.select_option("select[name=correct_label]", correct)
    page.fill("textarea[name=note]", "Patchy consolidation, right lower zone.")
    page.click("[data-testid=feedback-submit]")
    page.wait_for_selector("[data-testid=feedback-item]")
    assert "Patchy consolidation" in page.inner_text("[data-testid=feedback]")
    screenshot(page, "07-feedback-recorded")
    feedback = Feedback.objects.get(study=study, author=clinician)
    assert (feedback.agrees, feedback.correct_label) == (False, correct)

    # The PDF report downloads from the study page.
    with page.expect_download() as download_info:
        page.click("[data-testid=report-pdf]")
    report_path = ARTIFACTS / "report-ACC-BROWSER-1.pdf"
    download_info.value.save_as(str(report_path))
    assert report_path.read_bytes().startswith(b"%PDF")

    # 6. Picks Spanish in the navbar: the page comes back in Spanish, disclaimer included.
    page.select_option("[data-testid=language-picker] select[name=language]", "es")
    page.click("[data-testid=language-picker] button[type=submit]")
    page.wait_for_selector("html[lang=es]")
    assert "Valoración clínica" in page.inner_text("[data-testid=feedback]")
    assert "no sustituye" in page.inner_text("[data-testid=disclaimer]")
    screenshot(page, "08-study-in-spanish")
    context.close()

    # 7. An auditor reads the study but cannot upload.
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device = TOTPDevice.objects.create(user=auditor, name="browser test authenticator", confirmed=True)
    auditor_context = browser.new_context(viewport={"width": 1280, "height": 900})
    auditor_context.set_default_timeout(TIMEOUT_MS)
    auditor_page = auditor_context.new_page()
    sign_in(auditor_page, live_server.url, auditor, device)
    auditor_page.goto(f"{live_server.url}/studies/{study.id}/")
    auditor_page.wait_for_selector("[data-testid=predicted-label]")
    assert auditor_page.locator("[data-testid=feedback-form]").count() == 0
    auditor_page.goto(f"{live_server.url}/patients/{patient.id}/")
    assert auditor_page.locator(f"a[href='/patients/{patient.id}/upload/']").count() == 0
    screenshot(auditor_page, "09-auditor-patient-page")
    response = auditor_page.goto(f"{live_server.url}/patients/{patient.id}/upload/")
    assert response.status == 403
    screenshot(auditor_page, "10-auditor-upload-refused")
    auditor_context.close()
    assert Study.objects.count() == 1

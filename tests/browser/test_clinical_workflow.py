"""The clinical workflow in a real browser: Debian's Chromium, headless, driven by Playwright against a live server.

A clinician signs in, uploads a chest X-ray through the upload page, sees the result, acknowledges the
COVID-19 alert, records feedback and switches to Spanish; an auditor cannot upload. The upload goes through the real page;
the inference task then runs in this process (as a worker would), on a tiny model trained for the tests.
Screenshots of each step go to test-artifacts/browser/.
"""

import json
import os
import shutil
from pathlib import Path

import pytest

from tests import images
from tests.factories import TEST_PASSWORD, PatientFactory, UserFactory

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "browser"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 30_000


def chromium_path() -> str | None:
    configured = os.environ.get("CXR_CHROMIUM")
    for candidate in ((configured,) if configured else ()) + CHROMIUM_CANDIDATES:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


@pytest.fixture
def browser(monkeypatch):
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium; .ci/run does this)")
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
            # While Playwright's loop runs, the ORM works on its own connection: close it, or the test
            # database cannot be dropped at the end of the session.
            from django.db import connections

            connections.close_all()


@pytest.fixture
def live_server(django_db_setup, django_db_blocker):
    """pytest-django's live server, but stopped after this test, so its database connection closes before teardown."""
    from pytest_django.live_server_helper import LiveServer

    server = LiveServer("localhost")
    yield server
    server.stop()


def screenshot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page, base_url: str, user, device=None) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", TEST_PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_load_state()
    if "/accounts/two-factor/" in page.url:
        from django_otp.oath import totp

        code = totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=device.drift)
        page.fill("input[name=token]", f"{code:0{device.digits}d}")
        page.click("main button[type=submit]")
        page.wait_for_load_state()
    assert "/accounts/login/" not in page.url, page.content()[:2000]


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
    (artifact / "metadata.json").write_text(json.dumps(metadata))
    model_version = model_version_register(artifact_dir=artifact, activate=True)
    assert model_version.covid_threshold == 0.0

    monkeypatch.setattr("diagnosis.tasks.deliver_alert.delay",
                        lambda **kwargs: deliver_alert.apply(kwargs=kwargs))
    film = tmp_path / "chest.png"
    film.write_bytes(images.png_bytes(images.gradient(256, 256, seed=3)))

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
    page.click("#zoom-toggle")
    assert "zoomed" in page.get_attribute("#study-image", "class")
    page.click("#heatmap-toggle")
    page.wait_for_function("document.getElementById('study-image').src.includes('heatmap')")
    screenshot(page, "04-result-with-heatmap")

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
    page.check("input[name=agrees][value=no]")
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

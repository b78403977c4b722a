"""What each role sees after the analysis, in a real browser: where sign-in lands, alert states, reviewed studies,
an alert under another result, and the worklist at phone width. Screenshots go to test-artifacts/browser/.

The studies and results are made directly (these tests check pages, not inference; the clinical workflow test
runs the model).
"""

import pytest
from django.utils import timezone

from tests import images
from tests.browser.pages import TIMEOUT_MS, screenshot, sign_in
from tests.factories import PatientFactory, UserFactory

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def completed_study(*, accession: str, uploaded_by, probabilities: dict[str, float], model_version, warnings=()):
    """A completed study with one prediction (and its alert when the COVID-19 probability reaches the threshold)."""
    from diagnosis.models import Prediction, Study
    from diagnosis.services.alerts import alert_raise_for_prediction
    from diagnosis.services.ingest import study_create

    study = study_create(patient=PatientFactory(), uploaded_by=uploaded_by, data=images.png_bytes(),
                         accession_number=accession)
    label = max(probabilities, key=probabilities.get)
    prediction = Prediction.objects.create(
        study=study, model_version=model_version, probabilities=probabilities, raw_probabilities=probabilities,
        predicted_label=label, covid_probability=probabilities["covid"], covid_threshold=model_version.covid_threshold,
        covid_alert=probabilities["covid"] >= model_version.covid_threshold, inference_ms=10.0,
        warnings=list(warnings),
    )
    Study.objects.filter(id=study.id).update(status="completed", completed_at=timezone.now())
    alert_raise_for_prediction(prediction=prediction)
    return study


def new_page(browser, viewport=DESKTOP):
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(TIMEOUT_MS)
    return context, context.new_page()


def overflows_sideways(page) -> bool:
    return page.evaluate("() => document.documentElement.scrollWidth > window.innerWidth + 1")


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_roles_land_where_they_may_and_reviewed_results_read_the_same_everywhere(
    browser, live_server, monkeypatch, queued_inference
):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from audit.models import AuditEvent
    from diagnosis.models import Alert
    from tests.security.records import make_model_version

    monkeypatch.setattr("diagnosis.tasks.deliver_alert.delay", lambda **kwargs: None)
    clinician = UserFactory(username="dr_review", clinician=True)
    administrator = UserFactory(username="admin_browser", administrator=True)
    auditor = UserFactory(username="auditor_review", auditor=True)
    model_version = make_model_version("browser-model")  # COVID-19 alert threshold 0.4
    corrected = completed_study(accession="ACC-CORRECTED", uploaded_by=clinician, model_version=model_version,
                                probabilities={"covid": 0.81, "normal": 0.1, "pneumonia": 0.09})
    pneumonia = completed_study(accession="ACC-PNEUMONIA", uploaded_by=clinician, model_version=model_version,
                                probabilities={"covid": 0.42, "normal": 0.08, "pneumonia": 0.5})
    photo = completed_study(accession="ACC-HOLIDAY-PHOTO", uploaded_by=clinician, model_version=model_version,
                            probabilities={"covid": 0.1, "normal": 0.78, "pneumonia": 0.12},
                            warnings=["not_radiograph", "unfamiliar"])
    completed_study(accession="ACC-WAITING-REVIEW", uploaded_by=clinician, model_version=model_version,
                    probabilities={"covid": 0.05, "normal": 0.9, "pneumonia": 0.05})

    # 1. An administrator signs in from the bare sign-in page (where Log out leads) and lands on the model page.
    device = TOTPDevice.objects.create(user=administrator, name="phone", confirmed=True)
    context, page = new_page(browser)
    sign_in(page, live_server.url, administrator, device)
    assert page.url == f"{live_server.url}/models/", page.url
    assert "Not allowed" not in page.content()
    screenshot(page, "11-administrator-lands-on-models")
    context.close()
    assert not AuditEvent.objects.filter(actor_username="admin_browser", outcome="denied").exists()

    # 5. The clinician corrects a COVID-19 result to "No findings" on the study page; the worklist says so.
    context, page = new_page(browser)
    sign_in(page, live_server.url, clinician)
    assert page.url == f"{live_server.url}/worklist/"
    page.goto(f"{live_server.url}/studies/{corrected.id}/")
    page.locator("[data-testid=agreement] label", has_text="Disagree").click()
    page.select_option("select[name=correct_label]", "normal")
    page.click("[data-testid=feedback-submit]")
    page.wait_for_selector("[data-testid=feedback-item]")
    assert page.get_attribute("[data-testid=alert-box]", "data-alert-state") == "withdrawn"
    screenshot(page, "12-study-corrected-alert-withdrawn")
    page.goto(f"{live_server.url}/worklist/")
    row = page.locator(f"[data-testid=worklist-row][data-study-id='{corrected.id}']")
    assert row.get_attribute("data-reviewed") == "yes"
    review = row.locator("[data-testid=clinician-review]").inner_text()
    assert "No findings" in review and "dr_review" in review and "corrected" in review
    assert "COVID-19" in row.locator("[data-testid=model-result]").inner_text()
    waiting = page.locator("[data-testid=worklist-row]", has_text="ACC-WAITING-REVIEW")
    assert waiting.get_attribute("data-reviewed") == "no" and "Not reviewed" in waiting.inner_text()
    screenshot(page, "13-worklist-reviewed-and-corrected")

    # 6. A COVID-19 alert under a "Pneumonia" result says why, in plain words.
    page.goto(f"{live_server.url}/studies/{pneumonia.id}/")
    assert page.inner_text("[data-testid=predicted-label]") == "Pneumonia"
    explanation = page.inner_text("[data-testid=alert-other-class]")
    assert "highest probability" in explanation and "lower probability" in explanation
    screenshot(page, "14-covid-alert-under-pneumonia")

    # A colour photo's result says plainly to ignore it, before anything else.
    page.goto(f"{live_server.url}/studies/{photo.id}/")
    first_warning = page.locator("[data-testid=result-warning]").first
    assert first_warning.get_attribute("data-voids-result") == "yes"
    assert "probably not a chest radiograph" in first_warning.inner_text() and "ignore this result" in first_warning.inner_text()
    screenshot(page, "25-colour-photo-not-a-radiograph")

    # The API docs keep the portal's navigation; no page asks for a missing favicon.
    not_found = []
    page.on("response", lambda response: not_found.append(response.url) if response.status == 404 else None)
    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector("#swagger-ui .opblock", timeout=60_000)
    assert page.is_visible("[data-testid=nav-alerts]") and page.is_visible("[data-testid=current-user]")
    screenshot(page, "24-api-docs-with-navigation")
    page.goto(f"{live_server.url}/studies/{pneumonia.id}/")
    assert not_found == [], not_found

    # 7. In Spanish, acknowledging reads as "seen", never as "confirmed" (the alert does not confirm COVID-19).
    page.select_option("[data-testid=language-picker] select[name=language]", "es")
    page.click("[data-testid=language-picker] button[type=submit]")
    page.wait_for_selector("html[lang=es]")
    assert page.inner_text("[data-testid=acknowledge-alert]") == "Marcar como vista"
    assert "Por qué hay una alerta si el resultado es Neumonía" in page.inner_text("[data-testid=alert-other-class]")
    page.click("[data-testid=acknowledge-alert]")
    page.wait_for_selector("[data-testid=alert-box][data-alert-state=acknowledged]")
    alert_box = page.inner_text("[data-testid=alert-box]")
    assert "Vista por dr_review" in alert_box
    assert "onfirmad" not in page.inner_text("main")
    screenshot(page, "18-alert-seen-in-spanish")
    context.close()

    # Phone width: the worklist reads as cards and never scrolls sideways.
    context, page = new_page(browser, PHONE)
    sign_in(page, live_server.url, clinician)
    page.goto(f"{live_server.url}/worklist/")
    page.wait_for_selector("[data-testid=worklist-row]")
    assert not overflows_sideways(page)
    assert page.locator("[data-testid=worklist] thead").is_hidden()
    screenshot(page, "15-worklist-at-phone-width")
    context.close()

    # 2. The auditor sees the withdrawn alert as withdrawn in the prediction history, as on the alert list.
    assert Alert.objects.get(study=corrected).state == "withdrawn"
    device = TOTPDevice.objects.create(user=auditor, name="phone", confirmed=True)
    context, page = new_page(browser)
    sign_in(page, live_server.url, auditor, device)
    page.goto(f"{live_server.url}/audit/predictions/")
    history_row = page.locator("[data-testid=prediction-row]", has_text="ACC-CORRECTED")
    assert history_row.locator("[data-testid=alert-state]").get_attribute("data-alert-state") == "withdrawn"
    assert "Withdrawn: dr_review recorded a finding other than COVID-19" in history_row.inner_text()
    assert "unacknowledged" not in page.content()
    screenshot(page, "16-prediction-history-withdrawn-alert")
    page.goto(f"{live_server.url}/alerts/")
    alert_row = page.locator("[data-testid=alert-row]", has_text="ACC-CORRECTED")
    assert alert_row.get_attribute("data-alert-state") == "withdrawn"
    assert "Withdrawn: dr_review recorded a finding other than COVID-19" in alert_row.inner_text()
    screenshot(page, "17-alert-list-withdrawn-alert")
    context.close()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_retiring_the_only_active_model_needs_a_reason_and_an_explicit_pause_which_the_worklist_shows(
    browser, live_server
):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from diagnosis.models import ModelVersion
    from tests.security.records import make_model_version

    administrator = UserFactory(username="admin_retire", administrator=True)
    clinician = UserFactory(username="dr_paused", clinician=True)
    active = make_model_version("only-active")
    device = TOTPDevice.objects.create(user=administrator, name="phone", confirmed=True)
    context, page = new_page(browser)
    sign_in(page, live_server.url, administrator, device)
    page.click(f"[data-testid=model-version-{active.id}] [data-testid=retire]")
    page.wait_for_selector("[data-testid=retire-active-warning]")
    screenshot(page, "19-retire-active-model-confirmation")

    # A reason alone is refused: it would leave no active version.
    page.fill("textarea[name=reason]", "Threshold set on the wrong films")
    page.click("[data-testid=retire-confirm]")
    page.wait_for_selector("[data-testid=retire-form] .alert-danger")
    assert "choose to pause analysis" in page.inner_text("[data-testid=retire-form]")
    assert ModelVersion.objects.get(pk=active.pk).status == "active"

    page.check("input[name=pause_analysis]")
    page.click("[data-testid=retire-confirm]")
    page.wait_for_selector("[data-testid=analysis-paused]")
    assert page.url == f"{live_server.url}/models/"
    banner = page.inner_text("[data-testid=analysis-paused]")
    assert "Analysis is paused" in banner and "Threshold set on the wrong films" in banner
    assert "is the active version" not in page.inner_text("main")
    screenshot(page, "20-models-page-analysis-paused")
    context.close()

    context, page = new_page(browser)
    sign_in(page, live_server.url, clinician)
    page.goto(f"{live_server.url}/worklist/")
    assert "Analysis is paused." in page.inner_text("[data-testid=analysis-paused]")
    screenshot(page, "21-worklist-analysis-paused")
    context.close()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_site_monitor_opens_with_a_plain_answer_and_its_chart_fits_with_its_legend(
    browser, live_server, tiny_model_dir, tmp_path, monkeypatch
):
    import shutil

    from django_otp.plugins.otp_totp.models import TOTPDevice

    from diagnosis.services.model_registry import model_version_register
    from ml.serving.monitoring import add_reference, reference_from_films
    from tests.diagnosis import factories
    from tests.diagnosis.test_monitoring import VALIDATION, _results

    path = tmp_path / "monitored"
    shutil.copytree(tiny_model_dir, path)
    add_reference(path, reference_from_films(VALIDATION))
    model = model_version_register(artifact_dir=path, activate=True)
    clinician = UserFactory(username="dr_monitor", clinician=True)
    _results(model=model, patient=PatientFactory(), clinician=clinician, monkeypatch=monkeypatch, count=12,
             label="covid", covid=0.99, confirmed="normal")
    administrator = UserFactory(username="admin_monitor", administrator=True)
    device = TOTPDevice.objects.create(user=administrator, name="phone", confirmed=True)
    assert factories  # the results above are stored as the worker would

    # One sign-in: a second within the same 30 seconds would reuse the TOTP code, which is refused.
    context, page = new_page(browser)
    sign_in(page, live_server.url, administrator, device)
    for name, viewport in (("22-site-monitor", DESKTOP), ("23-site-monitor-at-phone-width", PHONE)):
        page.set_viewport_size(viewport)
        response = page.goto(f"{live_server.url}/models/{model.id}/monitoring/")
        assert response.status == 200 and "/monitoring/" in page.url, page.url
        summary = page.inner_text("[data-testid=monitor-summary]")
        assert "this model behaves differently here than on its validation films" in summary
        assert "raises more false COVID-19 alerts than on validation" in summary
        chart = page.locator("[data-testid=monitor-chart] svg")
        legend = page.locator("[data-testid=monitor-chart] svg text", has_text="this site (95% interval)")
        assert legend.count() == 1
        chart_box, legend_box = chart.bounding_box(), legend.bounding_box()
        assert legend_box["y"] + legend_box["height"] <= chart_box["y"] + chart_box["height"] + 1
        assert chart_box["x"] + chart_box["width"] <= viewport["width"]
        screenshot(page, name)
    context.close()

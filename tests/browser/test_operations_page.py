"""The operations page in a real browser, with real data: studies run by the inference service, a live heartbeat."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tests import images
from tests.browser.pages import TIMEOUT_MS, screenshot, sign_in
from tests.factories import PatientFactory, UserFactory


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_administrator_sees_throughput_latency_queue_failures_and_workers(browser, live_server, tiny_model_dir,
                                                                           queued_inference):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from diagnosis.models import Study, StudyStatus
    from diagnosis.services.inference import study_run_inference
    from diagnosis.services.ingest import study_create
    from diagnosis.services.model_registry import model_version_register
    from diagnosis.services.operations import worker_heartbeat_record

    model_version_register(artifact_dir=tiny_model_dir, activate=True)
    clinician = UserFactory(username="dr_operations", clinician=True)
    patient = PatientFactory(mrn="MRN-OPS")
    studies = [study_create(patient=patient, uploaded_by=clinician, accession_number=f"OPS-{number}",
                            data=images.png_bytes(images.gradient(seed=number))) for number in range(4)]
    for study in studies[:3]:
        assert study_run_inference(study_id=study.id).status == "completed"
    Study.objects.filter(id=studies[2].id).update(status=StudyStatus.FAILED, error_message="test failure")
    Study.objects.filter(id=studies[3].id).update(created_at=timezone.now() - timedelta(seconds=75))
    worker_heartbeat_record(hostname="inference@ward-server", queues="inference", concurrency=2,
                            started_at=timezone.now())

    administrator = UserFactory(username="admin_operations", administrator=True)
    device = TOTPDevice.objects.create(user=administrator, name="phone", confirmed=True)
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    sign_in(page, live_server.url, administrator, device)
    page.click("[data-testid=nav-operations]")
    page.wait_for_selector("[data-testid=operations-chart] svg")

    assert page.inner_text("[data-testid=completed-last-hour]") == "2"
    assert page.inner_text("[data-testid=failed-last-hour]") == "1"
    assert page.inner_text("[data-testid=result-latency]").endswith(" s")
    assert int(page.inner_text("[data-testid=oldest-waiting]").split()[0]) >= 75
    queue = page.inner_text("[data-testid=operations-queue]")
    assert "queued\t1" in queue and "completed\t2" in queue and "failed\t1" in queue
    assert "broker queue “inference”" in queue
    workers = page.inner_text("[data-testid=operations-workers]")
    assert "inference@ward-server" in workers and "alive" in workers
    assert page.locator("[data-testid=operations-chart] svg path").count() > 5  # bars and latency lines drawn
    screenshot(page, "30-operations-page")

    # A clinician has no operations page.
    clinician_page = browser.new_context().new_page()
    sign_in(clinician_page, live_server.url, clinician)
    assert clinician_page.locator("[data-testid=nav-operations]").count() == 0
    assert clinician_page.goto(f"{live_server.url}/operations/").status == 403

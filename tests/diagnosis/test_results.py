"""Results to the PACS (DICOM SR and Secondary Capture by C-STORE) and to the EHR (FHIR), with delivery records."""

import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import ComprehensiveSRStorage, SecondaryCaptureImageStorage

from audit.models import AuditEvent
from diagnosis.models import DeliveryOutcome, ResultDelivery, ResultDestination, StudySource
from diagnosis.services import storage
from diagnosis.services.dicom import DicomSender, study_create_from_dicom
from diagnosis.services.feedback import feedback_record
from diagnosis.services.results import result_deliver, result_destinations_for
from tests import dicom_films
from tests.diagnosis import factories

PACS_AE = "TESTPACS"
FHIR_TOKEN = "Bearer test-ehr-token"


class FakePacs:
    """A storage SCP on loopback that keeps what it is sent and answers with the given statuses in turn."""

    def __init__(self, statuses=(0x0000,)):
        self.statuses = list(statuses)
        self.received = []
        ae = AE(ae_title=PACS_AE)
        for sop_class in (ComprehensiveSRStorage, SecondaryCaptureImageStorage):
            ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event):
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if status == 0x0000:
            dataset = event.dataset
            dataset.file_meta = event.file_meta
            self.received.append(dataset)
        return status


class FakeEhr:
    """A FHIR endpoint on loopback that keeps each request and answers with the given statuses in turn."""

    def __init__(self, statuses=(200,)):
        self.statuses = list(statuses)
        self.requests = []
        ehr = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ehr.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                status = ehr.statuses.pop(0) if len(ehr.statuses) > 1 else ehr.statuses[0]
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.end_headers()
                self.wfile.write(b'{"resourceType": "Bundle", "type": "transaction-response"}')

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/fhir"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def pacs(settings):
    servers = []

    def make(statuses=(0x0000,)):
        server = FakePacs(statuses)
        servers.append(server)
        settings.CXR_RESULTS_PACS_HOST = "127.0.0.1"
        settings.CXR_RESULTS_PACS_PORT = server.port
        settings.CXR_RESULTS_PACS_AE_TITLE = PACS_AE
        return server

    yield make
    for server in servers:
        server.server.shutdown()


@pytest.fixture
def ehr(settings):
    servers = []

    def make(statuses=(200,)):
        server = FakeEhr(statuses)
        servers.append(server)
        settings.CXR_RESULTS_FHIR_URL = server.url
        settings.CXR_RESULTS_FHIR_AUTHORIZATION = FHIR_TOKEN
        return server

    yield make
    for server in servers:
        server.server.shutdown()
        server.server.server_close()


@pytest.fixture
def source_film():
    return dicom_films.radiograph(accession_number="RIS-OUT-1", patient_id="PACS-OUT")


@pytest.fixture
def prediction(db, queued_inference, source_film):
    study = study_create_from_dicom(data=dicom_films.file_bytes(source_film),
                                    sender=DicomSender(source=StudySource.PACS, calling_ae="MODALITY1")).study
    prediction = factories.completed_prediction(study=study, model=factories.model_version(version="7"), covid=0.8)
    # A red heat layer over the middle of the film, as the worker stores it (an RGBA layer and its crop box).
    layer = np.zeros((32, 32, 4), dtype=np.uint8)
    layer[..., 0], layer[..., 3] = 255, 200
    buffer = io.BytesIO()
    Image.fromarray(layer, mode="RGBA").save(buffer, format="PNG")
    prediction.heatmap_sha256 = storage.blob_put(buffer.getvalue(), kind=storage.HEATMAP_LAYER, digest="a" * 64)
    prediction.heatmap_box = {"left": 0.25, "top": 0.25, "right": 0.75, "bottom": 0.75}
    prediction.save(update_fields=["heatmap_sha256", "heatmap_box"])
    return prediction


def content(report, meaning: str) -> list:
    return [item for item in report.ContentSequence if item.ConceptNameCodeSequence[0].CodeMeaning == meaning]


def test_the_report_reaches_the_pacs_in_the_source_study_and_references_the_image(prediction, pacs, source_film):
    server = pacs()

    result = result_deliver(prediction_id=prediction.id, destination=ResultDestination.PACS_REPORT)

    assert result.status == "succeeded"
    [report] = server.received
    assert report.SOPClassUID == ComprehensiveSRStorage
    assert report.StudyInstanceUID == source_film.StudyInstanceUID
    assert (report.PatientID, report.AccessionNumber) == ("PACS-OUT", "RIS-OUT-1")
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert evidence.ReferencedSOPInstanceUID == source_film.SOPInstanceUID
    [image] = content(report, "Source Image")
    assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source_film.SOPInstanceUID
    covid = content(report, "Calibrated probability of COVID-19")[0].MeasuredValueSequence[0].NumericValue
    assert float(covid) == pytest.approx(0.8)
    assert content(report, "COVID-19 alert raised")[0].ConceptCodeSequence[0].CodeMeaning == "Yes"
    assert content(report, "Algorithm Version")[0].TextValue == "7"
    assert any("does not replace" in item.TextValue for item in content(report, "Comment"))
    delivery = ResultDelivery.objects.get(prediction=prediction, destination=ResultDestination.PACS_REPORT)
    assert (delivery.outcome, delivery.attempt, delivery.response_status) == (DeliveryOutcome.SUCCEEDED, 1, 0)
    assert AuditEvent.objects.filter(action="result.deliver", details__destination="pacs_sr").count() == 1


def test_the_secondary_capture_carries_the_heatmap_in_the_source_study(prediction, pacs, source_film):
    server = pacs()

    assert result_deliver(prediction_id=prediction.id, destination=ResultDestination.PACS_IMAGE).status == "succeeded"

    [capture] = server.received
    assert capture.SOPClassUID == SecondaryCaptureImageStorage
    assert capture.StudyInstanceUID == source_film.StudyInstanceUID
    assert capture.PhotometricInterpretation == "RGB"
    assert (capture.Rows, capture.Columns) == (80, 96)
    pixels = capture.pixel_array.astype(int)
    # Red over the crop box, the grey film outside it.
    assert pixels[40, 48, 0] > pixels[40, 48, 2] + 80
    assert abs(pixels[5, 5, 0] - pixels[5, 5, 2]) < 3


def test_a_refusing_pacs_is_recorded_and_retried_until_it_stores_once(prediction, pacs):
    server = pacs(statuses=[0xA700, 0x0000])

    first = result_deliver(prediction_id=prediction.id, destination=ResultDestination.PACS_REPORT)
    second = result_deliver(prediction_id=prediction.id, destination=ResultDestination.PACS_REPORT)
    third = result_deliver(prediction_id=prediction.id, destination=ResultDestination.PACS_REPORT)

    assert (first.status, second.status, third.status) == ("failed", "succeeded", "already_delivered")
    attempts = ResultDelivery.objects.filter(prediction=prediction).order_by("attempt")
    assert [(row.outcome, row.response_status) for row in attempts] == [
        (DeliveryOutcome.FAILED, 0xA700), (DeliveryOutcome.SUCCEEDED, 0)]
    assert len(server.received) == 1


def test_an_unreachable_pacs_is_a_failed_attempt(prediction, settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings.CXR_RESULTS_PACS_HOST, settings.CXR_RESULTS_PACS_PORT = "127.0.0.1", closed_port
    settings.CXR_RESULTS_PACS_TIMEOUT_SECONDS = 2

    result = result_deliver(prediction_id=prediction.id, destination=ResultDestination.PACS_REPORT)

    assert result.status == "failed"
    assert "No association" in ResultDelivery.objects.get(prediction=prediction).detail


def test_destinations_follow_the_settings_and_the_study_source(prediction, settings, clinician, patient, monkeypatch):
    settings.CXR_RESULTS_PACS_HOST, settings.CXR_RESULTS_FHIR_URL = "", ""
    assert result_destinations_for(prediction) == []
    settings.CXR_RESULTS_PACS_HOST = "pacs.example"
    assert result_destinations_for(prediction) == ["pacs_sr"]
    settings.CXR_RESULTS_PACS_SECONDARY_CAPTURE = True
    settings.CXR_RESULTS_FHIR_URL = "https://ehr.example/fhir"
    assert result_destinations_for(prediction) == ["pacs_sr", "pacs_sc", "fhir"]
    uploaded = factories.completed_prediction(
        study=factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch),
        model=prediction.model_version)
    # An uploaded film is not in the PACS: there is nothing there for a report to sit beside.
    assert result_destinations_for(uploaded) == ["fhir"]


def test_the_report_reaches_the_ehr_with_auth_and_is_amended_when_a_clinician_corrects_it(
        prediction, ehr, clinician, settings, django_capture_on_commit_callbacks, monkeypatch):
    server = ehr(statuses=[503, 200])
    rung = []
    monkeypatch.setattr("diagnosis.tasks.deliver_result.delay", lambda **kwargs: rung.append(kwargs))

    assert result_deliver(prediction_id=prediction.id, destination=ResultDestination.EHR).status == "failed"
    assert result_deliver(prediction_id=prediction.id, destination=ResultDestination.EHR).status == "succeeded"

    first = server.requests[-1]
    assert first["headers"]["Authorization"] == FHIR_TOKEN
    assert first["headers"]["Content-Type"] == "application/fhir+json"
    bundle = first["body"]
    assert bundle["type"] == "transaction"
    report = next(entry for entry in bundle["entry"] if entry["resource"]["resourceType"] == "DiagnosticReport")
    assert report["request"] == {"method": "PUT", "url": f"DiagnosticReport/diagnosticreport-{prediction.study_id}"}
    assert report["resource"]["status"] == "preliminary"
    assert [row.response_status for row in ResultDelivery.objects.order_by("attempt")] == [503, 200]

    with django_capture_on_commit_callbacks(execute=True):
        feedback_record(author=clinician, prediction=prediction, agrees=False, correct_label="pneumonia")
    assert rung == [{"prediction_id": prediction.id, "destination": "fhir", "revision": 2}]
    assert result_deliver(**rung[0]).status == "succeeded"

    amended = next(entry["resource"] for entry in server.requests[-1]["body"]["entry"]
                   if entry["resource"]["resourceType"] == "DiagnosticReport")
    assert amended["status"] == "amended"
    assert amended["conclusion"].startswith("Amended: a clinician recorded the finding as Pneumonia.")
    assert ResultDelivery.objects.filter(revision=2, outcome=DeliveryOutcome.SUCCEEDED).count() == 1


def test_the_sweeper_rings_for_results_the_broker_lost_and_for_failed_attempts_only(prediction, pacs, ehr, settings,
                                                                                    monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from diagnosis.models import Prediction
    from diagnosis.services.results import results_redeliver_undelivered

    pacs()
    ehr(statuses=[500])
    settings.CXR_RESULTS_PACS_SECONDARY_CAPTURE = False
    rung = []
    monkeypatch.setattr("diagnosis.tasks.deliver_result.delay", lambda **kwargs: rung.append(kwargs))
    Prediction.objects.filter(id=prediction.id).update(created_at=timezone.now() - timedelta(minutes=10))

    assert result_deliver(prediction_id=prediction.id, destination=ResultDestination.EHR).status == "failed"
    assert results_redeliver_undelivered() == 2
    # The SR's bell was lost before any attempt; the EHR's attempt failed. Both ring again.
    assert sorted(call["destination"] for call in rung) == ["fhir", "pacs_sr"]

    rung.clear()
    assert result_deliver(prediction_id=prediction.id, destination=ResultDestination.PACS_REPORT).status == "succeeded"
    settings.CXR_RESULTS_MAX_ATTEMPTS = 1
    assert results_redeliver_undelivered() == 0


def test_administrators_see_every_attempt_without_patient_data(prediction, pacs, administrator):
    from tests.conftest import logged_in_client

    pacs(statuses=[0xA700, 0x0000])
    result_deliver(prediction_id=prediction.id, destination=ResultDestination.PACS_REPORT)
    result_deliver(prediction_id=prediction.id, destination=ResultDestination.PACS_REPORT)

    page = logged_in_client(administrator).get("/results/deliveries/").content.decode()

    assert page.count('data-testid="result-delivery-row"') == 2
    assert 'data-outcome="failed"' in page and 'data-outcome="succeeded"' in page
    assert "PACS-OUT" not in page and "Doe" not in page

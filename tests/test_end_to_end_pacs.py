"""A real PACS (Orthanc) sends films to the portal's receiver; a real worker classifies them; the results come back.

Orthanc runs on loopback ports with a configuration written here: its REST API answers local clients only
(RemoteAccessAllowed false) and its DICOM port serves only the modality it knows, the portal, at 127.0.0.1.
The receiver is the `dicom_receiver` management command, the worker a real Celery process fed through Redis.
"""

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token

from audit.models import AuditEvent
from diagnosis.models import DeliveryOutcome, ResultDelivery, Study, StudySource, StudyStatus
from tests import dicom_films
from tests.portal_processes import portal_environment, portal_process
from tests.test_end_to_end_worker import celery_worker_process, wait_for_status  # noqa: F401 - fixture

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
ORTHANC_AE = "ORTHANC"
PORTAL_AE = "CXR_PORTAL"
RESULTS_TIMEOUT_SECONDS = 180

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.path.exists(ORTHANC), reason="Orthanc is not installed (.ci/run installs it)"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Orthanc:
    """An Orthanc process and a small client for its REST API."""

    def __init__(self, workdir: Path, *, portal_port: int):
        self.http_port, self.dicom_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        config = {
            "Name": "cxr-portal-e2e",
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "index"),
            "Plugins": [],
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": ORTHANC_AE,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            # Only known modalities, from their registered address, may send or echo.
            "DicomCheckModalityHost": True,
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowEcho": False,
            "DicomModalities": {"portal": [PORTAL_AE, "127.0.0.1", portal_port]},
            "DicomScuTimeout": 30,
            "StableAge": 1,
        }
        config_path = workdir / "orthanc.json"
        config_path.write_text(json.dumps(config))
        self.log_path = workdir / "orthanc.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen([ORTHANC, str(config_path)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.get("/system")
                return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.2)
        self.stop()
        pytest.fail(f"Orthanc did not start:\n{self.log_path.read_text()[-3000:]}")

    def request(self, method: str, path: str, body: bytes | dict | None = None, content_type="application/json"):
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": content_type} if data is not None else {})
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback only
            payload = response.read()
        return json.loads(payload) if payload else None

    def get(self, path: str):
        return self.request("GET", path)

    def upload(self, data: bytes) -> str:
        return self.request("POST", "/instances", data, content_type="application/dicom")["ID"]

    def send_to_portal(self, instance_id: str, **options) -> tuple[int, str]:
        """Orthanc's C-STORE to the portal: (HTTP status, body) of its REST answer."""
        try:
            answer = self.request("POST", "/modalities/portal/store", {"Resources": [instance_id], **options})
            return 200, json.dumps(answer)
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def study_instances(self, study_instance_uid: str) -> list[dict]:
        matches = self.request("POST", "/tools/find", {"Level": "Instance", "Expand": True,
                                                        "Query": {"StudyInstanceUID": study_instance_uid}})
        return matches

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture
def portal_receiver_port():
    return free_port()


@pytest.fixture
def orthanc(tmp_path, portal_receiver_port, monkeypatch):
    workdir = tmp_path / "orthanc"
    workdir.mkdir()
    server = Orthanc(workdir, portal_port=portal_receiver_port)
    # The worker (started after this fixture) sends results to this Orthanc.
    monkeypatch.setenv("CXR_DICOM_AE_TITLE", PORTAL_AE)
    monkeypatch.setenv("CXR_RESULTS_PACS_HOST", "127.0.0.1")
    monkeypatch.setenv("CXR_RESULTS_PACS_PORT", str(server.dicom_port))
    monkeypatch.setenv("CXR_RESULTS_PACS_AE_TITLE", ORTHANC_AE)
    monkeypatch.setenv("CXR_RESULTS_PACS_SECONDARY_CAPTURE", "true")
    yield server
    server.stop()


@pytest.fixture
def receiver_process(orthanc, portal_receiver_port, image_store, tmp_path):
    """The portal's receiver, `python manage.py dicom_receiver`, accepting Orthanc only."""
    log_path = tmp_path / "receiver.log"
    with portal_process(["manage.py", "dicom_receiver", "--ae-title", PORTAL_AE, "--bind", "127.0.0.1",
                         "--port", str(portal_receiver_port), "--allow", ORTHANC_AE],
                        env=portal_environment(image_store), log_path=log_path) as process:
        deadline = time.monotonic() + 60
        while b"DICOM receiver" not in log_path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the receiver did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield process, log_path


@pytest.fixture
def active_tiny_model(tiny_model_dir):
    from diagnosis.services.model_registry import model_version_register

    return model_version_register(artifact_dir=tiny_model_dir, activate=True)


def synthetic_film(**kwargs):
    """A 16-bit DX chest film, 512x512, as a modality would make it."""
    return dicom_films.radiograph(size=(512, 512), **kwargs)


def wait_for_results(orthanc: Orthanc, study_instance_uid: str, *, count: int, worker) -> list[dict]:
    process, log_path = worker
    deadline = time.monotonic() + RESULTS_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        instances = orthanc.study_instances(study_instance_uid)
        if len(instances) >= count:
            return instances
        if process.poll() is not None:
            pytest.fail(f"worker exited early:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.5)
    deliveries = list(ResultDelivery.objects.values("destination", "outcome", "detail"))
    pytest.fail(f"Orthanc holds {len(instances)} instances of the study, not {count}; deliveries: {deliveries}\n"
                f"{log_path.read_text()[-4000:]}")


def result_objects(orthanc: Orthanc, instances: list[dict], source_sop_instance_uid: str) -> dict[str, dict]:
    """The SR and SC in the study, by SOP class, with their tags."""
    objects = {}
    for instance in instances:
        tags = orthanc.get(f"/instances/{instance['ID']}/simplified-tags")
        if tags["SOPInstanceUID"] != source_sop_instance_uid:
            objects[tags["SOPClassUID"]] = {"id": instance["ID"], "tags": tags}
    return objects


COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def check_results_came_back(orthanc: Orthanc, film, *, worker) -> None:
    instances = wait_for_results(orthanc, film.StudyInstanceUID, count=3, worker=worker)
    objects = result_objects(orthanc, instances, film.SOPInstanceUID)
    assert set(objects) == {COMPREHENSIVE_SR, SECONDARY_CAPTURE}
    report = objects[COMPREHENSIVE_SR]["tags"]
    assert report["StudyInstanceUID"] == film.StudyInstanceUID
    assert report["PatientID"] == film.PatientID
    evidence = report["CurrentRequestedProcedureEvidenceSequence"][0]["ReferencedSeriesSequence"][0]
    assert evidence["ReferencedSOPSequence"][0]["ReferencedSOPInstanceUID"] == film.SOPInstanceUID
    texts = json.dumps(report["ContentSequence"])
    assert "Calibrated probability of COVID-19" in texts and "does not replace" in texts
    assert objects[SECONDARY_CAPTURE]["tags"]["StudyInstanceUID"] == film.StudyInstanceUID
    assert set(ResultDelivery.objects.values_list("destination", "outcome")) == {
        ("pacs_sr", DeliveryOutcome.SUCCEEDED), ("pacs_sc", DeliveryOutcome.SUCCEEDED)}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_orthanc_sends_a_film_and_gets_the_report_and_heatmap_back(
        orthanc, receiver_process, active_tiny_model, celery_worker_process):
    film = synthetic_film(accession_number="E2E-PACS-1", patient_id="E2E-PACS")
    instance_id = orthanc.upload(dicom_films.file_bytes(film))

    status, body = orthanc.send_to_portal(instance_id)

    assert status == 200, body
    study = Study.objects.get(sop_instance_uid=film.SOPInstanceUID)
    assert (study.source, study.accession_number, study.patient.mrn) == (StudySource.PACS, "E2E-PACS-1", "E2E-PACS")
    process, log_path = celery_worker_process
    study = wait_for_status(study.id, {StudyStatus.COMPLETED, StudyStatus.FAILED}, process=process, log_path=log_path)
    assert study.status == StudyStatus.COMPLETED, study.error_message
    check_results_came_back(orthanc, film, worker=celery_worker_process)
    association = AuditEvent.objects.filter(action="dicom.association", outcome="success").first()
    assert association.details["calling_ae"] == ORTHANC_AE and association.client_ip == "127.0.0.1"

    # Orthanc sending the same instance again changes nothing.
    assert orthanc.send_to_portal(instance_id)[0] == 200
    assert Study.objects.filter(sop_instance_uid=film.SOPInstanceUID).count() == 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_film_pushed_over_stow_rs_gets_its_results_in_orthanc(
        orthanc, live_server, clinician, active_tiny_model, celery_worker_process):
    film = synthetic_film(accession_number="E2E-STOW-1", patient_id="E2E-STOW")
    # The PACS must hold the source image for the results to sit beside it.
    orthanc.upload(dicom_films.file_bytes(film))
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + dicom_films.file_bytes(film)
            + f"\r\n--{boundary}--\r\n".encode())
    request = urllib.request.Request(
        f"{live_server.url}/dicomweb/studies", data=body, method="POST",
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                 "Accept": "application/dicom+json",
                 "Authorization": f"Token {Token.objects.get_or_create(user=clinician)[0].key}"})
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback only
        assert response.status == 200
        answer = json.loads(response.read())
    assert answer["00081199"]["Value"][0]["00081155"]["Value"] == [film.SOPInstanceUID]

    study = Study.objects.get(sop_instance_uid=film.SOPInstanceUID)
    assert study.source == StudySource.STOW
    process, log_path = celery_worker_process
    study = wait_for_status(study.id, {StudyStatus.COMPLETED, StudyStatus.FAILED}, process=process, log_path=log_path)
    assert study.status == StudyStatus.COMPLETED, study.error_message
    check_results_came_back(orthanc, film, worker=celery_worker_process)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_receiver_refuses_a_ct_image_a_truncated_film_and_an_unknown_calling_ae(orthanc, receiver_process):
    ct = dicom_films.ct_slice(size=(128, 128))
    truncated = dicom_films.truncated_radiograph(size=(256, 256))
    chest = synthetic_film(accession_number="E2E-STRANGER")

    for dataset in (ct, truncated):
        status, body = orthanc.send_to_portal(orthanc.upload(dicom_films.file_bytes(dataset)))
        assert status >= 400, body
    # Orthanc calling with another AE title than the one the receiver allows.
    status, body = orthanc.send_to_portal(orthanc.upload(dicom_films.file_bytes(chest)), LocalAet="STRANGER")
    assert status >= 400, body

    assert not Study.objects.exists()
    _, log_path = receiver_process
    refusals = {event.details["sop_instance_uid"]: event.details["status"]
                for event in AuditEvent.objects.filter(action="study.receive", outcome="denied")}
    assert refusals == {ct.SOPInstanceUID: "0x0122", truncated.SOPInstanceUID: "0xC000"}, log_path.read_text()[-3000:]
    deadline = time.monotonic() + 10
    while not AuditEvent.objects.filter(action="dicom.association", outcome="denied").exists():
        assert time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.2)
    assert AuditEvent.objects.get(action="dicom.association", outcome="denied").details["calling_ae"] == "STRANGER"

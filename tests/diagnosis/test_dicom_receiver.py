"""The C-STORE receiver, driven by a real pynetdicom SCU over loopback TCP."""

import re
import socket
import time

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from audit.models import AuditEvent
from diagnosis.dicom_receiver import ReceiverConfig, receiver_start
from diagnosis.models import Patient, Study, StudySource, ViewPosition
from diagnosis.services.dicom import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_OUT_OF_RESOURCES,
    STATUS_SOP_CLASS_NOT_SUPPORTED,
)
from tests import dicom_films

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

RECEIVER_AE = "CXR_TEST"
ALLOWED_AE = "MODALITY1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def receiver():
    config = ReceiverConfig(ae_title=RECEIVER_AE, port=free_port(), allowed_calling_aes=[ALLOWED_AE])
    server = receiver_start(config, block=False)
    yield config
    server.shutdown()


def send(config: ReceiverConfig, *datasets, calling_ae: str = ALLOWED_AE) -> list[int]:
    """C-STORE each dataset in one association; the status of each."""
    scu = AE(ae_title=calling_ae)
    for dataset in datasets:
        scu.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
    association = scu.associate("127.0.0.1", config.port, ae_title=config.ae_title)
    assert association.is_established
    try:
        return [association.send_c_store(dataset).Status for dataset in datasets]
    finally:
        association.release()


def test_answers_c_echo(receiver):
    scu = AE(ae_title=ALLOWED_AE)
    scu.add_requested_context(Verification)
    association = scu.associate("127.0.0.1", receiver.port, ae_title=RECEIVER_AE)
    assert association.is_established
    assert association.send_c_echo().Status == 0x0000
    association.release()


def test_stores_a_chest_radiograph_as_a_queued_study_from_its_tags(receiver, queued_inference):
    film = dicom_films.radiograph(patient_id="PACS-77", patient_name="Roe^Richard", accession_number="RIS-1001",
                                  view_position="AP", study_date="20260315")

    assert send(receiver, film) == [0x0000]

    study = Study.objects.select_related("patient").get(sop_instance_uid=film.SOPInstanceUID)
    assert study.source == StudySource.PACS
    assert (study.patient.mrn, study.patient.name) == ("PACS-77", "Roe Richard")
    assert study.accession_number == "RIS-1001"
    assert study.view_position == ViewPosition.AP
    assert study.acquisition_date.isoformat() == "2026-03-15"
    assert study.dicom_header["0020000D"]["Value"] == [film.StudyInstanceUID]
    assert "7FE00010" not in study.dicom_header
    assert queued_inference == [{"study_id": study.id}]
    received = AuditEvent.objects.get(action="study.receive", object_id=str(study.id))
    assert received.actor_username == f"dicom:{ALLOWED_AE}"
    assert received.client_ip == "127.0.0.1"
    assert received.details["calling_ae"] == ALLOWED_AE
    association = AuditEvent.objects.get(action="dicom.association")
    assert association.details["calling_ae"] == ALLOWED_AE
    assert association.details["called_ae"] == RECEIVER_AE
    assert association.outcome == "success"


def test_a_repeated_instance_is_acknowledged_and_ignored(receiver, queued_inference):
    film = dicom_films.radiograph()

    assert send(receiver, film, film) == [0x0000, 0x0000]
    assert send(receiver, film) == [0x0000]

    assert Study.objects.filter(sop_instance_uid=film.SOPInstanceUID).count() == 1
    assert len(queued_inference) == 1
    repeats = AuditEvent.objects.filter(action="study.receive", details__repeat=True)
    assert repeats.count() == 2


def test_a_second_film_of_the_same_accession_becomes_its_own_study(receiver, queued_inference):
    frontal = dicom_films.radiograph(accession_number="RIS-2", view_position="PA")
    lateral = dicom_films.radiograph(accession_number="RIS-2", view_position="LL", seed=1)

    assert send(receiver, frontal, lateral) == [0x0000, 0x0000]

    assert sorted(Study.objects.values_list("accession_number", flat=True)) == ["RIS-2", "RIS-2-2"]


def test_refuses_a_ct_image_with_sop_class_not_supported(receiver, queued_inference):
    assert send(receiver, dicom_films.ct_slice()) == [STATUS_SOP_CLASS_NOT_SUPPORTED]

    assert not Study.objects.exists() and not Patient.objects.exists()
    refusal = AuditEvent.objects.get(action="study.receive")
    assert refusal.outcome == "denied"
    assert "SOP class" in refusal.details["reason"]


@pytest.mark.parametrize("film", [
    dicom_films.radiograph(body_part="HAND"),
    dicom_films.radiograph(sop_class=dicom_films.CR_IMAGE, modality="MR"),
])
def test_refuses_radiographs_that_are_not_chest_radiographs(receiver, queued_inference, film):
    assert send(receiver, film) != [0x0000]

    assert not Study.objects.exists()
    assert queued_inference == []


def test_accepts_a_computed_radiograph_that_names_no_body_part(receiver, queued_inference):
    film = dicom_films.radiograph(sop_class=dicom_films.CR_IMAGE, modality="CR", body_part="")

    assert send(receiver, film) == [0x0000]
    assert Study.objects.filter(sop_instance_uid=film.SOPInstanceUID).exists()


def test_refuses_a_truncated_dataset_with_cannot_understand(receiver, queued_inference):
    assert send(receiver, dicom_films.truncated_radiograph()) == [STATUS_CANNOT_UNDERSTAND]

    assert not Study.objects.exists() and not Patient.objects.exists()
    assert AuditEvent.objects.get(action="study.receive").outcome == "denied"


def test_never_answers_success_when_storing_fails(receiver, queued_inference, monkeypatch):
    def broken_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr("diagnosis.services.storage.blob_put", broken_disk)

    assert send(receiver, dicom_films.radiograph()) == [STATUS_OUT_OF_RESOURCES]
    assert not Study.objects.exists() and not Patient.objects.exists()


def test_rejects_an_association_from_an_unknown_calling_ae(receiver, queued_inference):
    scu = AE(ae_title="STRANGER")
    scu.add_requested_context(Verification)
    association = scu.associate("127.0.0.1", receiver.port, ae_title=RECEIVER_AE)

    assert association.is_rejected
    # The receiver audits after it has sent the rejection.
    deadline = time.monotonic() + 10
    while not AuditEvent.objects.filter(action="dicom.association").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    rejected = AuditEvent.objects.get(action="dicom.association")
    assert rejected.outcome == "denied"
    assert rejected.details["calling_ae"] == "STRANGER"
    assert rejected.client_ip == "127.0.0.1"


def test_refuses_to_start_when_no_calling_ae_is_allowed():
    with pytest.raises(ValueError, match="CXR_DICOM_ALLOWED_CALLING_AES"):
        receiver_start(ReceiverConfig(ae_title=RECEIVER_AE, port=free_port()), block=False)


def test_the_worklist_and_the_api_show_where_each_study_came_from(receiver, queued_inference, client, clinician, study):
    film = dicom_films.radiograph(accession_number="RIS-WL")
    assert send(receiver, film) == [0x0000]
    client.force_login(clinician)

    page = client.get("/worklist/").content.decode()

    sources = dict(re.findall(r'>([^<]+)</a> <span class="badge[^"]*" data-testid="study-source">([^<]+)<', page))
    assert sources == {"RIS-WL": "PACS", "ACC-STUDY": "Upload"}
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(clinician)
    received = Study.objects.get(accession_number="RIS-WL")
    assert api.get(f"/api/studies/{received.id}/").json()["source"] == "pacs"


def test_the_command_refuses_to_start_without_allowed_calling_aes(settings):
    from django.core.management import CommandError, call_command

    settings.CXR_DICOM_ALLOWED_CALLING_AES = []
    with pytest.raises(CommandError, match="CXR_DICOM_ALLOWED_CALLING_AES"):
        call_command("dicom_receiver", "--port", str(free_port()))


def test_a_busy_decoder_answers_out_of_resources_so_the_sender_retries(receiver, queued_inference, monkeypatch):
    from diagnosis.services.ingest import UploadBusy

    def busy(**kwargs):
        raise UploadBusy("Too many films are being read at once.", retry_after_seconds=5)

    monkeypatch.setattr("diagnosis.services.dicom.image_prepare", busy)

    assert send(receiver, dicom_films.radiograph()) == [STATUS_OUT_OF_RESOURCES]
    assert not Study.objects.exists()


def self_signed_certificate(folder) -> tuple[str, str]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    certificate_path, key_path = folder / "receiver.crt", folder / "receiver.key"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(certificate_path), str(key_path)


def test_serves_dicom_over_tls_when_given_a_certificate(tmp_path, queued_inference):
    import ssl

    certificate, key = self_signed_certificate(tmp_path)
    config = ReceiverConfig(ae_title=RECEIVER_AE, port=free_port(), allowed_calling_aes=[ALLOWED_AE],
                            tls_certificate=certificate, tls_key=key)
    server = receiver_start(config, block=False)
    try:
        plain = AE(ae_title=ALLOWED_AE)
        plain.add_requested_context(Verification)
        assert not plain.associate("127.0.0.1", config.port, ae_title=RECEIVER_AE).is_established

        client_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=certificate)
        scu = AE(ae_title=ALLOWED_AE)
        scu.add_requested_context(Verification)
        association = scu.associate("127.0.0.1", config.port, ae_title=RECEIVER_AE,
                                    tls_args=(client_context, "localhost"))
        assert association.is_established
        assert association.send_c_echo().Status == 0x0000
        association.release()
    finally:
        server.shutdown()

"""Uploads: size capped before reading, rate-limited per user, type by content, DICOM parsed with limits,
re-encoded and encrypted at rest, and served only to authorised users with nosniff."""

import io

import numpy as np
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from PIL import Image

from audit.models import AuditEvent
from diagnosis.models import Study
from diagnosis.services import storage
from diagnosis.services.ingest import UploadRateLimited, UploadRejected, study_create
from ml.serving.imaging import DICOM_MAX_SEQUENCE_DEPTH, ImageDecodeError, decode_image
from tests import images


pytestmark = pytest.mark.usefixtures("queued_inference")


def stored_files(store) -> list:
    return sorted(path for path in store.rglob("*") if path.is_file()) if store.exists() else []


# --- size cap -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_body_declared_larger_than_the_cap_is_refused_before_it_is_read(client, clinician, patient, settings):
    settings.MAX_REQUEST_BYTES = 10_000
    client.force_login(clinician)

    class Unreadable(io.RawIOBase):
        def read(self, *args):
            raise AssertionError("the body was read")

    response = client.generic("POST", reverse("diagnosis:study_upload", args=[patient.id]), data=b"",
                              content_type="multipart/form-data; boundary=x", CONTENT_LENGTH="50000000",
                              **{"wsgi.input": Unreadable()})
    assert response.status_code == 413
    assert Study.objects.count() == 0


@pytest.mark.django_db
def test_api_upload_over_the_cap_is_413(client, clinician, patient, settings):
    settings.MAX_REQUEST_BYTES = 50_000
    client.force_login(clinician)
    big = images.png_bytes(np.random.default_rng(0).random((400, 400)).astype(np.float32))
    assert len(big) > 50_000
    response = client.post("/api/studies/", {"patient": patient.id, "file": SimpleUploadedFile("c.png", big)})
    assert response.status_code == 413


# --- rate limit -----------------------------------------------------------------------------------


@pytest.fixture
def frozen_rate_window(monkeypatch):
    """Keep every upload of a test in one rate-limit window, with an empty counter.

    The limiter counts per fixed window of wall-clock time; a test whose uploads straddle a window
    boundary would otherwise see its count restart and fail by chance.
    """
    from types import SimpleNamespace

    from django.core.cache import cache

    cache.clear()
    monkeypatch.setattr("diagnosis.services.ingest.time", SimpleNamespace(time=lambda: 1_800_000_000.0))


@pytest.mark.django_db
def test_uploads_beyond_the_per_user_rate_are_refused_and_audited(clinician, second_clinician, patient, settings,
                                                                  frozen_rate_window):
    settings.UPLOAD_RATE_LIMIT = 3
    for number in range(2):
        study_create(patient=patient, uploaded_by=clinician, data=images.png_bytes(images.gradient(seed=number)))
    with pytest.raises(UploadRejected):  # a bad file counts as an attempt too
        study_create(patient=patient, uploaded_by=clinician, data=b"not an image" * 10)
    with pytest.raises(UploadRateLimited, match="Too many uploads"):
        study_create(patient=patient, uploaded_by=clinician, data=images.png_bytes(images.gradient(seed=9)))
    denied = AuditEvent.objects.get(action="study.upload", outcome="denied")
    assert denied.actor_username == "dr_ana" and denied.details["reason"] == "rate_limited"
    assert denied.patient_identifier == patient.mrn
    # The limit is per user.
    assert study_create(patient=patient, uploaded_by=second_clinician, data=images.png_bytes(images.gradient(seed=5))).pk


@pytest.mark.django_db
def test_rate_limited_api_upload_is_a_429_with_the_reason(client, clinician, patient, settings, frozen_rate_window):
    settings.UPLOAD_RATE_LIMIT = 1
    client.force_login(clinician)
    first = client.post("/api/studies/", {"patient": patient.id, "file": SimpleUploadedFile("a.png", images.png_bytes())})
    second = client.post("/api/studies/", {"patient": patient.id, "file": SimpleUploadedFile("b.png", images.png_bytes(images.gradient(seed=3)))})
    assert first.status_code == 201
    assert second.status_code == 429 and "Too many uploads" in second.content.decode()
    assert second["Retry-After"] == str(settings.UPLOAD_RATE_WINDOW_SECONDS)


# --- type by content --------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(("filename", "content_type"), [("chest.png", "image/png"), ("chest.dcm", "application/dicom"),
                                                         ("chest.exe", "application/octet-stream")])
def test_type_is_decided_by_content_not_name_or_header(client, clinician, patient, filename, content_type):
    client.force_login(clinician)
    response = client.post("/api/studies/", {"patient": patient.id,
                                             "file": SimpleUploadedFile(filename, images.jpeg_bytes(), content_type=content_type)})
    assert response.status_code == 201
    assert Study.objects.get().image.format == "JPEG"


@pytest.mark.django_db
def test_html_named_png_is_rejected(client, clinician, patient):
    client.force_login(clinician)
    response = client.post("/api/studies/", {"patient": patient.id, "file": SimpleUploadedFile(
        "x.png", b"<html><script>alert(1)</script></html>" * 20, content_type="image/png")})
    assert response.status_code == 400 and Study.objects.count() == 0


# --- DICOM limits -----------------------------------------------------------------------------------


def nested_sequence_dicom(depth: int) -> bytes:
    from pydicom import dcmread
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    dataset = dcmread(io.BytesIO(images.dicom_bytes()))
    inner = Dataset()
    inner.CodeValue = "X"
    for _level in range(depth):
        outer = Dataset()
        outer.ReferencedImageSequence = Sequence([inner])
        inner = outer
    dataset.ReferencedImageSequence = inner.ReferencedImageSequence
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_dicom_with_nesting_within_the_limit_decodes():
    assert decode_image(nested_sequence_dicom(DICOM_MAX_SEQUENCE_DEPTH - 1)).format == "DICOM"


@pytest.mark.parametrize("depth", [DICOM_MAX_SEQUENCE_DEPTH + 1, 200])
def test_dicom_with_sequences_nested_too_deep_is_refused(depth):
    with pytest.raises(ImageDecodeError, match="nested more than"):
        decode_image(nested_sequence_dicom(depth))


def patched(data: bytes, marker: bytes, offset_from_marker: int, replacement: bytes) -> bytes:
    position = data.index(marker) + offset_from_marker
    return data[:position] + replacement + data[position + len(replacement):]


def test_dicom_element_declaring_more_bytes_than_the_file_is_refused():
    data = images.dicom_bytes()
    # PixelData (7FE0,0010) OW: tag, VR, 2 reserved bytes, then the 32-bit length.
    bad = patched(data, b"\xe0\x7f\x10\x00OW", 8, (0xFFFFFFF0).to_bytes(4, "little"))
    with pytest.raises(ImageDecodeError, match="declares a length longer"):
        decode_image(bad)


def test_dicom_short_element_declaring_more_bytes_than_the_file_is_refused():
    data = images.dicom_bytes(patient_name="Doe^Jane")
    bad = patched(data, b"\x10\x00\x10\x00PN", 6, (0xFFFF).to_bytes(2, "little"))
    with pytest.raises(ImageDecodeError):
        decode_image(bad)


def test_dicom_with_millions_of_tiny_elements_is_refused(monkeypatch):
    from pydicom import dcmread

    import ml.serving.imaging

    monkeypatch.setattr(ml.serving.imaging, "DICOM_MAX_ELEMENTS", 200)
    dataset = dcmread(io.BytesIO(images.dicom_bytes()))
    for element in range(300):
        dataset.add_new((0x0011, 0x1000 + element), "LO", "x")
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    with pytest.raises(ImageDecodeError, match="more than 200 elements"):
        decode_image(buffer.getvalue())


def test_deflated_dicom_is_refused():
    from pydicom import dcmread
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    dataset = dcmread(io.BytesIO(images.dicom_bytes()))
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    with pytest.raises(ImageDecodeError, match="deflated"):
        decode_image(buffer.getvalue())


def test_compressed_dicom_still_decodes():
    from pydicom.uid import RLELossless

    assert decode_image(images.dicom_bytes(transfer_syntax=RLELossless)).format == "DICOM"


# --- re-encoding and encryption at rest ------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("make", [images.png_bytes, images.jpeg_bytes, images.dicom_bytes,
                                  lambda: images.png_bytes(bits=16)], ids=["png", "jpeg", "dicom", "png16"])
def test_stored_image_is_a_reencoded_encrypted_png_that_decodes_to_the_same_pixels(clinician, patient, image_store, make):
    upload = make()
    study = study_create(patient=patient, uploaded_by=clinician, data=upload)
    on_disk = [path.read_bytes() for path in stored_files(image_store)]
    assert len(on_disk) == 2  # the re-encoded image and the preview
    for blob in on_disk:
        assert blob.startswith(storage.MAGIC)
        assert upload not in blob and b"PNG" not in blob[:64] and b"DICM" not in blob and b"Doe^Jane" not in blob
    stored = storage.blob_get(study.image.sha256, kind=storage.ORIGINAL)
    assert stored.startswith(b"\x89PNG\r\n\x1a\n")
    np.testing.assert_allclose(decode_image(stored).pixels, decode_image(upload).pixels, atol=1.5e-5)


@pytest.mark.django_db
def test_polyglot_tail_does_not_survive_reencoding(clinician, patient):
    upload = images.png_bytes() + b"<script>alert(1)</script>"
    try:
        study = study_create(patient=patient, uploaded_by=clinician, data=upload)
    except UploadRejected:
        return  # refusing it is fine too
    assert b"<script>" not in storage.blob_get(study.image.sha256, kind=storage.ORIGINAL)


def test_blob_renamed_or_altered_or_under_another_key_does_not_decrypt(image_store, settings):
    digest = storage.blob_put(b"pixels", kind=storage.PREVIEW)
    path = image_store / digest[:2] / f"{digest}.{storage.PREVIEW}"
    other = "f" * 64
    (image_store / "ff").mkdir(parents=True)
    (image_store / "ff" / f"{other}.{storage.PREVIEW}").write_bytes(path.read_bytes())
    with pytest.raises(storage.StoredBlobUnreadable):
        storage.blob_get(other, kind=storage.PREVIEW)
    altered = bytearray(path.read_bytes())
    altered[-1] ^= 1
    path.write_bytes(bytes(altered))
    with pytest.raises(storage.StoredBlobUnreadable):
        storage.blob_get(digest, kind=storage.PREVIEW)
    good = storage.blob_put(b"other pixels", kind=storage.PREVIEW)
    settings.STORAGE_ENCRYPTION_KEY = "A" * 43  # a different 32-byte key
    with pytest.raises(storage.StoredBlobUnreadable):
        storage.blob_get(good, kind=storage.PREVIEW)


def test_configured_key_must_be_32_bytes(settings):
    settings.STORAGE_ENCRYPTION_KEY = "c2hvcnQ"
    with pytest.raises(ImproperlyConfigured, match="32 bytes"):
        storage.storage_key()


# --- serving ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_images_are_served_with_nosniff_and_no_caching_to_authorised_users_only(client, clinician, administrator, patient):
    study = study_create(patient=patient, uploaded_by=clinician, data=images.png_bytes())
    client.force_login(clinician)
    response = client.get(reverse("diagnosis:study_image", args=[study.id]))
    assert response.status_code == 200 and response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Type"] == "image/png" and "no-store" in response["Cache-Control"]
    assert response["Content-Disposition"].startswith("attachment;")
    Image.open(io.BytesIO(response.content)).verify()
    assert Client().get(reverse("diagnosis:study_image", args=[study.id])).status_code == 302
    client.force_login(administrator)
    assert client.get(reverse("diagnosis:study_image", args=[study.id])).status_code == 403


def test_dicom_with_an_unknown_value_representation_is_a_clean_rejection():
    """Found by the fuzz test: pydicom raised NotImplementedError when the metadata was read."""
    data = images.dicom_bytes()
    bad = data.replace(b"\x10\x00\x20\x00LO", b"\x10\x00\x20\x00MO")  # PatientID's VR "LO" -> "MO"
    assert bad != data
    with pytest.raises(ImageDecodeError, match="malformed"):
        decode_image(bad)

"""Uploading: every format is accepted, every bad input is rejected with nothing stored."""

import pytest

from audit.models import AuditEvent
from diagnosis.models import StoredImage, Study, StudyStatus
from diagnosis.services.ingest import UploadRejected, study_create
from tests import images


def stored_files(image_store):
    return sorted(path for path in image_store.rglob("*") if path.is_file()) if image_store.exists() else []


@pytest.mark.django_db
@pytest.mark.parametrize(
    "data_factory", [images.png_bytes, images.jpeg_bytes, images.dicom_bytes, images.rgb_png_bytes],
    ids=["png", "jpeg", "dicom", "rgb-png"],
)
def test_accepts_each_format_and_queues_after_commit(
    data_factory, clinician, patient, image_store, django_capture_on_commit_callbacks, queued_inference
):
    with django_capture_on_commit_callbacks(execute=True):
        study = study_create(patient=patient, uploaded_by=clinician, data=data_factory(), filename="../../etc/x.png")
    study.refresh_from_db()
    assert study.status == StudyStatus.QUEUED
    assert queued_inference == [{"study_id": study.id}]
    assert study.original_filename == "../../etc/x.png"  # kept as data only
    assert all(".." not in str(path.relative_to(image_store)) for path in stored_files(image_store))
    assert len(stored_files(image_store)) == 2  # original + preview, named by hash
    assert AuditEvent.objects.filter(action="study.upload", object_id=str(study.id)).count() == 1


@pytest.mark.django_db
def test_dicom_fills_accession_and_view_from_tags(clinician, patient, queued_inference):
    study = study_create(patient=patient, uploaded_by=clinician, data=images.dicom_bytes(accession_number="A-77"))
    assert study.accession_number == "A-77"
    assert study.view_position == "PA"
    assert str(study.acquisition_date) == "2026-01-01"


@pytest.mark.django_db
def test_same_bytes_are_stored_once(clinician, patient, image_store, queued_inference):
    data = images.png_bytes()
    study_create(patient=patient, uploaded_by=clinician, data=data)
    study_create(patient=patient, uploaded_by=clinician, data=data)
    assert StoredImage.objects.count() == 1
    assert Study.objects.count() == 2
    assert len(stored_files(image_store)) == 2


BAD_INPUTS = {
    "empty": lambda: b"",
    "text-named-png": lambda: b"This is a text file, not an image.\n" * 10,
    "truncated-png": lambda: images.truncated(images.png_bytes()),
    "truncated-jpeg": lambda: images.truncated(images.jpeg_bytes()),
    "png-30000x30000": lambda: images.png_declaring_size(30000, 30000),
    "dicom-without-pixels": lambda: images.dicom_bytes(with_pixels=False),
    "dicom-truncated": lambda: images.truncated(images.dicom_bytes(), keep=0.6),
    "dicom-undecodable-syntax": images.dicom_with_undecodable_syntax,
}


@pytest.mark.django_db
@pytest.mark.parametrize("name", BAD_INPUTS)
def test_rejects_bad_input_and_changes_nothing(name, clinician, patient, image_store, queued_inference):
    study_create(patient=patient, uploaded_by=clinician, data=images.png_bytes(images.gradient(seed=1)))
    files_before = stored_files(image_store)
    counts_before = (Study.objects.count(), StoredImage.objects.count(), AuditEvent.objects.count())

    with pytest.raises(UploadRejected) as raised:
        study_create(patient=patient, uploaded_by=clinician, data=BAD_INPUTS[name](), filename="x.png")

    assert raised.value.messages[0]
    assert stored_files(image_store) == files_before
    assert (Study.objects.count(), StoredImage.objects.count(), AuditEvent.objects.count()) == counts_before
    assert queued_inference == []


@pytest.mark.django_db
def test_rejects_duplicate_accession_number(clinician, patient, queued_inference):
    study_create(patient=patient, uploaded_by=clinician, data=images.png_bytes(), accession_number="ACC-1")
    with pytest.raises(UploadRejected, match="already exists") as raised:
        study_create(patient=patient, uploaded_by=clinician, data=images.jpeg_bytes(), accession_number="ACC-1")
    assert raised.value.code == "accession_number_taken"


@pytest.mark.django_db
def test_a_png_is_stored_as_uploaded_without_its_text_chunks_and_decodes_to_the_same_pixels(
    clinician, patient, monkeypatch, queued_inference
):
    import io

    import numpy as np
    from PIL import Image, PngImagePlugin

    from diagnosis.services import ingest, storage
    from ml.serving.imaging import decode_image

    def no_reencode(decoded):
        raise AssertionError("a PNG upload must not be re-encoded")

    monkeypatch.setattr(ingest, "reencoded_png", no_reencode)
    pixels = (np.random.default_rng(4).integers(0, 65535, (300, 280))).astype(np.uint16)
    text = PngImagePlugin.PngInfo()
    text.add_text("PatientName", "Maria Lopez")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", pnginfo=text)
    upload = buffer.getvalue()
    assert b"Maria Lopez" in upload

    study = study_create(patient=patient, uploaded_by=clinician, data=upload)
    stored = storage.blob_get(study.image.sha256, kind=storage.ORIGINAL)
    assert b"Maria Lopez" not in stored and b"tEXt" not in stored
    assert np.array_equal(decode_image(stored).pixels, decode_image(upload).pixels)


@pytest.mark.django_db
@pytest.mark.parametrize("data_factory", [
    lambda: images.png_bytes(images.gradient(96, 80)),  # 8-bit grey: the upload is its own preview, not encoded again
    lambda: images.png_bytes(images.gradient(96, 80), bits=16),
    lambda: images.png_bytes(images.gradient(1500, 1200)),  # over the preview's size: shrunk
    images.rgb_png_bytes,
], ids=["8-bit", "16-bit", "large-8-bit", "rgb"])
def test_preview_shows_the_uploaded_pixels_in_8_bit_grey(data_factory, clinician, patient, queued_inference):
    import io

    import numpy as np
    from PIL import Image

    from diagnosis.services import storage
    from ml.serving.imaging import decode_image

    from diagnosis.services.ingest import image_preview

    data = data_factory()
    study = study_create(patient=patient, uploaded_by=clinician, data=data)
    preview = Image.open(io.BytesIO(image_preview(image=study.image)))
    assert preview.mode == "L" and max(preview.size) <= 1024
    pixels = decode_image(data).pixels
    step = -(-max(pixels.shape) // 1024)
    expected = np.rint(pixels[::step, ::step] * 255)
    assert np.abs(np.asarray(preview, dtype=np.float64) - expected).max() <= 1


@pytest.mark.django_db
def test_a_large_grey_png_is_checked_not_decoded_and_its_preview_made_from_the_workers_decode(
    clinician, patient, queued_inference, monkeypatch
):
    from diagnosis.services import storage
    from diagnosis.services.ingest import image_preview
    from ml.serving import imaging

    film = images.gradient(1600, 1200)
    data = images.png_bytes(film, bits=16)
    monkeypatch.setattr("diagnosis.services.ingest.decode_image",
                        lambda *args, **kwargs: pytest.fail("the upload decoded a large grey PNG"))
    study = study_create(patient=patient, uploaded_by=clinician, data=data)
    assert (study.image.format, study.image.width, study.image.height) == ("PNG", 1600, 1200)
    assert storage.blob_get(study.image.sha256, kind=storage.ORIGINAL) == data  # stored as uploaded
    assert not storage.blob_stored(study.image.sha256, kind=storage.PREVIEW)
    monkeypatch.undo()

    pixels = imaging.decode_image(data).pixels  # what the worker decodes
    made = image_preview(image=study.image, pixels=pixels)
    assert storage.blob_get(study.image.sha256, kind=storage.PREVIEW) == made
    assert image_preview(image=study.image) == made  # stored once, then read


@pytest.mark.django_db
def test_a_damaged_large_png_is_refused_at_upload_and_nothing_is_stored(clinician, patient, image_store,
                                                                        queued_inference):
    data = images.png_bytes(images.gradient(1600, 1200), bits=16)
    with pytest.raises(UploadRejected) as refused:
        study_create(patient=patient, uploaded_by=clinician, data=data[: len(data) - 5000])
    assert refused.value.code == "damaged" and "damaged or truncated" in str(refused.value)
    assert not Study.objects.exists() and not stored_files(image_store)

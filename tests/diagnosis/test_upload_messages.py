"""Upload rejections (worded in English by ml.imaging and the ingest service) reach the reader in their language."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import translation

from diagnosis.upload_messages import PATTERNS, upload_message_translated
from tests import images

SAMPLE_DETAILS = {"width": "10", "height": "20", "limit": "67,108,864", "format": "PNG", "detail": "broken stream",
                  "megabytes": "64", "accession": "ACC-1", "count": "30", "seconds": "60", "ratio": "4"}


def test_every_known_message_is_recognised_in_its_english_wording():
    with translation.override("en"):
        for pattern, template in PATTERNS:
            english = str(template) % SAMPLE_DETAILS if "%(" in str(template) else str(template)
            assert pattern.match(english), english


def test_known_message_is_translated_with_its_details_and_unknown_message_is_kept():
    with translation.override("es"):
        assert upload_message_translated("The image is too small (10 x 20 pixels) to be a radiograph.") == (
            "La imagen es demasiado pequeña (10 x 20 píxeles) para ser una radiografía.")
        assert upload_message_translated("Something nobody listed.") == "Something nobody listed."


@pytest.mark.django_db
@pytest.mark.parametrize("data, spanish", [
    (b"just some text, not an image", "no es una imagen PNG, JPEG ni DICOM"),
    (images.truncated(images.png_bytes()), "está dañada o truncada"),
])
def test_rejected_upload_shows_the_reason_in_spanish(client, clinician, patient, data, spanish, queued_inference):
    client.force_login(clinician)
    client.post(reverse("set_language"), {"language": "es", "next": "/"})
    response = client.post(reverse("diagnosis:study_upload", args=[patient.id]),
                           {"file": SimpleUploadedFile("chest.png", data)})
    assert response.status_code == 400
    assert spanish in response.content.decode()

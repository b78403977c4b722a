"""Refusals reach the reader in their language: ml names each decode failure by a code, the portal words each code."""

import ast
import re
import string
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import translation

from diagnosis.rejections import IMAGE_REJECTIONS, image_rejection_message
from diagnosis.services.ingest import UploadRejected, image_prepare
from ml.serving.imaging import DECODE_ERRORS, ImageDecodeError
from tests import images

ML_ROOT = Path(__file__).resolve().parents[2] / "ml"


def codes_raised_in_ml() -> set[str]:
    """The first argument of every ImageDecodeError(...) written anywhere in ml/."""
    codes = set()
    for path in ML_ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ImageDecodeError":
                assert node.args and isinstance(node.args[0], ast.Constant), f"{path}:{node.lineno}: code is not a literal"
                codes.add(node.args[0].value)
    return codes


def test_every_code_raised_in_ml_has_an_english_and_a_translatable_message():
    raised = codes_raised_in_ml()
    assert len(raised) > 20
    assert raised <= set(DECODE_ERRORS)
    assert set(DECODE_ERRORS) == set(IMAGE_REJECTIONS)


@pytest.mark.parametrize("code", sorted(DECODE_ERRORS))
def test_the_portal_message_takes_the_same_details_as_the_english_one(code):
    english = {name for _, name, _, _ in string.Formatter().parse(DECODE_ERRORS[code]) if name}
    with translation.override("en"):
        portal = str(IMAGE_REJECTIONS[code])
    assert set(re.findall(r"%\((\w+)\)s", portal)) == english
    params = {name: f"<{name}>" for name in english}
    with translation.override("en"):
        assert image_rejection_message(ImageDecodeError(code, **params)) == str(ImageDecodeError(code, **params))
    with translation.override("es"):
        spanish = image_rejection_message(ImageDecodeError(code, **params))
    assert spanish != str(ImageDecodeError(code, **params)) and all(value in spanish for value in params.values())


def test_a_rejected_file_carries_its_code_and_a_message_in_the_active_language():
    with translation.override("es"), pytest.raises(UploadRejected) as raised:
        image_prepare(data=images.png_bytes(images.checkerboard(size=10)))
    assert raised.value.code == "too_small"
    assert raised.value.messages == ["La imagen es demasiado pequeña (10 x 10 píxeles) para ser una radiografía."]


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


@pytest.mark.django_db
def test_a_taken_mrn_is_refused_with_its_code_in_the_active_language(clinician, patient):
    from django.core.exceptions import ValidationError

    from diagnosis.services.patients import patient_create

    with translation.override("es"), pytest.raises(ValidationError) as raised:
        patient_create(actor=clinician, mrn=patient.mrn, name="Another")
    [error] = raised.value.error_dict["mrn"]
    assert error.code == "mrn_taken" and patient.mrn in error.messages[0] and "already exists" not in error.messages[0]

"""Fuzzing the ingest: thousands of mutated PNG, JPEG and DICOM files give a clean rejection or a valid study.

Never an unexpected exception (which would be a 500), never a crash, never a half-stored study.
"""

import io
import itertools
import os
import zlib

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from diagnosis.models import StoredImage, Study
from diagnosis.services import storage
from diagnosis.services.ingest import UploadRejected, study_create
from ml.serving.imaging import decode_image
from tests import images

# CI replays the same inputs every run (a failure there is reproducible); local runs explore new ones.
IN_CI = bool(os.environ.get("CI"))

EXAMPLES_PER_FORMAT = 1000
SIZE = (40, 36)  # small, so thousands of examples stay quick; above the 32-pixel minimum


def small(seed: int = 0) -> np.ndarray:
    return images.gradient(*SIZE, seed=seed)


def nested_dicom() -> bytes:
    from pydicom import dcmread
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    dataset = dcmread(io.BytesIO(images.dicom_bytes(small(3))))
    inner = Dataset()
    inner.CodeValue = "X"
    dataset.ReferencedImageSequence = Sequence([Dataset()])
    dataset.ReferencedImageSequence[0].ReferencedImageSequence = Sequence([inner])
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def dicom_seeds() -> list[bytes]:
    from pydicom.uid import RLELossless

    return [
        images.dicom_bytes(small()),
        images.dicom_bytes(small(1), photometric="MONOCHROME1", window=(2000.0, 3000.0)),
        images.dicom_bytes(small(2), transfer_syntax=RLELossless),
        nested_dicom(),
    ]


SEEDS = {
    "PNG": [images.png_bytes(small()), images.png_bytes(small(1), bits=16)],
    "JPEG": [images.jpeg_bytes(small()), images.jpeg_bytes(small(1), quality=50)],
    "DICOM": dicom_seeds(),
}
INTERESTING_WORDS = [b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x00", b"\xff\xff\xff\xf0", b"\x00\x01\x00\x00",
                     b"\xfe\xff\x00\xe0", b"\xfe\xff\xdd\xe0", b"SQ\x00\x00", b"UN\x00\x00"]


def with_valid_png_checksums(data: bytes) -> bytes:
    """Recompute every chunk's CRC, so a mutation reaches the PNG decoder instead of failing the checksum."""
    out = bytearray(data)
    position = 8
    while position + 12 <= len(out):
        length = int.from_bytes(out[position:position + 4], "big")
        if position + 12 + length > len(out):
            break
        checksum = zlib.crc32(bytes(out[position + 4:position + 8 + length])) & 0xFFFFFFFF
        out[position + 8 + length:position + 12 + length] = checksum.to_bytes(4, "big")
        position += 12 + length
    return bytes(out)


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _step in range(draw(st.integers(1, 6))):
        if not data:
            break
        # Headers live at the start: aim half of the mutations there.
        position = draw(st.one_of(st.integers(0, min(len(data) - 1, 400)), st.integers(0, len(data) - 1)))
        operation = draw(st.sampled_from(["flip", "byte", "word", "truncate", "insert", "delete", "duplicate"]))
        if operation == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == "byte":
            data[position] = draw(st.integers(0, 255))
        elif operation == "word":
            data[position:position + 4] = draw(st.sampled_from(INTERESTING_WORDS))
        elif operation == "truncate":
            del data[position:]
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=32))
        elif operation == "delete":
            del data[position:position + draw(st.integers(1, 64))]
        else:
            data[position:position] = data[position:position + draw(st.integers(1, 512))]
    if data.startswith(b"\x89PNG") and draw(st.booleans()):
        return with_valid_png_checksums(bytes(data))
    return bytes(data)


accession_numbers = (f"FUZZ-{number}" for number in itertools.count())


def ingest_once(*, data: bytes, patient, user, outcomes: dict) -> None:
    studies_before = Study.objects.count()
    try:
        study = study_create(patient=patient, uploaded_by=user, data=data, accession_number=next(accession_numbers))
    except UploadRejected as rejection:
        assert rejection.messages and all(message.strip() for message in rejection.messages)
        assert Study.objects.count() == studies_before
        outcomes["rejected"] += 1
        return
    # A valid study: its stored image decodes (the worker's path) to the size that was recorded.
    stored = decode_image(storage.blob_get(study.image.sha256, kind=storage.ORIGINAL))
    assert (stored.width, stored.height) == (study.image.width, study.image.height)
    assert np.isfinite(stored.pixels).all() and 0.0 <= stored.pixels.min() <= stored.pixels.max() <= 1.0
    outcomes["accepted"] += 1


@pytest.fixture
def fuzz_setup(db, clinician, patient, settings, queued_inference):
    settings.UPLOAD_RATE_LIMIT = 10**9
    return clinician, patient


# pydicom warns about every odd value a mutation makes; the test is about what the ingest does.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.slow
@pytest.mark.django_db
@pytest.mark.parametrize("image_format", list(SEEDS))
def test_mutated_files_are_cleanly_rejected_or_become_valid_studies(image_format, fuzz_setup, capsys):
    user, patient = fuzz_setup
    outcomes = {"accepted": 0, "rejected": 0}

    @hypothesis_settings(max_examples=EXAMPLES_PER_FORMAT, deadline=None, database=None, derandomize=IN_CI,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                HealthCheck.data_too_large])
    @given(data=mutated(SEEDS[image_format]))
    def run(data):
        ingest_once(data=data, patient=patient, user=user, outcomes=outcomes)

    run()
    total = outcomes["accepted"] + outcomes["rejected"]
    with capsys.disabled():
        print(f"\n{image_format}: {total} mutated files, {outcomes['accepted']} valid studies, {outcomes['rejected']} clean rejections")
    assert total >= EXAMPLES_PER_FORMAT * 0.9  # Hypothesis may stop early only if it runs out of distinct inputs
    assert outcomes["rejected"] > 0
    assert StoredImage.objects.count() <= outcomes["accepted"]


@pytest.mark.django_db
@hypothesis_settings(max_examples=150, deadline=None, database=None, derandomize=IN_CI,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.one_of(*(mutated(seeds) for seeds in SEEDS.values())))
def test_mutated_uploads_through_the_api_never_give_a_500(client, fuzz_setup, data):
    user, patient = fuzz_setup
    client.force_login(user)
    response = client.post("/api/studies/", {"patient": patient.id, "accession_number": next(accession_numbers),
                                             "file": SimpleUploadedFile("x.dcm", data)})
    assert response.status_code in (201, 400), response.content[:300]

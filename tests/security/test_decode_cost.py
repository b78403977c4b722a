"""One upload's decoding cost is bounded: a pixel limit that fits real films, reduced JPEG decoding,
re-encoding without float64 copies, and a cap on concurrent decodes that answers 503 with Retry-After.

The numbers (peak memory and time per upload) are measured in bench/bench_upload_cost.py, not here.
"""

import io
import threading
import tracemalloc

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from diagnosis.models import Study
from ml.serving.imaging import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image, decode_slot, decode_slots_configure, reencoded_png
from tests import images


pytestmark = pytest.mark.usefixtures("queued_inference")


def zeros_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((side, side), dtype=np.uint8)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def test_the_pixel_limit_fits_the_largest_real_chest_films_and_no_more():
    assert 4300 * 4900 <= DEFAULT_MAX_PIXELS < 8192 * 8192


def test_an_all_zero_8192_square_png_is_refused_from_its_header(settings):
    data = zeros_png(8192)
    assert len(data) < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(ImageDecodeError, match="too large"):
            decode_image(data, max_pixels=settings.MAX_IMAGE_PIXELS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


def test_an_oversized_jpeg_is_decoded_at_reduced_scale_instead():
    pixels = images.gradient(2000, 2000)
    decoded = decode_image(images.jpeg_bytes(pixels), max_pixels=1_500_000)
    assert decoded.pixels.shape == (1000, 1000)
    assert decoded.width == 2000 and decoded.height == 2000


def test_a_jpeg_too_large_even_at_an_eighth_is_refused():
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(images.jpeg_bytes(images.gradient(2000, 2000)), max_pixels=40_000)


@pytest.mark.parametrize("bits", [8, 16])
def test_reencoding_holds_at_most_a_few_copies_of_the_film(bits):
    """The old re-encode made float64 copies: about 27 bytes a pixel at its peak, against 11 now."""
    data = images.png_bytes(images.gradient(1500, 1500, seed=2), bits=bits)
    tracemalloc.start()
    try:
        reencoded_png(decode_image(data))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak / (1500 * 1500) < 14


@pytest.fixture
def one_decode_slot(settings):
    settings.DECODE_WAIT_SECONDS = 0.05
    decode_slots_configure(1)
    yield
    decode_slots_configure(settings.MAX_CONCURRENT_DECODES)


def held_slot():
    """Take the process's only decode slot from another thread until the returned event is set."""
    taken, release = threading.Event(), threading.Event()

    def hold():
        with decode_slot(wait_seconds=1):
            taken.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    taken.wait(5)
    return release, thread


@pytest.mark.django_db
def test_api_upload_while_every_decode_slot_is_taken_is_a_503_with_retry_after(client, clinician, patient, one_decode_slot):
    client.force_login(clinician)
    release, thread = held_slot()
    try:
        busy = client.post("/api/studies/", {"patient": patient.id, "file": SimpleUploadedFile("a.png", images.png_bytes())})
    finally:
        release.set()
        thread.join()
    assert busy.status_code == 503 and int(busy["Retry-After"]) > 0
    assert "try again" in busy.content.decode()
    assert not Study.objects.exists()
    after = client.post("/api/studies/", {"patient": patient.id, "file": SimpleUploadedFile("a.png", images.png_bytes())})
    assert after.status_code == 201


@pytest.mark.django_db
def test_page_upload_while_every_decode_slot_is_taken_is_a_503_with_retry_after(client, clinician, patient, one_decode_slot):
    client.force_login(clinician)
    release, thread = held_slot()
    try:
        busy = client.post(reverse("diagnosis:study_upload", args=[patient.id]),
                           {"file": SimpleUploadedFile("a.png", images.png_bytes()), "view_position": "PA"})
    finally:
        release.set()
        thread.join()
    assert busy.status_code == 503 and int(busy["Retry-After"]) > 0
    assert not Study.objects.exists()

import numpy as np
import pytest

from tests import images

from ml.serving.imaging import ImageDecodeError, decode_image, encode_png, sniff_format


def test_decodes_8_bit_png_to_unit_range():
    pixels = images.gradient()
    decoded = decode_image(images.png_bytes(pixels))
    assert decoded.format == "PNG"
    assert (decoded.width, decoded.height) == (96, 80)
    assert decoded.pixels.dtype == np.float32
    assert np.abs(decoded.pixels - pixels).max() <= 1 / 255 + 1e-6


def test_decodes_16_bit_png_with_full_dynamic_range():
    decoded = decode_image(images.png_bytes(images.gradient(), bits=16))
    assert decoded.pixels.min() == pytest.approx(0.0)
    assert decoded.pixels.max() == pytest.approx(1.0)


def test_decodes_rgb_png_as_grayscale():
    decoded = decode_image(images.rgb_png_bytes())
    assert decoded.pixels.ndim == 2


def test_decodes_jpeg_and_uses_draft_mode_for_large_images():
    pixels = np.tile(images.gradient(400, 400), (3, 3))
    decoded = decode_image(images.jpeg_bytes(pixels), target_size=256)
    assert decoded.format == "JPEG"
    assert (decoded.width, decoded.height) == (1200, 1200)
    assert max(decoded.pixels.shape) < 1200  # decoded at reduced scale
    assert max(decoded.pixels.shape) >= 256


def test_decodes_dicom_and_reads_patient_fields():
    decoded = decode_image(images.dicom_bytes())
    assert decoded.format == "DICOM"
    assert decoded.metadata["patient_id"] == "DCM-0001"
    assert decoded.metadata["accession_number"] == "ACC-DCM-1"
    assert decoded.metadata["view_position"] == "PA"
    assert decoded.pixels.max() == pytest.approx(1.0)


def test_inverts_monochrome1_dicom():
    pixels = images.gradient()
    normal = decode_image(images.dicom_bytes(pixels, photometric="MONOCHROME2")).pixels
    inverted = decode_image(images.dicom_bytes(pixels, photometric="MONOCHROME1")).pixels
    assert np.abs(normal - inverted).max() < 1e-3


def test_applies_dicom_window():
    pixels = images.gradient()
    windowed = decode_image(images.dicom_bytes(pixels, bits=12, window=(2048, 1024))).pixels
    # Values outside the window are clipped: a larger share of pixels sits at the extremes.
    assert (windowed <= 0.0).mean() + (windowed >= 1.0).mean() > 0.05


def test_decodes_rle_compressed_dicom():
    from pydicom.uid import RLELossless

    decoded = decode_image(images.dicom_bytes(transfer_syntax=RLELossless))
    assert decoded.pixels.shape == (80, 96)


def test_rle_dicom_has_the_compiled_decoder():
    # pydicom's own RLE decoder is pure numpy and about 10 times slower on a detector-sized film.
    from pydicom.pixels.decoders import RLELosslessDecoder

    assert "pylibjpeg" in RLELosslessDecoder.available_plugins


def test_rejects_rle_dicom_whose_runs_overflow_the_image():
    # The compiled RLE decoder panics on this (a BaseException from Rust), which must not escape as a crash.
    with pytest.raises(ImageDecodeError, match="damaged or incomplete"):
        decode_image(images.dicom_with_overflowing_rle())


def test_rejects_jpeg2000_dicom_whose_codestream_stops_early():
    data = images.dicom_with_truncated_codestream(images.gradient(640, 512))
    with pytest.raises(ImageDecodeError, match="damaged or incomplete"):
        decode_image(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, this is a text file pretending to be a PNG", "not a PNG, JPEG or DICOM"),
        (images.truncated(images.png_bytes()), "damaged or truncated"),
        (images.truncated(images.jpeg_bytes()), "damaged or truncated"),
        (images.png_declaring_size(30000, 30000), "too large"),
        (images.png_bytes(images.gradient(20, 20)), "too small"),
        (images.png_bytes(images.gradient(4000, 32)), "long side is more than 4 times its short side"),
    ],
    ids=["empty", "text", "truncated-png", "truncated-jpeg", "huge-png", "tiny-png", "strip-png"],
)
def test_rejects_bad_raster_files(data, message):
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(data)


def test_rejects_dicom_without_pixel_data():
    with pytest.raises(ImageDecodeError, match="no pixel data"):
        decode_image(images.dicom_bytes(with_pixels=False))


def test_rejects_truncated_dicom():
    with pytest.raises(ImageDecodeError):
        decode_image(images.truncated(images.dicom_bytes(), keep=0.6))


def test_rejects_dicom_with_undecodable_transfer_syntax():
    with pytest.raises(ImageDecodeError, match="cannot decode|damaged"):
        decode_image(images.dicom_with_undecodable_syntax())


def test_sniffs_by_content_not_name():
    assert sniff_format(images.jpeg_bytes()) == "JPEG"
    assert sniff_format(images.dicom_bytes()) == "DICOM"
    assert sniff_format(b"GIF89a....") is None


def test_encode_png_round_trips():
    pixels = images.gradient()
    assert np.abs(decode_image(encode_png(pixels)).pixels - pixels).max() <= 1 / 255 + 1e-6


def _rechunked(png: bytes, kind: bytes, body: bytes) -> bytes:
    """The PNG with the body of its first ``kind`` chunk replaced, CRC recomputed (a damage CRCs cannot see)."""
    import zlib

    position = 8
    while True:
        length = int.from_bytes(png[position:position + 4], "big")
        if png[position + 4:position + 8] == kind:
            chunk = len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
            return png[:position] + chunk + png[position + 12 + length:]
        position += 12 + length


def test_png_checked_reads_the_header_and_accepts_what_decode_image_accepts():
    from ml.serving.imaging import png_checked

    for bits in (8, 16):
        film = images.png_bytes(images.gradient(300, 200), bits=bits)
        header = png_checked(film)
        assert (header.width, header.height, header.bit_depth, header.grey) == (300, 200, bits, True)
        decode_image(film)  # the full decode agrees


@pytest.mark.parametrize("damage, code", [
    (lambda png: png[: len(png) // 2], "damaged"),  # truncated: no IEND
    (lambda png: png[:100] + bytes([png[100] ^ 0xFF]) + png[101:], "damaged"),  # one byte flipped: bad CRC
    (lambda png: _rechunked(png, b"IDAT", b"\x00" * 64), "damaged"),  # not a deflate stream, CRC made right
    (lambda png: _rechunked(png, b"IDAT", __import__("zlib").compress(b"\x07" * 5000)), "damaged"),  # bad filters
    (lambda png: _rechunked(png, b"IHDR", (70000).to_bytes(4, "big") + (70000).to_bytes(4, "big") + b"\x08\x00\x00\x00\x00"),
     "too_many_pixels"),
    (lambda png: _rechunked(png, b"IHDR", (20).to_bytes(4, "big") + (20).to_bytes(4, "big") + b"\x08\x00\x00\x00\x00"),
     "too_small"),
])
def test_png_checked_refuses_what_decode_image_refuses(damage, code):
    from ml.serving.imaging import png_checked

    broken = damage(images.png_bytes(images.gradient(300, 200), bits=16))
    with pytest.raises(ImageDecodeError) as refused:
        png_checked(broken)
    assert refused.value.code == code
    with pytest.raises(ImageDecodeError):
        decode_image(broken)

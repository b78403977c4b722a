"""Decode chest X-ray files (PNG, JPEG, DICOM) into one grayscale array.

Every image, whatever its container or bit depth, comes out as float32 pixels
in [0, 1] in display orientation (air dark, bone bright). Training, evaluation
and the portal's upload path all go through ``decode_image`` so that a model
sees the same numbers at every stage.

The type of a file is decided by its content (magic bytes), never by its name
or the client's Content-Type. Anything that cannot be decoded safely raises
``ImageDecodeError`` with a code from ``DECODE_ERRORS`` and its details; its
English message is fit to show to a clinician, and the portal words the code
in the reader's language.
"""

from __future__ import annotations

import io
import math
import threading
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

# A file that ends early must be rejected, never padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# The largest chest detectors are 43 x 43 cm at 100 um pixels, 4,300 x 4,300 (18.5 million pixels); a
# 43 x 49 cm cassette at that pitch is 4,300 x 4,900 (21 million). 25 million (5,000 x 5,000) leaves room
# for those and for scanners' margins, and caps what one accepted file can cost: an all-zero 8192 x 8192
# PNG (65 KB) is refused from its header instead of taking 1.5 GB and 12 s of a web process (issue 22).
DEFAULT_MAX_PIXELS = 25_000_000
MIN_SIDE = 32
# Chest films are close to square (detectors are 14 x 17 in); even a stitched long-leg film stays under 4:1.
# A longer strip shrinks to under a pixel across in preprocessing's working frame.
MAX_ASPECT_RATIO = 4

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
DICOM_MAGIC_OFFSET = 128
DICOM_MAGIC = b"DICM"

DICOM_FIELDS = {
    "patient_id": "PatientID",
    "patient_name": "PatientName",
    "birth_date": "PatientBirthDate",
    "sex": "PatientSex",
    "accession_number": "AccessionNumber",
    "view_position": "ViewPosition",
    "study_date": "StudyDate",
    "study_instance_uid": "StudyInstanceUID",
    "modality": "Modality",
}


# Why a file is refused, one stable code per kind of failure. The English here is for logs and the command
# line; the portal words each code in the reader's language (diagnosis/rejections.py), so a code keeps its
# meaning once released and a new one needs a message there (tests/diagnosis/test_rejections.py checks).
DECODE_ERRORS = {
    "empty": "The file is empty.",
    "unknown_format": "The file is not a PNG, JPEG or DICOM image (its content does not match any of these formats).",
    "no_pixels": "The image declares no pixels.",
    "too_many_pixels": "The image is too large ({width} x {height} pixels); the limit is {limit} pixels.",
    "too_small": "The image is too small ({width} x {height} pixels) to be a radiograph.",
    "too_elongated": "The image is {width} x {height} pixels: its long side is more than {ratio} times its short "
                     "side, which no radiograph is.",
    "decompression_bomb": "The image is too large to be decoded safely.",
    "unreadable": "The file looks like a {format} image but cannot be read.",
    "damaged": "The {format} image is damaged or truncated and cannot be decoded ({detail}).",
    "invalid_pixel_values": "The image contains invalid pixel values.",
    "dicom_too_complex": "The DICOM file is malformed or too complex to read safely ({detail}).",
    "dicom_refused_syntax": "The DICOM file uses {detail}, which is not accepted.",
    "dicom_too_large": "The DICOM image is too large to be decoded safely.",
    "dicom_malformed": "The DICOM file is malformed and cannot be read ({detail}).",
    "dicom_no_pixel_data": "The DICOM file contains no image (no pixel data).",
    "dicom_no_size": "The DICOM file does not declare its image size.",
    "dicom_invalid_layout": "The DICOM file declares an invalid pixel layout.",
    "dicom_too_many_frames": "The DICOM file holds too many frames to be decoded safely.",
    "dicom_unsupported_layout": "The DICOM file declares a pixel layout this system does not read.",
    "dicom_undecodable_syntax": "The DICOM image is compressed with a transfer syntax this system cannot decode "
                                "({detail}).",
    "dicom_damaged_pixels": "The DICOM pixel data is damaged or incomplete ({detail}).",
    "dicom_unexpected_shape": "The DICOM image has an unexpected shape.",
    "dicom_invalid_display": "The DICOM display settings (LUT or window) are invalid ({detail}).",
}


class ImageDecodeError(ValueError):
    """The file is not an image this system can read: ``code`` (a key of DECODE_ERRORS) says why, ``params``
    fill in the details (sizes, format, the decoder's own words); ``str()`` is the English message."""

    def __init__(self, code: str, **params):
        super().__init__(DECODE_ERRORS[code].format(**params))
        self.code = code
        self.params = params


class DecoderBusy(Exception):
    """Every decode slot of this process stayed taken for the whole wait: try again shortly."""

    def __init__(self, retry_after_seconds: int):
        super().__init__("The server is decoding other images right now. Please try again in a few seconds.")
        self.retry_after_seconds = retry_after_seconds


# Full-resolution decodes at once in one process. Each may take a few hundred MB for a few seconds, so a
# burst of uploads waits briefly and is then told to come back, instead of piling up in memory or holding
# every web thread. decode_slots_configure sets the count from the portal's settings.
_decode_slots = threading.BoundedSemaphore(1)


def decode_slots_configure(count: int) -> None:
    global _decode_slots
    _decode_slots = threading.BoundedSemaphore(max(1, count))


@contextmanager
def decode_slot(*, wait_seconds: float, retry_after_seconds: int = 5):
    """Hold one of this process's decode slots for the block, or raise DecoderBusy after wait_seconds."""
    slots = _decode_slots
    if not slots.acquire(timeout=wait_seconds):
        raise DecoderBusy(retry_after_seconds)
    try:
        yield
    finally:
        slots.release()


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # float32, (height, width), values in [0, 1]
    format: str  # "PNG" | "JPEG" | "DICOM"
    width: int  # size of the stored image, before any reduced-resolution decoding
    height: int
    metadata: dict[str, str] = field(default_factory=dict)


def sniff_format(data: bytes) -> str | None:
    """Return "PNG", "JPEG" or "DICOM" from the first bytes, or None."""
    if data.startswith(PNG_MAGIC):
        return "PNG"
    if data.startswith(JPEG_MAGIC):
        return "JPEG"
    if data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == DICOM_MAGIC:
        return "DICOM"
    return None


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    target_size: int | None = None,
) -> DecodedImage:
    """Decode PNG, JPEG or DICOM bytes.

    ``target_size`` lets a decoder skip detail the model will throw away
    (JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale, never below the target).
    """
    if not data:
        raise ImageDecodeError("empty")
    image_format = sniff_format(data)
    if image_format is None:
        raise ImageDecodeError("unknown_format")
    if image_format == "DICOM":
        return _decode_dicom(data, max_pixels=max_pixels)
    return _decode_raster(data, image_format=image_format, max_pixels=max_pixels, target_size=target_size)


def decode_path(path: str | Path, **kwargs) -> DecodedImage:
    return decode_image(Path(path).read_bytes(), **kwargs)


def _check_dimensions(width: int, height: int, *, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError("no_pixels")
    if width * height > max_pixels:
        raise ImageDecodeError("too_many_pixels", width=width, height=height, limit=f"{max_pixels:,}")
    if min(width, height) < MIN_SIDE:
        raise ImageDecodeError("too_small", width=width, height=height)
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageDecodeError("too_elongated", width=width, height=height, ratio=MAX_ASPECT_RATIO)


def _decode_raster(data: bytes, *, image_format: str, max_pixels: int, target_size: int | None) -> DecodedImage:
    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; make every bomb an error.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=[image_format])
            width, height = image.size
            if image_format == "JPEG" and width * height > max_pixels:
                _draft_within(image, max_pixels=max_pixels)
                _check_dimensions(*image.size, max_pixels=max_pixels)
            else:
                _check_dimensions(width, height, max_pixels=max_pixels)
            if image_format == "JPEG" and target_size:
                image.draft("L", (target_size, target_size))
            image.load()
        except ImageDecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageDecodeError("decompression_bomb") from None
        except UnidentifiedImageError:
            raise ImageDecodeError("unreadable", format=image_format) from None
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
            raise ImageDecodeError("damaged", format=image_format, detail=str(error)) from None
    return DecodedImage(
        pixels=_to_unit_gray(image),
        format=image_format,
        width=width,
        height=height,
    )


@dataclass(frozen=True)
class PngHeader:
    width: int
    height: int
    bit_depth: int
    colour_type: int  # 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGB + alpha

    @property
    def grey(self) -> bool:
        return self.colour_type in (0, 4)


# PNG's valid (colour type: bit depths) pairs, and bytes per pixel at 8 bits a sample (channels).
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# How much of the pixel stream png_checked inflates: the first rows, enough to tell a PNG from bytes dressed up
# as one, a small fraction of a detector-sized film.
PNG_CHECKED_BYTES = 256 * 1024


def png_header(data: bytes) -> PngHeader | None:
    """What a PNG's header (IHDR, its first chunk) says, unchecked; None if the bytes do not start so."""
    if not (data.startswith(PNG_MAGIC) and data[12:16] == b"IHDR" and len(data) >= 26):
        return None
    return PngHeader(int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"), data[24], data[25])


def png_checked(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> PngHeader:
    """Check a PNG without decoding all of it: what decode_image would refuse, at a small part of the cost.

    Its dimensions (as decode_image checks them), every chunk whole with a matching CRC (a truncated or
    damaged file fails here), IDAT present and IEND last, and a bounded decode: the first PNG_CHECKED_BYTES of
    the pixel stream inflate and their rows carry valid filter types. A file that passes and still fails the
    full decode had to be made to (valid CRCs over broken compressed data); the worker then fails its study.
    Raises ImageDecodeError with decode_image's codes.
    """
    if not data.startswith(PNG_MAGIC):
        raise ImageDecodeError("unknown_format")
    position, header, pixel_stream, ended = len(PNG_MAGIC), None, [], False
    while position + 12 <= len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        kind = data[position + 4:position + 8]
        end = position + 12 + length
        if end > len(data):
            raise ImageDecodeError("damaged", format="PNG", detail="truncated")
        if zlib.crc32(data[position + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            raise ImageDecodeError("damaged", format="PNG", detail=f"bad CRC in {kind.decode('latin-1')!r} chunk")
        if header is None:
            if kind != b"IHDR" or length != 13:
                raise ImageDecodeError("damaged", format="PNG", detail="no IHDR chunk first")
            body = data[position + 8:end - 4]
            header = PngHeader(int.from_bytes(body[0:4], "big"), int.from_bytes(body[4:8], "big"), body[8], body[9])
            if header.bit_depth not in _PNG_DEPTHS.get(header.colour_type, ()) or body[10] != 0 or body[11] != 0:
                raise ImageDecodeError("damaged", format="PNG", detail="invalid IHDR")
            _check_dimensions(header.width, header.height, max_pixels=max_pixels)
            interlaced = body[12] == 1
        elif kind == b"IDAT":
            if sum(map(len, pixel_stream)) < PNG_CHECKED_BYTES:  # enough for the bounded decode
                pixel_stream.append(data[position + 8:end - 4])
        elif kind == b"IEND":
            ended = True
            break
        position = end
    if header is None or not ended:
        raise ImageDecodeError("damaged", format="PNG", detail="truncated")
    if not pixel_stream:
        raise ImageDecodeError("damaged", format="PNG", detail="no image data")
    _png_first_rows_checked(b"".join(pixel_stream)[:PNG_CHECKED_BYTES], header, interlaced=interlaced)
    return header


def _png_first_rows_checked(compressed: bytes, header: PngHeader, *, interlaced: bool) -> None:
    row_bytes = 1 + math.ceil(header.width * _PNG_CHANNELS[header.colour_type] * header.bit_depth / 8)
    try:
        rows = zlib.decompressobj().decompress(compressed, 64 * row_bytes)
    except zlib.error as error:
        raise ImageDecodeError("damaged", format="PNG", detail=str(error)) from None
    if not rows:
        raise ImageDecodeError("damaged", format="PNG", detail="no image data")
    if not interlaced:  # an interlaced film's first rows are of a reduced pass: their length differs
        if any(rows[start] > 4 for start in range(0, len(rows) - row_bytes + 1, row_bytes)):
            raise ImageDecodeError("damaged", format="PNG", detail="invalid row filter")


def _draft_within(image: Image.Image, *, max_pixels: int) -> None:
    """Let the JPEG decoder skip detail (1/2, 1/4 or 1/8 scale) until the image fits the pixel limit.

    A scanner's oversized JPEG is then read at a size the portal keeps, never at full size first.
    """
    width, height = image.size
    for scale in (2, 4, 8):
        if math.ceil(width / scale) * math.ceil(height / scale) <= max_pixels:
            image.draft(image.mode if image.mode in ("L", "RGB") else "L", (math.ceil(width / scale), math.ceil(height / scale)))
            return


def _to_unit_gray(image: Image.Image) -> np.ndarray:
    # In place wherever possible: each extra float32 copy of a 25-million-pixel film is 100 MB.
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _min_max(np.asarray(image, dtype=np.float32))
    if image.mode != "L":
        image = image.convert("L")
    array = np.asarray(image, dtype=np.float32)
    array *= np.float32(1 / 255)
    return array


def _min_max(array: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; works in place on a float32 array the caller hands over."""
    array = array.astype(np.float32, copy=False)
    if not array.flags.writeable:
        array = array.copy()
    low = float(np.min(array))
    high = float(np.max(array))
    if not np.isfinite(low) or not np.isfinite(high):
        raise ImageDecodeError("invalid_pixel_values")
    if high <= low:
        return np.zeros_like(array, dtype=np.float32)
    array -= np.float32(low)
    array *= np.float32(1 / (high - low))
    return array


# A crafted DICOM file can nest sequences thousands deep (recursion), declare elements far longer
# than the file (huge reads), or pack millions of tiny elements (objects). Real chest X-rays need a
# few levels and a few thousand elements; the header is walked with these limits before pydicom parses it.
DICOM_MAX_SEQUENCE_DEPTH = 8
DICOM_MAX_ELEMENTS = 50_000
DICOM_MAX_FRAGMENTS = 10_000
_DICOM_UNDEFINED_LENGTH = 0xFFFFFFFF
_DICOM_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_DICOM_ITEM, _DICOM_ITEM_END, _DICOM_SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_DICOM_PIXEL_DATA = 0x7FE00010
_DICOM_IMPLICIT_LITTLE = "1.2.840.10008.1.2"
_DICOM_REFUSED_SYNTAXES = {
    "1.2.840.10008.1.2.1.99": "deflated DICOM (it could expand without bound)",
    "1.2.840.10008.1.2.2": "big-endian DICOM (retired)",
}


class _DicomStructure:
    """Walk a DICOM file's elements without building them, enforcing the limits above."""

    def __init__(self, data: bytes):
        self.data = data
        self.elements = 0

    def _fail(self, reason: str):
        raise ImageDecodeError("dicom_too_complex", detail=reason)

    def _u16(self, position: int) -> int:
        return int.from_bytes(self.data[position : position + 2], "little")

    def _u32(self, position: int) -> int:
        return int.from_bytes(self.data[position : position + 4], "little")

    def _tag(self, position: int, end: int) -> int:
        if position + 8 > end:
            self._fail("an element header runs past the end of its container")
        return (self._u16(position) << 16) | self._u16(position + 2)

    def check(self) -> None:
        position = DICOM_MAGIC_OFFSET + 4
        end = len(self.data)
        syntax = None
        # File meta information: group 0002, always explicit VR little endian.
        while position + 8 <= end and self._u16(position) == 0x0002:
            tag = self._tag(position, end)
            value_start, length = self._header(position, end, explicit=True)
            if length == _DICOM_UNDEFINED_LENGTH:
                self._fail("undefined length in the file meta information")
            if tag == 0x00020010:
                syntax = self.data[value_start : value_start + length].rstrip(b"\x00 ").decode("ascii", "replace")
            position = value_start + length
        if syntax is None:
            self._fail("no transfer syntax")
        if syntax in _DICOM_REFUSED_SYNTAXES:
            raise ImageDecodeError("dicom_refused_syntax", detail=_DICOM_REFUSED_SYNTAXES[syntax])
        explicit = syntax != _DICOM_IMPLICIT_LITTLE
        if explicit and position + 6 <= end and not self.data[position + 4 : position + 6].isalpha():
            # pydicom reads a dataset whose first element has no VR as implicit VR whatever the meta says; walk it the same way.
            explicit = False
        self._dataset(position, end, explicit=explicit, depth=0, until_item_end=False)

    def _header(self, position: int, end: int, *, explicit: bool) -> tuple[int, int]:
        """(where the value starts, its declared length), checking the length against what is left."""
        self.elements += 1
        if self.elements > DICOM_MAX_ELEMENTS:
            self._fail(f"more than {DICOM_MAX_ELEMENTS:,} elements")
        vr = self.data[position + 4 : position + 6]
        if explicit and vr in _DICOM_LONG_VRS:
            if position + 12 > end:
                self._fail("an element header runs past the end of its container")
            value_start, length = position + 12, self._u32(position + 8)
        elif explicit:
            value_start, length = position + 8, self._u16(position + 6)
        else:
            value_start, length = position + 8, self._u32(position + 4)
        if length != _DICOM_UNDEFINED_LENGTH and value_start + length > end:
            self._fail("an element declares a length longer than the data that holds it")
        return value_start, length

    def _is_sequence(self, tag: int, vr: bytes, length: int, explicit: bool) -> tuple[bool, bool]:
        """(is a sequence, its items are explicit VR)."""
        if explicit:
            if vr == b"SQ":
                return True, True
            if vr == b"UN" and length == _DICOM_UNDEFINED_LENGTH:
                return True, False  # an unknown sequence is encoded implicit VR
            return False, True
        if length == _DICOM_UNDEFINED_LENGTH:
            return True, False
        from pydicom.datadict import dictionary_VR

        try:
            return dictionary_VR(tag) == "SQ", False
        except KeyError:
            return False, False

    def _dataset(self, position: int, end: int, *, explicit: bool, depth: int, until_item_end: bool) -> int:
        while position < end:
            tag = self._tag(position, end)
            if tag == _DICOM_ITEM_END and until_item_end:
                return position + 8
            if tag >> 16 == 0xFFFE:
                self._fail("a delimiter where an element was expected")
            vr = self.data[position + 4 : position + 6]
            value_start, length = self._header(position, end, explicit=explicit)
            is_sequence, items_explicit = self._is_sequence(tag, vr, length, explicit)
            if tag == _DICOM_PIXEL_DATA and length == _DICOM_UNDEFINED_LENGTH:
                position = self._fragments(value_start, end)
            elif is_sequence:
                position = self._sequence(value_start, end, length, explicit=items_explicit, depth=depth + 1)
            elif length == _DICOM_UNDEFINED_LENGTH:
                self._fail("undefined length on an element that is not a sequence")
            else:
                position = value_start + length
        if until_item_end:
            self._fail("an item without its end")
        return position

    def _sequence(self, position: int, end: int, length: int, *, explicit: bool, depth: int) -> int:
        if depth > DICOM_MAX_SEQUENCE_DEPTH:
            self._fail(f"sequences nested more than {DICOM_MAX_SEQUENCE_DEPTH} deep")
        defined = length != _DICOM_UNDEFINED_LENGTH
        limit = position + length if defined else end
        while True:
            if defined and position >= limit:
                return limit
            tag = self._tag(position, limit)
            item_length = self._u32(position + 4)
            if tag == _DICOM_SEQUENCE_END and not defined:
                return position + 8
            if tag != _DICOM_ITEM:
                self._fail("a sequence holds something other than items")
            self.elements += 1
            if self.elements > DICOM_MAX_ELEMENTS:
                self._fail(f"more than {DICOM_MAX_ELEMENTS:,} elements")
            position += 8
            if item_length == _DICOM_UNDEFINED_LENGTH:
                position = self._dataset(position, limit, explicit=explicit, depth=depth, until_item_end=True)
            else:
                if position + item_length > limit:
                    self._fail("an item declares a length longer than its sequence")
                self._dataset(position, position + item_length, explicit=explicit, depth=depth, until_item_end=False)
                position += item_length

    def _fragments(self, position: int, end: int) -> int:
        for _fragment in range(DICOM_MAX_FRAGMENTS + 1):
            tag = self._tag(position, end)
            length = self._u32(position + 4)
            if tag == _DICOM_SEQUENCE_END:
                return position + 8
            if tag != _DICOM_ITEM or length == _DICOM_UNDEFINED_LENGTH or position + 8 + length > end:
                self._fail("damaged compressed pixel data")
            position += 8 + length
        self._fail(f"more than {DICOM_MAX_FRAGMENTS:,} pixel data fragments")


def _decode_dicom(data: bytes, *, max_pixels: int) -> DecodedImage:
    try:
        return _decode_dicom_checked(data, max_pixels=max_pixels)
    except ImageDecodeError:
        raise
    except MemoryError:
        raise ImageDecodeError("dicom_too_large") from None
    except Exception as error:
        # pydicom converts values lazily, so a crafted header can fail at any attribute access
        # (an unknown VR, a bad number); whatever fails, the file is malformed.
        raise ImageDecodeError("dicom_malformed", detail=type(error).__name__) from None
    except BaseException as error:
        # Compiled decoders written in Rust (pylibjpeg-rle) panic on some crafted pixel data, and pyo3 raises
        # the panic as a BaseException that pydicom's plugin loop does not catch. Anything else (Ctrl-C, exit)
        # goes on.
        if type(error).__name__ != "PanicException":
            raise
        raise ImageDecodeError("dicom_damaged_pixels", detail="the decoder stopped on it") from None


def _decode_dicom_checked(data: bytes, *, max_pixels: int) -> DecodedImage:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        _DicomStructure(data).check()
    except ImageDecodeError:
        raise
    except (IndexError, ValueError, RecursionError) as error:
        raise ImageDecodeError("dicom_malformed", detail=type(error).__name__) from None
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise ImageDecodeError("dicom_malformed", detail=str(error)) from None
    except Exception as error:  # pydicom raises a wide variety of errors on crafted headers
        raise ImageDecodeError("dicom_malformed", detail=type(error).__name__) from None

    if "PixelData" not in dataset:
        raise ImageDecodeError("dicom_no_pixel_data")
    try:
        rows = int(dataset.Rows)
        columns = int(dataset.Columns)
    except (AttributeError, TypeError, ValueError):
        raise ImageDecodeError("dicom_no_size") from None
    _check_dimensions(columns, rows, max_pixels=max_pixels)
    try:
        frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
        samples = int(getattr(dataset, "SamplesPerPixel", 1) or 1)
        bits_allocated = int(getattr(dataset, "BitsAllocated", 16) or 16)
    except (TypeError, ValueError):
        raise ImageDecodeError("dicom_invalid_layout") from None
    if frames < 1 or frames * rows * columns > max_pixels:
        raise ImageDecodeError("dicom_too_many_frames")
    if samples not in (1, 3) or bits_allocated not in (1, 8, 16, 32):
        raise ImageDecodeError("dicom_unsupported_layout")

    try:
        pixels = dataset.pixel_array
    except RuntimeError as error:
        if "raised by all available plugins" in str(error):
            # A decoder for this syntax is installed and every one failed on the data itself.
            raise ImageDecodeError("dicom_damaged_pixels", detail="it could not be decompressed") from None
        raise _undecodable_syntax(dataset) from error
    except NotImplementedError as error:
        raise _undecodable_syntax(dataset) from error
    except Exception as error:
        raise ImageDecodeError("dicom_damaged_pixels", detail=str(error)) from None

    if frames > 1:
        pixels = pixels[0]
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if pixels.ndim == 3:
        # Colour DICOM (rare for CXR): take luminance after any colour-space conversion pydicom did.
        pixels = pixels[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    elif pixels.ndim != 2:
        raise ImageDecodeError("dicom_unexpected_shape")
    else:
        try:
            pixels = apply_modality_lut(pixels, dataset)
            pixels = apply_voi_lut(pixels, dataset, index=0)
        except Exception as error:
            raise ImageDecodeError("dicom_invalid_display", detail=str(error)) from None

    unit = _min_max(np.asarray(pixels))
    if photometric == "MONOCHROME1":
        # MONOCHROME1 stores air bright; flip so every image shows air dark.
        np.subtract(np.float32(1.0), unit, out=unit)
    return DecodedImage(
        pixels=np.ascontiguousarray(unit, dtype=np.float32),
        format="DICOM",
        width=columns,
        height=rows,
        metadata=_dicom_metadata(dataset),
    )


def _undecodable_syntax(dataset) -> ImageDecodeError:
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    name = getattr(syntax, "name", str(syntax))
    return ImageDecodeError("dicom_undecodable_syntax", detail=name)


def _dicom_metadata(dataset) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for key, keyword in DICOM_FIELDS.items():
        value = dataset.get(keyword)
        if value is None:
            continue
        text = str(value).strip()
        if text:
            metadata[key] = text[:128]
    return metadata


# zlib level for the PNGs the portal stores. The upload waits for this encode: on 30 development films
# level 3 took 10.6 ms a film against 35.5 ms at Pillow's default 6, for 13% more bytes.
PNG_COMPRESS_LEVEL = 3


def reencoded_png(decoded: DecodedImage) -> bytes:
    """The decoded pixels as a fresh PNG: 8-bit when the source had 8-bit levels, else 16-bit.

    Decoding this PNG gives the pixels the model would have seen from the upload (exactly for
    8-bit sources; within 1/65535 for DICOM and 16-bit PNG, which decode_image scales min-max).
    """
    pixels = decoded.pixels
    if _has_8_bit_levels(pixels):
        return encode_png(pixels)
    buffer = io.BytesIO()
    Image.fromarray(_scaled_integers(pixels, 65535.0, np.uint16)).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _has_8_bit_levels(pixels: np.ndarray) -> bool:
    """Every pixel is (within float rounding) one of 256 levels; checked in row blocks to bound memory."""
    for start in range(0, pixels.shape[0], 512):
        block = np.clip(pixels[start:start + 512], 0.0, 1.0).astype(np.float32, copy=False)
        levels = np.rint(block * np.float32(255.0))
        levels *= np.float32(1 / 255)
        levels -= block
        if np.abs(levels).max(initial=0.0) > 1e-6:
            return False
    return True


def _scaled_integers(pixels: np.ndarray, top: float, dtype) -> np.ndarray:
    """round(clip(pixels, 0, 1) * top) as integers, with one float32 temporary."""
    scaled = np.multiply(pixels, np.float32(top), dtype=np.float32)
    np.clip(scaled, 0.0, top, out=scaled)
    np.rint(scaled, out=scaled)
    return scaled.astype(dtype)


def encode_png(pixels: np.ndarray) -> bytes:
    """Re-encode unit pixels as an 8-bit grayscale PNG (what the portal stores and shows)."""
    buffer = io.BytesIO()
    Image.fromarray(_scaled_integers(np.asarray(pixels, dtype=np.float32), 255.0, np.uint8)).save(
        buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()

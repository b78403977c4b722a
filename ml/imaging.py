"""Decode chest X-ray files (PNG, JPEG, DICOM) into one grayscale array.

Every image, whatever its container or bit depth, comes out as float32 pixels
in [0, 1] in display orientation (air dark, bone bright). Training, evaluation
and the portal's upload path all go through ``decode_image`` so that a model
sees the same numbers at every stage.

The type of a file is decided by its content (magic bytes), never by its name
or the client's Content-Type. Anything that cannot be decoded safely raises
``ImageDecodeError`` whose message is fit to show to a clinician.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

# A file that ends early must be rejected, never padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# 8192 x 8192 is larger than any detector; a header declaring more is an attack or a mistake.
DEFAULT_MAX_PIXELS = 8192 * 8192
MIN_SIDE = 32

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


class ImageDecodeError(ValueError):
    """The file is not an image this system can read; the message says why."""


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
        raise ImageDecodeError("The file is empty.")
    image_format = sniff_format(data)
    if image_format is None:
        raise ImageDecodeError(
            "The file is not a PNG, JPEG or DICOM image (its content does not match any of these formats)."
        )
    if image_format == "DICOM":
        return _decode_dicom(data, max_pixels=max_pixels)
    return _decode_raster(data, image_format=image_format, max_pixels=max_pixels, target_size=target_size)


def decode_path(path: str | Path, **kwargs) -> DecodedImage:
    return decode_image(Path(path).read_bytes(), **kwargs)


def _check_dimensions(width: int, height: int, *, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError("The image declares no pixels.")
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"The image is too large ({width} x {height} pixels); the limit is {max_pixels:,} pixels."
        )
    if min(width, height) < MIN_SIDE:
        raise ImageDecodeError(f"The image is too small ({width} x {height} pixels) to be a radiograph.")


def _decode_raster(data: bytes, *, image_format: str, max_pixels: int, target_size: int | None) -> DecodedImage:
    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; make every bomb an error.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=[image_format])
            width, height = image.size
            _check_dimensions(width, height, max_pixels=max_pixels)
            if image_format == "JPEG" and target_size:
                image.draft("L", (target_size, target_size))
            image.load()
        except ImageDecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageDecodeError("The image is too large to be decoded safely.") from None
        except UnidentifiedImageError:
            raise ImageDecodeError(f"The file looks like a {image_format} image but cannot be read.") from None
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
            raise ImageDecodeError(
                f"The {image_format} image is damaged or truncated and cannot be decoded ({error})."
            ) from None
    return DecodedImage(
        pixels=_to_unit_gray(image),
        format=image_format,
        width=width,
        height=height,
    )


def _to_unit_gray(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float32)
        return _min_max(array)
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.float32) / 255.0


def _min_max(array: np.ndarray) -> np.ndarray:
    array = array.astype(np.float32, copy=False)
    low = float(np.min(array))
    high = float(np.max(array))
    if not np.isfinite(low) or not np.isfinite(high):
        raise ImageDecodeError("The image contains invalid pixel values.")
    if high <= low:
        return np.zeros_like(array, dtype=np.float32)
    return (array - low) / (high - low)


def _decode_dicom(data: bytes, *, max_pixels: int) -> DecodedImage:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise ImageDecodeError(f"The DICOM file is malformed and cannot be read ({error}).") from None
    except Exception as error:  # pydicom raises a wide variety of errors on crafted headers
        raise ImageDecodeError(f"The DICOM file is malformed and cannot be read ({type(error).__name__}).") from None

    if "PixelData" not in dataset:
        raise ImageDecodeError("The DICOM file contains no image (no pixel data).")
    try:
        rows = int(dataset.Rows)
        columns = int(dataset.Columns)
    except (AttributeError, TypeError, ValueError):
        raise ImageDecodeError("The DICOM file does not declare its image size.") from None
    _check_dimensions(columns, rows, max_pixels=max_pixels)
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if frames * rows * columns > max_pixels:
        raise ImageDecodeError("The DICOM file holds too many frames to be decoded safely.")

    try:
        pixels = dataset.pixel_array
    except (NotImplementedError, RuntimeError) as error:
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise ImageDecodeError(
            f"The DICOM image is compressed with a transfer syntax this system cannot decode ({name})."
        ) from error
    except Exception as error:
        raise ImageDecodeError(f"The DICOM pixel data is damaged or incomplete ({error}).") from None

    if frames > 1:
        pixels = pixels[0]
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if pixels.ndim == 3:
        # Colour DICOM (rare for CXR): take luminance after any colour-space conversion pydicom did.
        pixels = pixels[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    elif pixels.ndim != 2:
        raise ImageDecodeError("The DICOM image has an unexpected shape.")
    else:
        try:
            pixels = apply_modality_lut(pixels, dataset)
            pixels = apply_voi_lut(pixels, dataset, index=0)
        except Exception as error:
            raise ImageDecodeError(f"The DICOM display settings (LUT or window) are invalid ({error}).") from None

    unit = _min_max(np.asarray(pixels))
    if photometric == "MONOCHROME1":
        # MONOCHROME1 stores air bright; flip so every image shows air dark.
        unit = 1.0 - unit
    return DecodedImage(
        pixels=np.ascontiguousarray(unit, dtype=np.float32),
        format="DICOM",
        width=columns,
        height=rows,
        metadata=_dicom_metadata(dataset),
    )


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


def encode_png(pixels: np.ndarray) -> bytes:
    """Re-encode unit pixels as an 8-bit grayscale PNG (what the portal stores and shows)."""
    array = np.clip(np.asarray(pixels, dtype=np.float32), 0.0, 1.0)
    buffer = io.BytesIO()
    Image.fromarray(np.round(array * 255.0).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()

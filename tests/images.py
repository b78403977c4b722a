"""Synthetic chest-X-ray-like files in every format the portal accepts, and broken ones."""

import io
import struct
import zlib

import numpy as np
from PIL import Image


def gradient(width: int = 96, height: int = 80, *, seed: int = 0) -> np.ndarray:
    """A smooth image with some noise, values in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = 0.5 + 0.3 * np.sin(x / 9.0) * np.cos(y / 11.0)
    return np.clip(base + rng.normal(0, 0.03, size=base.shape), 0, 1).astype(np.float32)


def checkerboard(size: int = 64, *, square: int = 4) -> np.ndarray:
    """Nothing like a radiograph (nor like the test models' training films): for the familiarity check."""
    return (np.indices((size, size)).sum(axis=0) // square % 2).astype(np.float32)


def png_bytes(pixels: np.ndarray | None = None, *, bits: int = 8) -> bytes:
    pixels = gradient() if pixels is None else pixels
    buffer = io.BytesIO()
    if bits == 16:
        Image.fromarray(np.round(pixels * 65535).astype(np.uint16)).save(buffer, format="PNG")
    else:
        Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def rgb_png_bytes() -> bytes:
    gray = np.round(gradient() * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.stack([gray, gray, gray], axis=-1)).save(buffer, format="PNG")
    return buffer.getvalue()


def colour_photo_png() -> bytes:
    """Two flat, strongly coloured bands: a picture that is plainly not a radiograph."""
    photo = np.zeros((80, 96, 3), np.uint8)
    photo[:40], photo[40:] = (40, 120, 230), (230, 200, 90)
    buffer = io.BytesIO()
    Image.fromarray(photo, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(pixels: np.ndarray | None = None, *, quality: int = 90) -> bytes:
    pixels = gradient() if pixels is None else pixels
    buffer = io.BytesIO()
    Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def truncated(data: bytes, *, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


def png_declaring_size(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header declares an absurd size (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def dicom_bytes(
    pixels: np.ndarray | None = None,
    *,
    bits: int = 12,
    photometric: str = "MONOCHROME2",
    with_pixels: bool = True,
    window: tuple[float, float] | None = None,
    transfer_syntax: str | None = None,
    patient_id: str = "DCM-0001",
    patient_name: str = "Doe^Jane",
    accession_number: str = "ACC-DCM-1",
    view_position: str = "PA",
) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    pixels = gradient() if pixels is None else pixels
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    dataset.PatientID = patient_id
    dataset.PatientName = patient_name
    dataset.PatientBirthDate = "19700102"
    dataset.PatientSex = "F"
    dataset.AccessionNumber = accession_number
    dataset.ViewPosition = view_position
    dataset.StudyDate = "20260101"
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    if with_pixels:
        maximum = 2**bits - 1
        stored = np.round(pixels * maximum).astype(np.uint16)
        if photometric == "MONOCHROME1":
            stored = (maximum - stored).astype(np.uint16)
        dataset.Rows, dataset.Columns = stored.shape
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = photometric
        dataset.BitsAllocated = 16
        dataset.BitsStored = bits
        dataset.HighBit = bits - 1
        dataset.PixelRepresentation = 0
        if window is not None:
            dataset.WindowCenter, dataset.WindowWidth = window
        dataset.PixelData = stored.tobytes()
        if transfer_syntax is not None:
            dataset.compress(transfer_syntax)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def dicom_with_truncated_codestream(pixels: np.ndarray, *, keep: float = 0.5) -> bytes:
    """A well-formed JPEG 2000 DICOM whose compressed frame stops part-way (a damaged transfer, not a bad header)."""
    from pydicom import dcmread
    from pydicom.encaps import encapsulate, generate_frames
    from pydicom.uid import JPEG2000Lossless

    dataset = dcmread(io.BytesIO(dicom_bytes(pixels, transfer_syntax=JPEG2000Lossless)))
    frame = next(generate_frames(dataset.PixelData, number_of_frames=1))
    dataset.PixelData = encapsulate([frame[: int(len(frame) * keep)]])
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def dicom_with_overflowing_rle() -> bytes:
    """An RLE DICOM whose first segment's runs decode to far more bytes than the image holds."""
    from pydicom import dcmread
    from pydicom.encaps import encapsulate, generate_frames
    from pydicom.uid import RLELossless

    dataset = dcmread(io.BytesIO(dicom_bytes(gradient(40, 36), transfer_syntax=RLELossless)))
    frame = next(generate_frames(dataset.PixelData, number_of_frames=1))
    header, second_segment = frame[:64], int.from_bytes(frame[8:12], "little")
    runs = bytes([0x81, 0x7F]) * 40  # each pair: repeat 0x7F 128 times, 5,120 bytes for a 1,440-byte segment
    header = header[:8] + (64 + len(runs)).to_bytes(4, "little") + header[12:]
    dataset.PixelData = encapsulate([header + runs + frame[second_segment:]])
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def dicom_with_undecodable_syntax() -> bytes:
    """Pixel data claimed to be JPEG-LS that is not a JPEG-LS stream: no installed decoder can read it."""
    from pydicom import dcmread
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    dataset = dcmread(io.BytesIO(dicom_bytes()))
    dataset.file_meta.TransferSyntaxUID = JPEGLSLossless
    dataset.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\x00" * 200])
    dataset["PixelData"].VR = "OB"
    dataset["PixelData"].is_undefined_length = True
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()

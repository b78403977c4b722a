"""Accept an uploaded chest X-ray: validate it fully before anything is stored."""

import datetime
import logging
import secrets
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from audit.models import Outcome
from audit.services import audit_record
from diagnosis.models import Patient, StoredImage, Study, StudySource, ViewPosition
from diagnosis.rejections import image_rejection_message
from ml.serving.colour import colour_share
from ml.serving.imaging import (
    DecodedImage,
    DecoderBusy,
    ImageDecodeError,
    decode_image,
    decode_slot,
    encode_png,
    png_checked,
    png_header,
    reencoded_png,
)

from diagnosis.validators import validate_accession_number

from . import storage
from .patients import _dicom_date

PREVIEW_MAX_SIDE = 1024
# A grey PNG with more pixels than this is checked (ml.serving.imaging.png_checked) but not decoded in the web
# process: the worker decodes it anyway, and makes its preview then (image_preview). For a 2000 x 2000 16-bit
# film that takes the decode and the preview's encode, most of the upload's cost, off the upload.
PNG_FULL_DECODE_MAX_PIXELS = PREVIEW_MAX_SIDE * PREVIEW_MAX_SIDE

logger = logging.getLogger(__name__)


class UploadRejected(ValidationError):
    """The file cannot become a study; nothing was stored."""


class UploadReplayed(Exception):
    """The client already uploaded under this Idempotency-Key: nothing new is stored, the first study stands."""

    def __init__(self, study: Study):
        super().__init__(f"Already uploaded as study {study.id}")
        self.study = study


class UploadRateLimited(UploadRejected):
    """The user sent more uploads than settings.UPLOAD_RATE_LIMIT within the window."""


class UploadBusy(UploadRejected):
    """Every decode slot of this process stayed taken: the client should retry after retry_after_seconds."""

    def __init__(self, message: str, *, retry_after_seconds: int):
        super().__init__(message, code="decoder_busy")
        self.retry_after_seconds = retry_after_seconds


def upload_rate_check(*, user, patient: Patient | None = None) -> None:
    """Refuse an upload beyond the per-user rate (a fixed window in the shared cache, Redis in production).

    Every attempt counts, rejected files included: decoding is the expensive part, and a flood of
    bad files is the attack. The refusal is audited; the attempts themselves are not (nothing changed).
    """
    window = settings.UPLOAD_RATE_WINDOW_SECONDS
    key = f"upload-rate:{user.pk}:{int(time.time() // window)}"
    try:
        cache.add(key, 0, timeout=window + 5)
        try:
            attempts = cache.incr(key)
        except ValueError:  # the key expired between add and incr
            cache.set(key, attempts := 1, timeout=window + 5)
    except Exception:  # noqa: BLE001 - whatever the cache backend raises when its server is down
        # The limit protects the decoder from floods; refusing clinical work because Redis is down would be worse.
        logger.warning("Upload rate limit not checked: the cache is unavailable", exc_info=True)
        return
    if attempts > settings.UPLOAD_RATE_LIMIT:
        audit_record(actor=user, action="study.upload", outcome=Outcome.DENIED, patient=patient,
                     details={"reason": "rate_limited", "limit": settings.UPLOAD_RATE_LIMIT, "window_seconds": window})
        raise UploadRateLimited(
            _("Too many uploads: at most %(count)s every %(seconds)s seconds. Please wait a moment and try again.")
            % {"count": settings.UPLOAD_RATE_LIMIT, "seconds": window},
            code="rate_limited",
        )


def _image_decode(*, data: bytes) -> DecodedImage:
    """Only inside a decode slot: image_prepare is the one way in."""
    if len(data) > settings.MAX_UPLOAD_BYTES:
        megabytes = settings.MAX_UPLOAD_BYTES // (1024 * 1024)
        raise UploadRejected(_("The file is larger than %(megabytes)s MB.") % {"megabytes": megabytes}, code="too_large")
    try:
        return decode_image(data, max_pixels=settings.MAX_IMAGE_PIXELS)
    except ImageDecodeError as error:
        raise UploadRejected(image_rejection_message(error), code=error.code) from None
    except MemoryError:
        raise UploadRejected(image_rejection_message(ImageDecodeError("decompression_bomb")),
                             code="decompression_bomb") from None


@dataclass(frozen=True)
class PreparedImage:
    """What the web process keeps of an upload: the image to store (a PNG upload as it came, less its text
    chunks; any other format re-encoded as PNG), its preview, and what the decoder read."""

    format: str
    width: int
    height: int
    metadata: dict[str, str]
    original_png: bytes
    preview_png: bytes | None  # None: made by the worker from its decode (a large grey PNG)
    # Share of the original's pixels that are clearly coloured (ml.serving.colour); None for a grey format.
    colour_share: float | None = None


def image_prepare(*, data: bytes) -> PreparedImage:
    """Validate and decode the upload and re-encode it for storage; the costly part of an upload.

    It runs in one of the process's few decode slots (settings.MAX_CONCURRENT_DECODES), so a burst of
    large films cannot take all memory; one that waits past settings.DECODE_WAIT_SECONDS is refused
    with UploadBusy (503 and Retry-After), and nothing is stored.
    """
    try:
        with decode_slot(wait_seconds=settings.DECODE_WAIT_SECONDS):
            if (large_png := _large_grey_png_checked(data)) is not None:
                return large_png
            decoded = _image_decode(data=data)
            original = _png_without_text(data) if decoded.format == "PNG" else None
            preview = original if original and _is_small_8_bit_grey_png(original) else _preview_png(decoded.pixels)
            return PreparedImage(decoded.format, decoded.width, decoded.height, decoded.metadata,
                                 original or reencoded_png(decoded), preview,
                                 colour_share(data) if decoded.format in ("PNG", "JPEG") else None)
    except DecoderBusy as busy:
        raise UploadBusy(_("The server is decoding other images right now. Please try again in a few seconds."),
                         retry_after_seconds=busy.retry_after_seconds) from None


def _large_grey_png_checked(data: bytes) -> PreparedImage | None:
    """A grey PNG over PNG_FULL_DECODE_MAX_PIXELS, checked without its full decode; None for any other file."""
    header = png_header(data)
    if header is None or not header.grey or header.width * header.height <= PNG_FULL_DECODE_MAX_PIXELS:
        return None
    if len(data) > settings.MAX_UPLOAD_BYTES:
        return None  # _image_decode refuses it with the size message
    try:
        header = png_checked(data, max_pixels=settings.MAX_IMAGE_PIXELS)
    except ImageDecodeError as error:
        raise UploadRejected(image_rejection_message(error), code=error.code) from None
    original = _png_without_text(data)
    if original is None:
        return None
    return PreparedImage("PNG", header.width, header.height, {}, original, preview_png=None, colour_share=None)


def image_preview(*, image: StoredImage, pixels=None) -> bytes:
    """The film's preview PNG (8-bit grey, at most PREVIEW_MAX_SIDE a side), made and stored if it is missing.

    A large grey PNG's preview is made by the worker from the pixels it decoded; a page that asks before then
    gets it made from the stored original, in one of this process's decode slots.
    """
    if storage.blob_stored(image.sha256, kind=storage.PREVIEW):
        return storage.blob_get(image.sha256, kind=storage.PREVIEW)
    if pixels is None:
        with decode_slot(wait_seconds=settings.DECODE_WAIT_SECONDS):
            pixels = decode_image(storage.blob_get(image.sha256, kind=storage.ORIGINAL),
                                  max_pixels=settings.MAX_IMAGE_PIXELS).pixels
    preview = _preview_png(pixels)
    storage.blob_put(preview, kind=storage.PREVIEW, digest=image.sha256)
    return preview


# Ancillary PNG chunks that can carry words (a name, a date, an MRN typed into the modality): never stored.
PNG_TEXT_CHUNKS = {b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_without_text(data: bytes) -> bytes | None:
    """The uploaded PNG as it came, less its text chunks; None if its chunks do not parse.

    A PNG that decoded is stored as uploaded instead of re-encoded: the worker decodes the very same pixels,
    and the web process skips the encode, 4-5 times the decode's cost for a 2000x2000 16-bit film
    (bench/results/throughput.txt). Chunks are copied whole, CRCs included; nothing is decompressed.
    """
    if not data.startswith(PNG_SIGNATURE):
        return None
    kept, position = [PNG_SIGNATURE], len(PNG_SIGNATURE)
    while position + 12 <= len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        kind = data[position + 4:position + 8]
        end = position + 12 + length
        if end > len(data):
            return None
        if kind not in PNG_TEXT_CHUNKS:
            kept.append(data[position:end])
        position = end
        if kind == b"IEND":
            return b"".join(kept)
    return None


def _is_small_8_bit_grey_png(png: bytes) -> bool:
    """An 8-bit greyscale PNG no larger than a preview: it is its own preview, no encode needed."""
    header = png_header(png)
    return (header is not None and (header.bit_depth, header.colour_type) == (8, 0)
            and max(header.width, header.height) <= PREVIEW_MAX_SIDE)


def _preview_png(pixels) -> bytes:
    longest = max(pixels.shape)
    if longest > PREVIEW_MAX_SIDE:
        step = int(-(-longest // PREVIEW_MAX_SIDE))
        pixels = pixels[::step, ::step]
    return encode_png(pixels)


def _new_accession_number() -> str:
    return f"CXR-{timezone.now():%Y%m%d}-{secrets.token_hex(4).upper()}"


def _view_position(value: str | None) -> str:
    value = (value or "").strip().upper()
    if value in ("PA", "AP"):
        return value
    if value in ("LL", "LAT", "LATERAL", "RL"):
        return ViewPosition.LATERAL
    return ViewPosition.UNKNOWN


def study_create(
    *,
    patient: Patient,
    uploaded_by,
    data: bytes,
    filename: str = "",
    accession_number: str = "",
    view_position: str = "",
    acquisition_date: datetime.date | None = None,
    idempotency_key: str = "",
    check_rate: bool = True,
) -> Study:
    """Validate, store and register a study, then queue it for inference after commit.

    A refused file changes nothing: no file, no row, no audit event. With an idempotency key this user already
    sent, raises UploadReplayed carrying the first study, so a client's retry never creates a second one.
    ``check_rate=False`` is for an administrator's bulk import of labelled films (diagnosis.services.site_films),
    which is not an upload flood.
    """
    if idempotency_key:
        _raise_if_replayed(uploaded_by=uploaded_by, idempotency_key=idempotency_key)
    if check_rate:
        upload_rate_check(user=uploaded_by, patient=patient)
    decoded = image_prepare(data=data)
    return study_store(
        decoded=decoded,
        data=data,
        patient=patient,
        accession_number=accession_number,
        view_position=view_position,
        acquisition_date=acquisition_date,
        filename=filename,
        uploaded_by=uploaded_by,
        idempotency_key=idempotency_key,
    )


def study_store(
    *,
    decoded: PreparedImage,
    data: bytes,
    patient: Patient,
    accession_number: str = "",
    view_position: str = "",
    acquisition_date: datetime.date | None = None,
    filename: str = "",
    uploaded_by=None,
    idempotency_key: str = "",
    source: str = StudySource.UPLOAD,
    sop_instance_uid: str = "",
    dicom_header: dict | None = None,
    audit_username: str = "",
    audit_details: dict | None = None,
) -> Study:
    """Store a validated image and register its study, audited; queue it for inference after commit.

    The one path every study takes, whatever brought it (an upload, the DICOM receiver, STOW-RS).
    """
    metadata = decoded.metadata
    accession_number = (accession_number or metadata.get("accession_number", "")).strip() or _new_accession_number()
    try:
        validate_accession_number(accession_number)
    except ValidationError as error:
        raise UploadRejected(f"The accession number {accession_number!r} is not accepted. {error.messages[0]}") from None
    if Study.objects.filter(accession_number=accession_number).exists():
        raise UploadRejected(_("A study with accession number %(accession)s already exists.")
                             % {"accession": accession_number}, code="accession_number_taken")

    # Files are content-addressed by the upload's digest, so storing before the transaction can only
    # leave an unreferenced copy behind, never overwrite or lose anything already stored.
    digest = storage.sha256_hex(data)
    storage.blob_put(decoded.original_png, kind=storage.ORIGINAL, digest=digest)
    if decoded.preview_png is not None:
        storage.blob_put(decoded.preview_png, kind=storage.PREVIEW, digest=digest)

    try:
        with transaction.atomic():
            image, _created = StoredImage.objects.get_or_create(
                sha256=digest,
                defaults={
                    "format": decoded.format,
                    "width": decoded.width,
                    "height": decoded.height,
                    "size_bytes": len(data),
                    "colour_share": decoded.colour_share,
                },
            )
            study = Study(
                patient=patient,
                accession_number=accession_number[:64],
                view_position=_view_position(view_position or metadata.get("view_position")),
                acquisition_date=acquisition_date or _dicom_date(metadata.get("study_date")),
                image=image,
                original_filename=(filename or "")[:255],
                uploaded_by=uploaded_by,
                idempotency_key=idempotency_key,
                source=source,
                sop_instance_uid=sop_instance_uid,
                dicom_header=dicom_header or {},
            )
            study.full_clean(exclude=["image", "patient", "uploaded_by"])
            study.save()
            audit_record(
                actor=uploaded_by,
                username=audit_username,
                action="study.upload" if source == StudySource.UPLOAD else "study.receive",
                target=study,
                study=study,
                details={
                    "format": decoded.format,
                    "width": decoded.width,
                    "height": decoded.height,
                    "sha256": digest,
                    "filename": study.original_filename,
                    **(audit_details or {}),
                },
            )
    except IntegrityError:
        if idempotency_key:  # a concurrent retry with the same key committed first
            _raise_if_replayed(uploaded_by=uploaded_by, idempotency_key=idempotency_key)
        raise
    from .inference import study_enqueue

    # After commit, and study_enqueue never raises for a broker outage: the stored study stands either way.
    transaction.on_commit(lambda: study_enqueue(study_id=study.id))
    return study


def _raise_if_replayed(*, uploaded_by, idempotency_key: str) -> None:
    earlier = Study.objects.filter(uploaded_by=uploaded_by, idempotency_key=idempotency_key).first()
    if earlier is not None:
        raise UploadReplayed(earlier)

"""Accept an uploaded chest X-ray: validate it fully before anything is stored."""

import datetime
import secrets
import time

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.models import Outcome
from audit.services import audit_record
from diagnosis.models import Patient, StoredImage, Study, ViewPosition
from ml.serving.imaging import DecodedImage, ImageDecodeError, decode_image, encode_png, reencoded_png

from . import storage
from .patients import _dicom_date

PREVIEW_MAX_SIDE = 1024


class UploadRejected(ValidationError):
    """The file cannot become a study; nothing was stored."""


class UploadRateLimited(UploadRejected):
    """The user sent more uploads than settings.UPLOAD_RATE_LIMIT within the window."""


def upload_rate_check(*, user, patient: Patient | None = None) -> None:
    """Refuse an upload beyond the per-user rate (a fixed window in the shared cache, Redis in production).

    Every attempt counts, rejected files included: decoding is the expensive part, and a flood of
    bad files is the attack. The refusal is audited; the attempts themselves are not (nothing changed).
    """
    window = settings.UPLOAD_RATE_WINDOW_SECONDS
    key = f"upload-rate:{user.pk}:{int(time.time() // window)}"
    cache.add(key, 0, timeout=window + 5)
    try:
        attempts = cache.incr(key)
    except ValueError:  # the key expired between add and incr
        cache.set(key, attempts := 1, timeout=window + 5)
    if attempts > settings.UPLOAD_RATE_LIMIT:
        audit_record(actor=user, action="study.upload", outcome=Outcome.DENIED, patient=patient,
                     details={"reason": "rate_limited", "limit": settings.UPLOAD_RATE_LIMIT, "window_seconds": window})
        raise UploadRateLimited(
            f"Too many uploads: at most {settings.UPLOAD_RATE_LIMIT} every {window} seconds. "
            "Please wait a moment and try again."
        )


def image_validate(*, data: bytes) -> DecodedImage:
    if len(data) > settings.MAX_UPLOAD_BYTES:
        raise UploadRejected(f"The file is larger than {settings.MAX_UPLOAD_BYTES // (1024 * 1024)} MB.")
    try:
        return decode_image(data, max_pixels=settings.MAX_IMAGE_PIXELS)
    except ImageDecodeError as error:
        raise UploadRejected(str(error)) from None
    except MemoryError:
        raise UploadRejected("The image is too large to be decoded safely.") from None


def _preview_png(decoded: DecodedImage) -> bytes:
    pixels = decoded.pixels
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
) -> Study:
    """Validate, store and register a study, then queue it for inference after commit.

    A refused file changes nothing: no file, no row, no audit event.
    """
    upload_rate_check(user=uploaded_by, patient=patient)
    decoded = image_validate(data=data)
    metadata = decoded.metadata
    accession_number = (accession_number or metadata.get("accession_number", "")).strip() or _new_accession_number()
    if Study.objects.filter(accession_number=accession_number).exists():
        raise UploadRejected(f"A study with accession number {accession_number} already exists.")

    # Files are content-addressed by the upload's digest, so storing before the transaction can only
    # leave an unreferenced copy behind, never overwrite or lose anything already stored.
    digest = storage.sha256_hex(data)
    storage.blob_put(reencoded_png(decoded), kind=storage.ORIGINAL, digest=digest)
    storage.blob_put(_preview_png(decoded), kind=storage.PREVIEW, digest=digest)

    with transaction.atomic():
        image, _ = StoredImage.objects.get_or_create(
            sha256=digest,
            defaults={
                "format": decoded.format,
                "width": decoded.width,
                "height": decoded.height,
                "size_bytes": len(data),
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
        )
        study.full_clean(exclude=["image", "patient", "uploaded_by"])
        study.save()
        audit_record(
            actor=uploaded_by,
            action="study.upload",
            target=study,
            study=study,
            details={
                "format": decoded.format,
                "width": decoded.width,
                "height": decoded.height,
                "sha256": digest,
                "filename": study.original_filename,
            },
        )
        from .inference import study_enqueue

        transaction.on_commit(lambda: study_enqueue(study_id=study.id))
    return study

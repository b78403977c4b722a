"""Why a file or a request was refused, in the reader's language: one message per code.

ml/ is plain Python and cannot use Django's translation framework, so ``ml.serving.imaging`` names each
failure with a stable code and its details (``ImageDecodeError.code``, ``.params``). This table words each
code once; the ingest service raises ``UploadRejected`` with the message in the language of the request and
the code beside it (Django's ``ValidationError.code``), as the patient and feedback services do for theirs.
"""

from django.utils.translation import gettext_lazy as _

from ml.serving.imaging import ImageDecodeError

IMAGE_REJECTIONS = {
    "empty": _("The file is empty."),
    "unknown_format": _("The file is not a PNG, JPEG or DICOM image (its content does not match any of these formats)."),
    "no_pixels": _("The image declares no pixels."),
    "too_many_pixels": _("The image is too large (%(width)s x %(height)s pixels); the limit is %(limit)s pixels."),
    "too_small": _("The image is too small (%(width)s x %(height)s pixels) to be a radiograph."),
    "too_elongated": _("The image is %(width)s x %(height)s pixels: its long side is more than %(ratio)s times its "
                       "short side, which no radiograph is."),
    "decompression_bomb": _("The image is too large to be decoded safely."),
    "unreadable": _("The file looks like a %(format)s image but cannot be read."),
    "damaged": _("The %(format)s image is damaged or truncated and cannot be decoded (%(detail)s)."),
    "invalid_pixel_values": _("The image contains invalid pixel values."),
    "dicom_too_complex": _("The DICOM file is malformed or too complex to read safely (%(detail)s)."),
    "dicom_refused_syntax": _("The DICOM file uses %(detail)s, which is not accepted."),
    "dicom_too_large": _("The DICOM image is too large to be decoded safely."),
    "dicom_malformed": _("The DICOM file is malformed and cannot be read (%(detail)s)."),
    "dicom_no_pixel_data": _("The DICOM file contains no image (no pixel data)."),
    "dicom_no_size": _("The DICOM file does not declare its image size."),
    "dicom_invalid_layout": _("The DICOM file declares an invalid pixel layout."),
    "dicom_too_many_frames": _("The DICOM file holds too many frames to be decoded safely."),
    "dicom_unsupported_layout": _("The DICOM file declares a pixel layout this system does not read."),
    "dicom_undecodable_syntax": _("The DICOM image is compressed with a transfer syntax this system cannot decode "
                                  "(%(detail)s)."),
    "dicom_damaged_pixels": _("The DICOM pixel data is damaged or incomplete (%(detail)s)."),
    "dicom_unexpected_shape": _("The DICOM image has an unexpected shape."),
    "dicom_invalid_display": _("The DICOM display settings (LUT or window) are invalid (%(detail)s)."),
}


def image_rejection_message(error: ImageDecodeError) -> str:
    """The decoder's refusal in the active language, with its details."""
    template = str(IMAGE_REJECTIONS[error.code])
    return template % error.params if error.params else template

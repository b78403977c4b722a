"""Upload rejection messages in the reader's language.

ml/ is plain Python and cannot use Django's translation framework, so ml.imaging (and the ingest
service that passes its messages on) word their reasons in English. Pages and the API translate them
here: each known English message is matched by a pattern and rebuilt from a translatable template with
the same details. A message nobody has listed yet is shown as it is.
"""

import re

from django.utils.translation import gettext_lazy as _

_ANY = r"(?P<detail>.+)"
_FORMAT = r"(?P<format>PNG|JPEG|DICOM)"

PATTERNS: list[tuple[re.Pattern, object]] = [
    (re.compile(pattern + r"\Z", re.DOTALL), template)
    for pattern, template in [
        (r"The file is empty\.", _("The file is empty.")),
        (r"The file is not a PNG, JPEG or DICOM image \(its content does not match any of these formats\)\.",
         _("The file is not a PNG, JPEG or DICOM image (its content does not match any of these formats).")),
        (r"The image declares no pixels\.", _("The image declares no pixels.")),
        (r"The image is too large \((?P<width>\d+) x (?P<height>\d+) pixels\); the limit is (?P<limit>[\d,]+) pixels\.",
         _("The image is too large (%(width)s x %(height)s pixels); the limit is %(limit)s pixels.")),
        (r"The image is too small \((?P<width>\d+) x (?P<height>\d+) pixels\) to be a radiograph\.",
         _("The image is too small (%(width)s x %(height)s pixels) to be a radiograph.")),
        (r"The image is (?P<width>\d+) x (?P<height>\d+) pixels: its long side is more than (?P<ratio>\d+) times its "
         r"short side, which no radiograph is\.",
         _("The image is %(width)s x %(height)s pixels: its long side is more than %(ratio)s times its short side, "
           "which no radiograph is.")),
        (r"The image is too large to be decoded safely\.", _("The image is too large to be decoded safely.")),
        (rf"The file looks like a {_FORMAT} image but cannot be read\.",
         _("The file looks like a %(format)s image but cannot be read.")),
        (rf"The {_FORMAT} image is damaged or truncated and cannot be decoded \({_ANY}\)\.",
         _("The %(format)s image is damaged or truncated and cannot be decoded (%(detail)s).")),
        (r"The image contains invalid pixel values\.", _("The image contains invalid pixel values.")),
        (rf"The DICOM file is malformed or too complex to read safely \({_ANY}\)\.",
         _("The DICOM file is malformed or too complex to read safely (%(detail)s).")),
        (rf"The DICOM file uses {_ANY}, which is not accepted\.", _("The DICOM file uses %(detail)s, which is not accepted.")),
        (r"The DICOM image is too large to be decoded safely\.", _("The DICOM image is too large to be decoded safely.")),
        (rf"The DICOM file is malformed and cannot be read \({_ANY}\)\.",
         _("The DICOM file is malformed and cannot be read (%(detail)s).")),
        (r"The DICOM file contains no image \(no pixel data\)\.", _("The DICOM file contains no image (no pixel data).")),
        (r"The DICOM file does not declare its image size\.", _("The DICOM file does not declare its image size.")),
        (r"The DICOM file declares an invalid pixel layout\.", _("The DICOM file declares an invalid pixel layout.")),
        (r"The DICOM file holds too many frames to be decoded safely\.",
         _("The DICOM file holds too many frames to be decoded safely.")),
        (r"The DICOM file declares a pixel layout this system does not read\.",
         _("The DICOM file declares a pixel layout this system does not read.")),
        (rf"The DICOM image is compressed with a transfer syntax this system cannot decode \({_ANY}\)\.",
         _("The DICOM image is compressed with a transfer syntax this system cannot decode (%(detail)s).")),
        (rf"The DICOM pixel data is damaged or incomplete \({_ANY}\)\.",
         _("The DICOM pixel data is damaged or incomplete (%(detail)s).")),
        (r"The DICOM image has an unexpected shape\.", _("The DICOM image has an unexpected shape.")),
        (rf"The DICOM display settings \(LUT or window\) are invalid \({_ANY}\)\.",
         _("The DICOM display settings (LUT or window) are invalid (%(detail)s).")),
        (r"The file is larger than (?P<megabytes>\d+) MB\.", _("The file is larger than %(megabytes)s MB.")),
        (r"A study with accession number (?P<accession>.+) already exists\.",
         _("A study with accession number %(accession)s already exists.")),
        (r"Too many uploads: at most (?P<count>\d+) every (?P<seconds>\d+) seconds\. Please wait a moment and try again\.",
         _("Too many uploads: at most %(count)s every %(seconds)s seconds. Please wait a moment and try again.")),
    ]
]


def upload_message_translated(message: str) -> str:
    for pattern, template in PATTERNS:
        match = pattern.match(message)
        if match:
            return str(template) % match.groupdict() if match.groupdict() else str(template)
    return message

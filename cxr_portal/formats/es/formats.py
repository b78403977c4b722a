# The same dates as in English (cxr_portal/formats/en); the decimal comma comes from Django's Spanish formats.
from cxr_portal.formats.en.formats import (  # noqa: F401
    DATE_FORMAT,
    DATE_INPUT_FORMATS,
    DATETIME_FORMAT,
    SHORT_DATE_FORMAT,
    SHORT_DATETIME_FORMAT,
)

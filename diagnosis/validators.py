"""Validation of identifiers that travel into headers, file names and other systems."""

import re

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

ACCESSION_NUMBER_MAX_LENGTH = 64
# Letters, digits and the punctuation real accession numbers use. No quotes, backslashes, semicolons or
# control characters: the number goes into download file names and Content-Disposition headers, and to
# the PACS and the EHR.
ACCESSION_NUMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._\-/:#+()]*")


def validate_accession_number(value: str) -> None:
    if len(value) > ACCESSION_NUMBER_MAX_LENGTH or not ACCESSION_NUMBER.fullmatch(value) or value != value.rstrip():
        raise ValidationError(
            _("An accession number has at most %(length)d characters: letters, digits, spaces and . _ - / : # + ( ), "
              "starting with a letter or digit."),
            code="invalid_accession_number", params={"length": ACCESSION_NUMBER_MAX_LENGTH},
        )


def filename_part(value: str) -> str:
    """A value made safe for a download's file name, also for rows stored before validation existed."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", value)[:ACCESSION_NUMBER_MAX_LENGTH] or "study"

"""Texts that must read the same everywhere a result is shown (pages, API, PDF, e-mail), in the reader's language."""

from django.utils.translation import gettext


def clinical_disclaimer() -> str:
    # Same words as settings.CLINICAL_DISCLAIMER, through the translation catalogue.
    return gettext(
        "This result supports, and does not replace, the judgement of a qualified clinician. "
        "CXR Portal is not a medical device and does not make a diagnosis."
    )

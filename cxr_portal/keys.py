"""Parsing of the secret keys, shared by the settings (which refuse a malformed key at start) and the code using them.

No Django imports: production settings call these before Django is set up.
"""

import base64
import binascii

STORAGE_KEY_BYTES = 32
MINIMUM_AUDIT_KEY_CHARACTERS = 32



def storage_key_parse(text: str) -> bytes:
    """CXR_STORAGE_KEY: 32 bytes, URL-safe base64. Raises ValueError naming what is wrong."""
    text = text.strip()
    if not text:
        raise ValueError("CXR_STORAGE_KEY is empty.")
    try:
        key = base64.b64decode(text.encode("ascii") + b"=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError("CXR_STORAGE_KEY is not URL-safe base64.") from None
    if len(key) != STORAGE_KEY_BYTES:
        raise ValueError(f"CXR_STORAGE_KEY must decode to {STORAGE_KEY_BYTES} bytes, not {len(key)}.")
    return key


def audit_key_check(text: str, *, secret_key: str, storage_key: str) -> None:
    """CXR_AUDIT_KEY: long enough, and not a copy of SECRET_KEY or the storage key."""
    if len(text) < MINIMUM_AUDIT_KEY_CHARACTERS:
        raise ValueError(f"CXR_AUDIT_KEY must be at least {MINIMUM_AUDIT_KEY_CHARACTERS} characters.")
    if text in (secret_key, storage_key):
        raise ValueError("CXR_AUDIT_KEY must differ from DJANGO_SECRET_KEY and CXR_STORAGE_KEY.")

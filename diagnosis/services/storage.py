"""Content-addressed file store for uploaded images and derived pictures.

Files are named by the SHA-256 of their bytes, never by anything a client sent,
so a path cannot be chosen by an uploader and the same bytes are stored once.
"""

import hashlib
import os
import tempfile
from pathlib import Path

from django.conf import settings


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _path_for(digest: str, kind: str) -> Path:
    if len(digest) != 64 or any(character not in "0123456789abcdef" for character in digest):
        raise ValueError("not a SHA-256 hex digest")
    return Path(settings.IMAGE_STORE_DIR) / digest[:2] / f"{digest}.{kind}"


def blob_put(data: bytes, *, kind: str, digest: str | None = None) -> str:
    """Store bytes (atomically, once) and return the digest they are filed under.

    Derived pictures (preview, heatmap) are filed under the digest of what they were made from.
    """
    digest = digest or sha256_hex(data)
    path = _path_for(digest, kind)
    if path.exists():
        return digest
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary file and rename, so a crash never leaves half a file under a valid name.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return digest


def blob_get(digest: str, *, kind: str) -> bytes:
    return _path_for(digest, kind).read_bytes()


def blob_exists(digest: str, *, kind: str) -> bool:
    return _path_for(digest, kind).exists()


# Kinds of blob. The original is kept as uploaded; the preview and heatmap are PNGs made from it.
ORIGINAL = "original"
PREVIEW = "preview.png"
HEATMAP = "heatmap.png"

"""Content-addressed, encrypted file store for uploaded images and derived pictures.

Files are named by the SHA-256 of what was uploaded, never by anything a client sent, so a path
cannot be chosen by an uploader and the same upload is stored once. Every file is encrypted with
AES-256-GCM under the key in ``settings.STORAGE_ENCRYPTION_KEY`` (``CXR_STORAGE_KEY``; local and
test settings derive one from SECRET_KEY, production requires it). The file's name and kind are
authenticated with it, so a file copied under another name, or altered, fails to decrypt.

What is stored is never the uploaded file itself: ingest stores a PNG re-encoded from the decoded
pixels (kind ORIGINAL), so nothing a client crafted (DICOM headers, PNG chunks, JPEG markers,
polyglot tails) reaches the disk, a viewer or the worker.
"""

import base64
import hashlib
import os
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings

MAGIC = b"CXRE1"  # format version of the encrypted file: magic, 12-byte nonce, ciphertext with tag
NONCE_BYTES = 12


class StoredBlobUnreadable(Exception):
    """A stored file does not decrypt: wrong key, altered, or put under another name."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _path_for(digest: str, kind: str) -> Path:
    if len(digest) != 64 or any(character not in "0123456789abcdef" for character in digest):
        raise ValueError("not a SHA-256 hex digest")
    return Path(settings.IMAGE_STORE_DIR) / digest[:2] / f"{digest}.{kind}"


def storage_key() -> bytes:
    configured = getattr(settings, "STORAGE_ENCRYPTION_KEY", "")
    if configured:
        key = base64.urlsafe_b64decode(configured.encode("ascii") + b"=" * (-len(configured) % 4))
        if len(key) != 32:
            raise ValueError("CXR_STORAGE_KEY must be 32 bytes, URL-safe base64 encoded.")
        return key
    # Zero-configuration development and tests only: production settings refuse to start without a key.
    return hashlib.sha256(b"cxr-portal image store:" + settings.SECRET_KEY.encode("utf-8")).digest()


def _associated_data(digest: str, kind: str) -> bytes:
    return f"{digest}.{kind}".encode("ascii")


def encrypt(data: bytes, *, digest: str, kind: str) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return MAGIC + nonce + AESGCM(storage_key()).encrypt(nonce, data, _associated_data(digest, kind))


def decrypt(blob: bytes, *, digest: str, kind: str) -> bytes:
    if not blob.startswith(MAGIC):
        raise StoredBlobUnreadable(f"{digest}.{kind} is not an encrypted CXR Portal file.")
    nonce = blob[len(MAGIC): len(MAGIC) + NONCE_BYTES]
    try:
        return AESGCM(storage_key()).decrypt(nonce, blob[len(MAGIC) + NONCE_BYTES:], _associated_data(digest, kind))
    except InvalidTag:
        raise StoredBlobUnreadable(f"{digest}.{kind} does not decrypt (wrong key, altered, or renamed).") from None


def blob_put(data: bytes, *, kind: str, digest: str | None = None) -> str:
    """Encrypt and store bytes (atomically, once) and return the digest they are filed under.

    Derived pictures (preview, heatmap) and the re-encoded image are filed under the digest of the upload.
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
            stream.write(encrypt(data, digest=digest, kind=kind))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return digest


def blob_get(digest: str, *, kind: str) -> bytes:
    return decrypt(_path_for(digest, kind).read_bytes(), digest=digest, kind=kind)


# Kinds of blob. ORIGINAL is the upload re-encoded as PNG (16-bit for DICOM, keeping its depth);
# the preview and heatmap are 8-bit PNGs made from it.
ORIGINAL = "original"
PREVIEW = "preview.png"
HEATMAP = "heatmap.png"

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

import hashlib
import logging
import os
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from cxr_portal.keys import storage_key_parse

logger = logging.getLogger(__name__)

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
    configured = settings.STORAGE_ENCRYPTION_KEY
    if configured or settings.STORAGE_KEY_REQUIRED:
        try:
            return storage_key_parse(configured)
        except ValueError as error:
            raise ImproperlyConfigured(str(error)) from None
    # Zero-configuration development and tests only: production settings refuse to start without a key.
    return hashlib.sha256(b"cxr-portal image store:" + settings.SECRET_KEY.encode("utf-8")).digest()


def _previous_keys() -> list[bytes]:
    return [storage_key_parse(text) for text in settings.STORAGE_PREVIOUS_KEYS]


def _associated_data(digest: str, kind: str) -> bytes:
    return f"{digest}.{kind}".encode("ascii")


def _encrypt(data: bytes, associated_data: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return MAGIC + nonce + AESGCM(storage_key()).encrypt(nonce, data, associated_data)


def _decrypt(blob: bytes, associated_data: bytes, name: str) -> tuple[bytes, bool]:
    """The plaintext, and whether it took a previous key (the file waits for `storage_rotate_key`)."""
    if not blob.startswith(MAGIC):
        raise StoredBlobUnreadable(f"{name} is not an encrypted CXR Portal file.")
    nonce, ciphertext = blob[len(MAGIC): len(MAGIC) + NONCE_BYTES], blob[len(MAGIC) + NONCE_BYTES:]
    for number, key in enumerate([storage_key(), *_previous_keys()]):
        try:
            return AESGCM(key).decrypt(nonce, ciphertext, associated_data), number > 0
        except InvalidTag:
            continue
    raise StoredBlobUnreadable(f"{name} does not decrypt (wrong key, altered, or renamed).")


def encrypt(data: bytes, *, digest: str, kind: str) -> bytes:
    return _encrypt(data, _associated_data(digest, kind))


def decrypt(blob: bytes, *, digest: str, kind: str) -> bytes:
    return _decrypt(blob, _associated_data(digest, kind), f"{digest}.{kind}")[0]


def _readable(path: Path, *, digest: str, kind: str) -> bool:
    try:
        decrypt(path.read_bytes(), digest=digest, kind=kind)
    except (StoredBlobUnreadable, OSError):
        return False
    return True


def blob_put(data: bytes, *, kind: str, digest: str | None = None) -> str:
    """Encrypt and store bytes (atomically, once) and return the digest they are filed under.

    Derived pictures (preview, heatmap) and the re-encoded image are filed under the digest of the upload.
    """
    digest = digest or sha256_hex(data)
    path = _path_for(digest, kind)
    if path.exists():
        if _readable(path, digest=digest, kind=kind):
            return digest
        # Stored under another key or damaged: the same content written now replaces it, so a study
        # uploaded again under the right key is not tied to the unreadable file for good.
        logger.warning("Replacing unreadable stored file %s.%s", digest, kind)
    # Write to a temporary file and rename, so a crash never leaves half a file under a valid name.
    _write_atomically(path, encrypt(data, digest=digest, kind=kind))
    return digest


def _write_atomically(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def blob_stored(digest: str, *, kind: str) -> bool:
    return _path_for(digest, kind).exists()


def blob_get(digest: str, *, kind: str) -> bytes:
    return decrypt(_path_for(digest, kind).read_bytes(), digest=digest, kind=kind)


# Kinds of blob. ORIGINAL is the upload re-encoded as PNG (16-bit for DICOM, keeping its depth);
# the preview and heatmap are 8-bit PNGs made from it.
ORIGINAL = "original"
PREVIEW = "preview.png"
HEATMAP = "heatmap.png"  # before heatmap layers: the model input (a lung crop) with its heatmap blended in
# The heatmap alone (RGBA, transparent where cold), for the crop box of the film the model saw
# (Prediction.heatmap_box): pages and the PDF lay it over the film.
HEATMAP_LAYER = "heatmap-layer.png"


# The key check: a small file in the store, encrypted under the key, that every web process and worker
# decrypts at start (and `check --deploy` too). A wrong key stops the portal instead of storing new
# films under it that the other processes cannot read.
KEY_CHECK_NAME = "key-check"
KEY_CHECK_PLAINTEXT = b"CXR Portal image store key check"


class StorageKeyMismatch(ImproperlyConfigured):
    pass


def _key_check_path() -> Path:
    return Path(settings.IMAGE_STORE_DIR) / KEY_CHECK_NAME


def _stored_files():
    store = Path(settings.IMAGE_STORE_DIR)
    for path in sorted(store.glob("[0-9a-f][0-9a-f]/*.*")):
        digest, _, kind = path.name.partition(".")
        if len(digest) == 64 and not path.name.startswith("."):
            yield path, digest, kind


def storage_key_verify(*, create: bool = True) -> str:
    """Check the configured key against the store; write the key check on first use. Returns what it did.

    Raises StorageKeyMismatch (an ImproperlyConfigured) when the key does not decrypt the key check, or,
    for a store from before key checks, the first stored file.
    """
    storage_key()  # a malformed or missing key raises here
    path = _key_check_path()
    if path.exists():
        try:
            _decrypt(path.read_bytes(), KEY_CHECK_NAME.encode("ascii"), KEY_CHECK_NAME)
        except StoredBlobUnreadable:
            raise StorageKeyMismatch(f"CXR_STORAGE_KEY does not decrypt the image store's key check ({path}): "
                                     "this is not the key the stored images were encrypted with.") from None
        return "verified"
    first = next(_stored_files(), None)
    if first is not None and not _readable(first[0], digest=first[1], kind=first[2]):
        raise StorageKeyMismatch(f"CXR_STORAGE_KEY does not decrypt the stored file {first[0]}: "
                                 "this is not the key the stored images were encrypted with.")
    if not create:
        return "not yet written"
    _write_atomically(path, _encrypt(KEY_CHECK_PLAINTEXT, KEY_CHECK_NAME.encode("ascii")))
    return "created"


def storage_key_verify_at_start() -> None:
    """Web processes and workers call this as they start; production refuses to start on a bad key."""
    if settings.STORAGE_KEY_REQUIRED:
        storage_key_verify()


def storage_rotate_key() -> dict[str, int]:
    """Re-encrypt every stored file under CXR_STORAGE_KEY that still needs one of CXR_STORAGE_PREVIOUS_KEYS."""
    counts = {"re-encrypted": 0, "current": 0, "unreadable": 0}
    for path, digest, kind in _stored_files():
        try:
            data, needed_previous = _decrypt(path.read_bytes(), _associated_data(digest, kind), path.name)
        except StoredBlobUnreadable:
            logger.error("Cannot re-encrypt %s: no configured key decrypts it", path)
            counts["unreadable"] += 1
            continue
        if needed_previous:
            _write_atomically(path, encrypt(data, digest=digest, kind=kind))
            counts["re-encrypted"] += 1
        else:
            counts["current"] += 1
    check = _key_check_path()
    if check.exists():
        _decrypt(check.read_bytes(), KEY_CHECK_NAME.encode("ascii"), KEY_CHECK_NAME)
    _write_atomically(check, _encrypt(KEY_CHECK_PLAINTEXT, KEY_CHECK_NAME.encode("ascii")))
    return counts

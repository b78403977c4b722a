"""Production refuses a missing, malformed or wrong storage key; stored files that do not decrypt are never reused."""

import base64
import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

from diagnosis.services import storage
from tests.security.test_deployment import PROJECT_ROOT, manage, production_environment


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def start_web_process(environment: dict) -> subprocess.CompletedProcess:
    """Import the WSGI application as gunicorn does."""
    return subprocess.run([sys.executable, "-c", "import cxr_portal.wsgi"], cwd=PROJECT_ROOT, env=environment,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("key, message", [
    ("", "CXR_STORAGE_KEY is empty"),
    ("not base64 at all!", "not URL-safe base64"),
    ("c2hvcnQ", "must decode to 32 bytes"),
])
def test_production_refuses_an_empty_or_malformed_storage_key(key, message):
    result = manage("check", environment=production_environment(CXR_STORAGE_KEY=key))
    assert result.returncode != 0 and message in result.stderr


@pytest.mark.slow
def test_production_refuses_an_audit_key_that_is_the_secret_key():
    environment = production_environment()
    environment["CXR_AUDIT_KEY"] = environment["DJANGO_SECRET_KEY"]
    result = manage("check", environment=environment)
    assert result.returncode != 0 and "CXR_AUDIT_KEY must differ" in result.stderr


@pytest.mark.slow
def test_production_refuses_to_start_with_a_key_that_does_not_decrypt_the_store(tmp_path):
    right, wrong = new_key(), new_key()
    environment = production_environment(CXR_STORAGE_KEY=right, CXR_IMAGE_STORE_DIR=str(tmp_path))
    assert start_web_process(environment).returncode == 0
    assert (tmp_path / "key-check").exists()

    environment["CXR_STORAGE_KEY"] = wrong
    started = start_web_process(environment)
    assert started.returncode != 0 and "does not decrypt the image store's key check" in started.stderr
    checked = manage("check", "--deploy", environment=environment)
    assert checked.returncode != 0 and "cxr.E002" in checked.stderr


def test_key_check_is_written_once_and_catches_another_key(settings):
    settings.STORAGE_ENCRYPTION_KEY = new_key()
    assert storage.storage_key_verify() == "created"
    assert storage.storage_key_verify() == "verified"
    settings.STORAGE_ENCRYPTION_KEY = new_key()
    with pytest.raises(storage.StorageKeyMismatch):
        storage.storage_key_verify()


def test_store_from_before_key_checks_is_checked_against_a_stored_file(settings):
    settings.STORAGE_ENCRYPTION_KEY = new_key()
    storage.blob_put(b"pixels", kind=storage.PREVIEW)
    settings.STORAGE_ENCRYPTION_KEY = new_key()
    with pytest.raises(storage.StorageKeyMismatch, match="stored file"):
        storage.storage_key_verify()


def test_required_key_never_falls_back_to_secret_key(settings):
    settings.STORAGE_KEY_REQUIRED = True
    settings.STORAGE_ENCRYPTION_KEY = ""
    with pytest.raises(ImproperlyConfigured, match="empty"):
        storage.storage_key()


def test_check_deploy_reports_a_wrong_key(settings):
    from diagnosis.checks import check_storage_key

    settings.STORAGE_ENCRYPTION_KEY = new_key()
    storage.storage_key_verify()
    assert check_storage_key() == []
    settings.STORAGE_ENCRYPTION_KEY = new_key()
    assert [error.id for error in check_storage_key()] == ["cxr.E002"]
    settings.STORAGE_ENCRYPTION_KEY = "c2hvcnQ"
    assert [error.id for error in check_storage_key()] == ["cxr.E001"]


def test_blob_put_replaces_a_stored_file_that_does_not_decrypt(settings):
    settings.STORAGE_ENCRYPTION_KEY = new_key()
    digest = storage.blob_put(b"the film", kind=storage.ORIGINAL)
    settings.STORAGE_ENCRYPTION_KEY = new_key()
    with pytest.raises(storage.StoredBlobUnreadable):
        storage.blob_get(digest, kind=storage.ORIGINAL)
    assert storage.blob_put(b"the film", kind=storage.ORIGINAL) == digest
    assert storage.blob_get(digest, kind=storage.ORIGINAL) == b"the film"


def test_rotation_re_encrypts_under_the_new_key(settings):
    old, new = new_key(), new_key()
    settings.STORAGE_ENCRYPTION_KEY = old
    storage.storage_key_verify()
    first = storage.blob_put(b"first film", kind=storage.ORIGINAL)
    second = storage.blob_put(b"second film", kind=storage.PREVIEW)

    settings.STORAGE_ENCRYPTION_KEY, settings.STORAGE_PREVIOUS_KEYS = new, [old]
    assert storage.blob_get(first, kind=storage.ORIGINAL) == b"first film"  # readable during the rotation
    call_command("storage_rotate_key")
    assert storage.storage_rotate_key() == {"re-encrypted": 0, "current": 2, "unreadable": 0}

    settings.STORAGE_PREVIOUS_KEYS = []
    assert storage.blob_get(first, kind=storage.ORIGINAL) == b"first film"
    assert storage.blob_get(second, kind=storage.PREVIEW) == b"second film"
    assert storage.storage_key_verify() == "verified"

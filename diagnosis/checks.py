"""Deployment checks (`manage.py check --deploy`) for the secret keys."""

from django.conf import settings
from django.core.checks import Error, Tags, register
from django.core.exceptions import ImproperlyConfigured

from cxr_portal.keys import audit_key_check, storage_key_parse


@register(Tags.security, deploy=True)
def check_storage_key(app_configs=None, **kwargs):
    from diagnosis.services.storage import storage_key_verify

    try:
        storage_key_parse(settings.STORAGE_ENCRYPTION_KEY)
        for previous in settings.STORAGE_PREVIOUS_KEYS:
            storage_key_parse(previous)
    except ValueError as error:
        return [Error(str(error), hint="32 random bytes, URL-safe base64; see docs/operations.md.", id="cxr.E001")]
    try:
        storage_key_verify(create=False)
    except ImproperlyConfigured as error:
        return [Error(str(error), hint="Set the key the store was encrypted with; see \"Key rotation\" in docs/operations.md.",
                      id="cxr.E002")]
    return []


@register(Tags.security, deploy=True)
def check_audit_key(app_configs=None, **kwargs):
    try:
        audit_key_check(settings.AUDIT_CHAIN_KEY, secret_key=settings.SECRET_KEY, storage_key=settings.STORAGE_ENCRYPTION_KEY)
    except ValueError as error:
        return [Error(str(error), hint="Generate one with: python -c \"import secrets;print(secrets.token_urlsafe(48))\"",
                      id="cxr.E003")]
    return []

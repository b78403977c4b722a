"""Checks run at start-up (`manage.py migrate`, `runserver`) and deployment checks (`check --deploy`)."""

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
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


DEFAULT_PUBLIC_BASE_URL = "http://127.0.0.1:8000"


@register(Tags.compatibility)
def check_public_base_url(app_configs=None, **kwargs):
    """Bundles pushed without a request (PACS, EHR) and links in e-mails name the portal by this URL."""
    if settings.DEBUG or settings.CXR_PUBLIC_BASE_URL.rstrip("/") != DEFAULT_PUBLIC_BASE_URL:
        return []
    return [Warning(
        "CXR_PUBLIC_BASE_URL is not set: links in alert e-mails and the fullUrl of FHIR bundles sent without a "
        "request would point at http://127.0.0.1:8000.",
        hint="Set CXR_PUBLIC_BASE_URL to the portal's public address, e.g. https://cxr.hospital.org.",
        id="cxr.W010",
    )]

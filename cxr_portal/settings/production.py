"""Production settings: every secret comes from the environment; nothing insecure by default."""

from django.core.exceptions import ImproperlyConfigured

from cxr_portal.keys import audit_key_check, storage_key_parse

from .base import *  # noqa: F401,F403
from .base import env

SECRET_KEY = env("DJANGO_SECRET_KEY")
DEBUG = False
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")
DATABASES = {"default": env.db("DATABASE_URL")}
# Keep each process's (and each gunicorn thread's) connection open between requests and tasks: a new
# PostgreSQL connection per request forks a backend and authenticates, which cost more CPU than the request
# itself (bench/load.py, "cpu ms/study"). Checked before reuse, so a restarted PostgreSQL costs one reconnect.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CXR_DATABASE_CONN_MAX_AGE", default=300)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
CELERY_BROKER_URL = env("CELERY_BROKER_URL")
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
# Shared by every web process: the per-user upload rate limit must count across all of them.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                       "LOCATION": env("CXR_CACHE_URL", default=CELERY_BROKER_URL)}}
# Images are encrypted at rest; without a well-formed key the portal does not start. Web processes and
# workers also check at start that it decrypts the image store's key check (diagnosis.services.storage).
STORAGE_ENCRYPTION_KEY = env("CXR_STORAGE_KEY")
STORAGE_KEY_REQUIRED = True
# Keys images were encrypted under before a rotation (`manage.py storage_rotate_key`), comma-separated.
STORAGE_PREVIOUS_KEYS = env.list("CXR_STORAGE_PREVIOUS_KEYS", default=[])
# The audit chain's HMAC key; without it the portal does not start either.
AUDIT_CHAIN_KEY = env("CXR_AUDIT_KEY")
try:
    storage_key_parse(STORAGE_ENCRYPTION_KEY)
    for previous_key in STORAGE_PREVIOUS_KEYS:
        storage_key_parse(previous_key)
    audit_key_check(AUDIT_CHAIN_KEY, secret_key=SECRET_KEY, storage_key=STORAGE_ENCRYPTION_KEY)
except ValueError as error:
    raise ImproperlyConfigured(str(error)) from None

# Trust X-Forwarded-Proto only behind a reverse proxy that sets it on every request (overwriting what a
# client sent) and is the only way to reach the portal; otherwise any client could claim HTTPS.
# docs/operations.md, "Reverse proxy".
if env.bool("CXR_TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
# Probes and the metrics scraper speak plain HTTP inside the hospital network.
SECURE_REDIRECT_EXEMPT = [r"^health/", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SECURE = True
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# SMTP server for alert e-mails, e.g. smtp+tls://user:password@mail.hospital.org:587
vars().update(env.email_url("DJANGO_EMAIL_URL", default="smtp://localhost:25"))

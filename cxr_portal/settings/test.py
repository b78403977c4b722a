"""Test settings: the real PostgreSQL and Redis on this machine unless the environment says otherwise."""

import os

from .base import *  # noqa: F401,F403
from .base import env

DATABASES = {
    "default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/cxr_portal"),
}
# A Redis database per test run (1-15), so concurrent runs do not consume each other's tasks.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=f"redis://127.0.0.1:6379/{os.getpid() % 15 + 1}")
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Several test runs may share one PostgreSQL server (developers, CI, helpers): give each its own test database.
DATABASES["default"]["TEST"] = {"NAME": env("CXR_TEST_DATABASE_NAME", default=f"test_cxr_portal_{os.getpid()}")}

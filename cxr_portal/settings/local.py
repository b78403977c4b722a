"""Zero-configuration development settings: SQLite and a filesystem broker unless told otherwise."""

from pathlib import Path

from .base import *  # noqa: F401,F403
from .base import VAR_DIR, env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
VAR_DIR.mkdir(parents=True, exist_ok=True)
EMAIL_BACKEND = env("DJANGO_EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    # The web server and the worker share one SQLite file: wait for locks instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 30, "transaction_mode": "IMMEDIATE"})  # noqa: F405
if CELERY_BROKER_URL.startswith("filesystem"):  # noqa: F405
    # Broadcast (control) messages too, or kombu writes them to ./control in the current directory.
    CELERY_BROKER_TRANSPORT_OPTIONS["control_folder"] = str(VAR_DIR / "broker" / "control")  # noqa: F405
for folder in CELERY_BROKER_TRANSPORT_OPTIONS.values():  # noqa: F405
    if isinstance(folder, str):
        Path(folder).mkdir(parents=True, exist_ok=True)

"""The Celery application. Workers start with ``celery -A cxr_portal worker``."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cxr_portal.settings.local")

app = Celery("cxr_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

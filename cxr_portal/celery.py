"""The Celery application. Workers start with ``celery -A cxr_portal worker``."""

import os

from celery import Celery
from celery.signals import worker_init

from . import kombu_patch  # noqa: F401 - a worker must survive Redis dropping while it holds a task

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cxr_portal.settings.local")

app = Celery("cxr_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def refuse_a_wrong_storage_key(**kwargs):
    """A worker with the wrong key would fail every film it takes; production stops it at start instead."""
    from diagnosis.services.storage import storage_key_verify_at_start

    storage_key_verify_at_start()

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cxr_portal.settings.local")
application = get_wsgi_application()

# Production refuses to serve with a storage key that does not decrypt the image store.
from diagnosis.services.storage import storage_key_verify_at_start  # noqa: E402

storage_key_verify_at_start()

# Three images from one file, each with only the packages its processes import (requirements/):
#   docker build --target web .       web server, migrations, scheduler, DICOM receiver: no TensorFlow, no LiteRT
#   docker build --target worker .    inference and default-queue workers: the web's packages plus LiteRT
#   docker build --target trainer .   the "training" queue (site adaptation): the worker's plus TensorFlow/Keras
# None carries the test tools (pytest, Playwright). A plain `docker build .` builds the web image (the last stage).

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=cxr_portal.settings.production
# A named volume mounted on one of these takes that directory's owner, so the portal user can write there
# (images, audit anchors, site-adapted model versions, their feature cache, site films to import).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq5 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 portal \
    && mkdir -p /data/images /data/audit-anchors /data/models /data/feature-cache /data/site-import \
    && chown portal:portal /data/images /data/audit-anchors /data/models /data/feature-cache /data/site-import
WORKDIR /app

# Packages first, in their own layers: a code change rebuilds none of them.
FROM base AS web-packages
COPY requirements/web.txt requirements/
RUN pip install --no-cache-dir -r requirements/web.txt

FROM web-packages AS worker-packages
COPY requirements/worker.txt requirements/
RUN pip install --no-cache-dir -r requirements/worker.txt

FROM worker-packages AS trainer-packages
COPY requirements/training.txt requirements/
RUN pip install --no-cache-dir -r requirements/training.txt

FROM worker-packages AS worker
COPY --chown=portal:portal . .
USER portal
CMD ["celery", "-A", "cxr_portal", "worker", "-Q", "inference", "--concurrency=2", "--loglevel=INFO"]

FROM trainer-packages AS trainer
COPY --chown=portal:portal . .
USER portal
CMD ["celery", "-A", "cxr_portal", "worker", "-Q", "training", "--concurrency=1", "--loglevel=INFO"]

FROM web-packages AS web
COPY --chown=portal:portal . .
# Placeholder values: collectstatic only needs settings to load; the real ones come from .env at run time.
RUN DJANGO_SECRET_KEY=build DJANGO_ALLOWED_HOSTS=build DATABASE_URL=sqlite:////tmp/build.sqlite3 \
    CELERY_BROKER_URL=memory:// CXR_STORAGE_KEY=MDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA= \
    CXR_AUDIT_KEY=build-placeholder-audit-key-000000000000 \
    python manage.py collectstatic --noinput
USER portal
EXPOSE 8000
# Threads: a request waiting on a slow upload or decode does not hold the whole process (decodes are capped
# per process by CXR_MAX_CONCURRENT_DECODES).
CMD ["gunicorn", "cxr_portal.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "4", "--timeout", "60"]

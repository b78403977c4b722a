FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=cxr_portal.settings.production

RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq5 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 portal

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY --chown=portal:portal . .
# Placeholder values: collectstatic only needs settings to load; the real ones come from .env at run time.
RUN DJANGO_SECRET_KEY=build DJANGO_ALLOWED_HOSTS=build DATABASE_URL=sqlite:////tmp/build.sqlite3 \
    CELERY_BROKER_URL=memory:// CXR_STORAGE_KEY=MDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA= \
    CXR_AUDIT_KEY=build-placeholder-audit-key-000000000000 \
    python manage.py collectstatic --noinput

# A named volume mounted here takes this directory's owner, so the portal user can write images.
RUN mkdir -p /data/images && chown portal:portal /data/images

USER portal
EXPOSE 8000
# Threads: a request waiting on a slow upload or decode does not hold the whole process (decodes are capped
# per process by CXR_MAX_CONCURRENT_DECODES).
CMD ["gunicorn", "cxr_portal.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "4", "--timeout", "60"]

"""Settings shared by every environment, read from environment variables.

``local`` (the default) runs with zero configuration on SQLite and a
filesystem broker; ``test`` uses the real PostgreSQL and Redis; ``production``
refuses to start without its secrets.
"""

from datetime import timedelta
from pathlib import Path

import environ

from cxr_portal.static_headers import static_security_headers

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

SECRET_KEY = env("DJANGO_SECRET_KEY", default="local-development-key-not-for-production")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "crispy_forms",
    "crispy_bootstrap5",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "accounts",
    "audit",
    "diagnosis",
]

MIDDLEWARE = [
    # First: names and times every request (X-Request-ID, request latency metric, request_id in logs).
    "cxr_portal.observability.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "cxr_portal.middleware.RequestSizeLimitMiddleware",
    "cxr_portal.middleware.NullCharacterMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # After sessions (it reads the language the user picked), before common (which may redirect).
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "accounts.middleware.SessionTimeoutMiddleware",
    "accounts.middleware.TwoFactorRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "audit.middleware.AuditContextMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "cxr_portal.middleware.SecurityHeadersMiddleware",
    # Last, so it sees the lockout flag that authentication set on the request.
    "axes.middleware.AxesMiddleware",
    # Innermost, so it sees a view's database error before anything turns it into a 500.
    "cxr_portal.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "cxr_portal.urls"
WSGI_APPLICATION = "cxr_portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.role",
                "diagnosis.context_processors.open_alerts",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'cxr_portal.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
# The per-address limit and Axes first: they refuse a locked-out address or username/address pair before
# any password is checked.
AUTHENTICATION_BACKENDS = ["accounts.sign_in_limits.AddressFailureLimitBackend", "axes.backends.AxesStandaloneBackend",
                           "django.contrib.auth.backends.ModelBackend"]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "diagnosis:home"
LOGOUT_REDIRECT_URL = "accounts:login"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    # Not a rule: Django tells validators when a password changed, and this one ends the user's sessions.
    {"NAME": "accounts.password_hooks.SessionsEndOnPasswordChange"},
]

# Lockout counts failures per (username, address) pair: a wrong password typed on a shared ward
# computer, or an attacker behind the hospital's NAT, locks out one account there, never the whole ward.
AXES_FAILURE_LIMIT = env.int("CXR_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("CXR_LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "audit.context.client_ip"
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"
# JSON on the API, the page elsewhere, both 429 with Retry-After; also for the per-address limit below.
AXES_LOCKOUT_CALLABLE = "accounts.lockout.lockout_response"
# Against password spraying (one password tried on many usernames): this many different usernames failing
# from one address within the window, and the address is refused for the rest of it. High enough for a
# ward behind one NAT address, where a few colleagues mistype now and then.
LOGIN_ADDRESS_USERNAME_LIMIT = env.int("CXR_LOGIN_ADDRESS_USERNAME_LIMIT", default=20)
LOGIN_ADDRESS_WINDOW_SECONDS = env.int("CXR_LOGIN_ADDRESS_WINDOW_MINUTES", default=15) * 60
# API tokens stop working this long after they are issued; POST /api/auth/token/ again for a new one.
API_TOKEN_LIFETIME = timedelta(hours=env.int("CXR_API_TOKEN_LIFETIME_HOURS", default=24 * 30))
AXES_VERBOSE = False

# Sessions end after this long idle, and at the latest this long after sign-in, whatever the activity.
SESSION_IDLE_TIMEOUT_SECONDS = env.int("CXR_SESSION_IDLE_SECONDS", default=30 * 60)
SESSION_ABSOLUTE_LIFETIME_SECONDS = env.int("CXR_SESSION_LIFETIME_SECONDS", default=12 * 60 * 60)
SESSION_COOKIE_AGE = SESSION_ABSOLUTE_LIFETIME_SECONDS
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
OTP_TOTP_ISSUER = "CXR Portal"

# Content-Security-Policy: scripts only from this server; inline style attributes (progress bars) allowed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Uploads: bodies larger than this are refused from the Content-Length header, before any byte is read.
MAX_REQUEST_BYTES = env.int("CXR_MAX_REQUEST_BYTES", default=64 * 1024 * 1024 + 1024 * 1024)
UPLOAD_RATE_LIMIT = env.int("CXR_UPLOAD_RATE_LIMIT", default=30)  # uploads per user ...
UPLOAD_RATE_WINDOW_SECONDS = env.int("CXR_UPLOAD_RATE_WINDOW_SECONDS", default=60)  # ... per this window

LANGUAGE_CODE = "en"
# Every page, e-mail and the PDF report go through the translation catalogues in locale/.
LANGUAGES = [("en", "English"), ("es", "Español")]
LOCALE_PATHS = [BASE_DIR / "locale"]
# Dates in one format everywhere; numbers with the language's decimal separator (cxr_portal/formats/).
FORMAT_MODULE_PATH = ["cxr_portal.formats"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
# WhiteNoise answers /static/ itself, before the middleware that sets these headers on pages.
WHITENOISE_ADD_HEADERS_FUNCTION = static_security_headers
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default=str(VAR_DIR / "staticfiles"))

# Uploaded images live outside STATIC/MEDIA URLs: they are served only through an authorising view.
IMAGE_STORE_DIR = env.path("CXR_IMAGE_STORE_DIR", default=str(VAR_DIR / "images"))
# AES-256-GCM key for the image store: 32 bytes, URL-safe base64 (python -c "import base64,os;print(base64.urlsafe_b64encode(os.urandom(32)).decode())").
# Empty here derives a development key from SECRET_KEY; production settings require it.
STORAGE_ENCRYPTION_KEY = env("CXR_STORAGE_KEY", default="")
# Production sets this: an empty key is then an error, never a fallback.
STORAGE_KEY_REQUIRED = False
# Keys images were encrypted under before a rotation (`manage.py storage_rotate_key`), comma-separated.
STORAGE_PREVIOUS_KEYS = env.list("CXR_STORAGE_PREVIOUS_KEYS", default=[])
# The audit trail's chain is an HMAC-SHA256 under this key, kept outside the database and apart from
# SECRET_KEY and CXR_STORAGE_KEY: whoever can write the audit table cannot forge a chain without it.
# Empty here derives a development key from SECRET_KEY; production settings require it.
AUDIT_CHAIN_KEY = env("CXR_AUDIT_KEY", default="")
# Append-only file of anchors (sequence, HMAC and time of the chain's head). Keep it where the database
# owner cannot write: another host or volume, ideally `chattr +a` or write-once storage (docs/operations.md).
AUDIT_ANCHOR_FILE = env.path("CXR_AUDIT_ANCHOR_FILE", default=str(VAR_DIR / "audit-anchors.jsonl"))
MAX_UPLOAD_BYTES = env.int("CXR_MAX_UPLOAD_BYTES", default=64 * 1024 * 1024)
# Real chest films are under 4,300 x 4,900; ml.serving.imaging.DEFAULT_MAX_PIXELS explains the 25 million.
MAX_IMAGE_PIXELS = env.int("CXR_MAX_IMAGE_PIXELS", default=25_000_000)
# Full-resolution decodes at once per web process; an upload that waits longer than this for one is told
# to retry (503 with Retry-After) instead of holding a web thread in a queue.
MAX_CONCURRENT_DECODES = env.int("CXR_MAX_CONCURRENT_DECODES", default=1)
DECODE_WAIT_SECONDS = env.float("CXR_DECODE_WAIT_SECONDS", default=2.0)
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

# The model the portal registers and activates on first start when none is active.
DEFAULT_MODEL_ARTIFACT = env.path("CXR_DEFAULT_MODEL_ARTIFACT", default=str(BASE_DIR / "ml" / "artifacts" / "production"))

CRISPY_ALLOWED_TEMPLATE_PACKS = "bootstrap5"
CRISPY_TEMPLATE_PACK = "bootstrap5"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first, so an anonymous request gets 401 with a WWW-Authenticate header.
        "accounts.authentication.ExpiringTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "diagnosis.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "CXR Portal API",
    "DESCRIPTION": "Chest X-ray triage support. Results support, and do not replace, a clinician.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Swagger UI is served from this server: the portal makes no requests to the internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Celery: the broker is only a doorbell; PostgreSQL holds every study's state.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS = {}
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
# Celery's Django fixup closes every database connection after every task unless this is set; a worker then
# opens a new PostgreSQL connection per task, which cost PostgreSQL more CPU than the task's own queries
# (bench/load.py --statements). Connections are kept instead, and checked before each task as Django checks
# them before each request (cxr_portal.celery.database_connections_checked: CONN_MAX_AGE, CONN_HEALTH_CHECKS,
# a connection broken by a PostgreSQL restart). Celery still closes them after 2 x this many tasks.
CELERY_DB_REUSE_MAX = 500
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "diagnosis.run_inference": {"queue": "inference"},
    # Slow, rare jobs on their own queue, so that they never hold up a study's inference.
    "diagnosis.import_labelled_studies": {"queue": "training"},
    "diagnosis.adapt_model": {"queue": "training"},
    "diagnosis.deliver_alert": {"queue": "default"},
    "diagnosis.deliver_result": {"queue": "default"},
}
# An upload waits at most about a second for an unreachable broker before it is answered anyway
# (diagnosis.services.inference.study_enqueue); the sweeper rings for it later.
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("CXR_BROKER_CONNECTION_TIMEOUT_SECONDS", default=1.0)
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_BEAT_SCHEDULE = {
    "requeue-stale-studies": {
        "task": "diagnosis.requeue_stale_studies",
        "schedule": timedelta(seconds=env.int("CXR_INFERENCE_SWEEP_SECONDS", default=15)),
    },
    "redeliver-alerts": {
        "task": "diagnosis.redeliver_alerts",
        "schedule": timedelta(minutes=5),
    },
    "redeliver-results": {
        "task": "diagnosis.redeliver_results",
        "schedule": timedelta(minutes=5),
    },
    "anchor-audit-chain": {
        "task": "audit.anchor_chain_head",
        "schedule": timedelta(minutes=env.int("CXR_AUDIT_ANCHOR_EVERY_MINUTES", default=10)),
    },
    "monitor-active-model": {
        "task": "diagnosis.monitor_active_model",
        "schedule": timedelta(minutes=env.int("CXR_MONITOR_EVERY_MINUTES", default=60)),
    },
}
if CELERY_BROKER_URL.startswith("redis"):
    # Longer than the slowest task, so a late-acked task is not redelivered while it still runs.
    CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] = 3600
elif CELERY_BROKER_URL.startswith("filesystem"):
    broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(broker_dir / "queue"),
        "data_folder_out": str(broker_dir / "queue"),
        "processed_folder": str(broker_dir / "processed"),
        "store_processed": False,
        # kombu waits this long after finding the queues empty (default 1 s); the worker found them empty
        # between most tasks, so a film took about 2 s to come back instead of 0.1 s.
        "polling_interval": 0.1,
    }

INFERENCE_MAX_ATTEMPTS = env.int("CXR_INFERENCE_MAX_ATTEMPTS", default=3)
# Recovery bounds (docs/operations.md, "Recovery bounds"). A worker renews its claim on a study every third of
# the lease; once the lease lapses the study is taken over. A study whose worker died is rung again within
# INFERENCE_LEASE + INFERENCE_SWEEP_INTERVAL (45 s by default), at once if Celery redelivers its message.
INFERENCE_LEASE = timedelta(seconds=env.int("CXR_INFERENCE_LEASE_SECONDS", default=30))
INFERENCE_SWEEP_INTERVAL = CELERY_BEAT_SCHEDULE["requeue-stale-studies"]["schedule"]
# A study still "received" this long after upload never reached the broker (it was down): ring again.
INFERENCE_RECEIVED_GRACE = timedelta(seconds=env.int("CXR_INFERENCE_RECEIVED_GRACE_SECONDS", default=10))
# A study "queued" this long is assumed lost by the broker (a Redis restart) and rung again; a duplicate
# message is harmless, the claim lets one delivery through.
INFERENCE_STALE_AFTER = timedelta(seconds=env.int("CXR_INFERENCE_STALE_SECONDS", default=60))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "cxr_portal.observability.RequestIdLogFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "cxr_portal.observability.JsonLogFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["request_id"],
                             "formatter": env("DJANGO_LOG_FORMAT", default="text")}},
    "root": {"handlers": ["console"], "level": env("DJANGO_LOG_LEVEL", default="INFO")},
    # Axes logs every sign-in at INFO; the audit trail already records them.
    "loggers": {"axes": {"level": "WARNING"}},
}

# COVID-19 alerts: delivered by the "default" queue's workers, in-app always, e-mail and webhook when configured.
CXR_ALERT_EMAIL_RECIPIENTS = env.list("CXR_ALERT_EMAIL_RECIPIENTS", default=[])
# Site monitor (ml.monitoring, diagnosis.services.monitoring): the active version's results of the last
# CXR_MONITOR_WINDOW_DAYS days (0: all) against its validation films; each check alarms at CXR_MONITOR_ALPHA
# once it has CXR_MONITOR_MIN_FILMS films. Alarms e-mail the administrators and these addresses.
CXR_MONITOR_WINDOW_DAYS = env.int("CXR_MONITOR_WINDOW_DAYS", default=90)
CXR_MONITOR_ALPHA = env.float("CXR_MONITOR_ALPHA", default=0.001)
CXR_MONITOR_MIN_FILMS = env.int("CXR_MONITOR_MIN_FILMS", default=10)
# Beside the validation comparison: a false-alert share no site should accept (0: no limit); the sensitivity
# limit is the version's own target sensitivity.
CXR_MONITOR_MAX_FALSE_ALERTS = env.float("CXR_MONITOR_MAX_FALSE_ALERTS", default=0.8)
# The highest share of COVID-19 among this site's films (0: no such check). With the false-alert limit it caps
# the share of all results that may raise the alert, a check that needs no clinician feedback. Set it for the
# site: a COVID-19 ward sends more than a general hospital's emergency department.
CXR_MONITOR_MAX_PREVALENCE = env.float("CXR_MONITOR_MAX_PREVALENCE", default=0.3)
CXR_MONITOR_EMAIL_RECIPIENTS = env.list("CXR_MONITOR_EMAIL_RECIPIENTS", default=[])
CXR_ALERT_WEBHOOK_URL = env("CXR_ALERT_WEBHOOK_URL", default="")
CXR_ALERT_WEBHOOK_SECRET = env("CXR_ALERT_WEBHOOK_SECRET", default="")
CXR_ALERT_WEBHOOK_TIMEOUT_SECONDS = env.float("CXR_ALERT_WEBHOOK_TIMEOUT_SECONDS", default=10.0)
CXR_ALERT_MAX_ATTEMPTS = env.int("CXR_ALERT_MAX_ATTEMPTS", default=6)
# Back-off between attempts: base * 2^(attempt-1) seconds, capped at one hour.
CXR_ALERT_RETRY_BASE_SECONDS = env.int("CXR_ALERT_RETRY_BASE_SECONDS", default=30)
# Absolute links in e-mails and webhooks.
CXR_PUBLIC_BASE_URL = env("CXR_PUBLIC_BASE_URL", default="http://127.0.0.1:8000")
DEFAULT_FROM_EMAIL = env("DJANGO_DEFAULT_FROM_EMAIL", default="cxr-portal@localhost")

# Site adaptation (issue 20). A study is confirmed when its latest feedback names a class; with 2, two
# clinicians' latest feedback must name the same class. Each site patient falls, by a stable hash, in the locked
# site test part (this share) or the adaptation part. A version is "validated at this site" once evaluated on at
# least CXR_SITE_VALIDATION_MIN_FILMS site films with every class present.
CXR_SITE_LABEL_AGREEMENT = env.int("CXR_SITE_LABEL_AGREEMENT", default=1)
CXR_SITE_TEST_SHARE = env.float("CXR_SITE_TEST_SHARE", default=0.5)
CXR_SITE_VALIDATION_MIN_FILMS = env.int("CXR_SITE_VALIDATION_MIN_FILMS", default=100)
CXR_ADAPT_TARGET_SENSITIVITY = env.float("CXR_ADAPT_TARGET_SENSITIVITY", default=0.95)
CXR_ADAPT_SITE_WEIGHT = env.float("CXR_ADAPT_SITE_WEIGHT", default=0.5)
# The development pool the head refit also learns from (default: the folder the active version was trained
# on, when this machine has it); without it the head is refitted on the site's films alone, pulled to the old head.
CXR_DEV_DATA_DIR = env("CXR_DEV_DATA_DIR", default="")
# Where candidates are written, the pooled-feature cache, and the only folder the import page reads from.
CXR_CANDIDATE_DIR = env.path("CXR_CANDIDATE_DIR", default=str(VAR_DIR / "models"))
CXR_FEATURE_CACHE_DIR = env.path("CXR_FEATURE_CACHE_DIR", default=str(VAR_DIR / "feature-cache"))
CXR_SITE_IMPORT_DIR = env.path("CXR_SITE_IMPORT_DIR", default=str(VAR_DIR / "site-import"))

# DICOM receiver (python manage.py dicom_receiver): the AE title and port a PACS sends to, and the calling AE
# titles allowed to send (none: the receiver refuses to start). TLS when a certificate is given; callers must then
# present a certificate signed by CXR_DICOM_TLS_CLIENT_CA if that is set.
CXR_DICOM_AE_TITLE = env("CXR_DICOM_AE_TITLE", default="CXR_PORTAL")
CXR_DICOM_PORT = env.int("CXR_DICOM_PORT", default=11112)
CXR_DICOM_BIND_ADDRESS = env("CXR_DICOM_BIND_ADDRESS", default="127.0.0.1")
CXR_DICOM_ALLOWED_CALLING_AES = env.list("CXR_DICOM_ALLOWED_CALLING_AES", default=[])
CXR_DICOM_TLS_CERTIFICATE = env("CXR_DICOM_TLS_CERTIFICATE", default="")
CXR_DICOM_TLS_KEY = env("CXR_DICOM_TLS_KEY", default="")
CXR_DICOM_TLS_CLIENT_CA = env("CXR_DICOM_TLS_CLIENT_CA", default="")

# Results out (diagnosis.services.results), retried like alerts. PACS: a DICOM SR (and, if set, a Secondary Capture
# with the heatmap) by C-STORE to this AE, for studies that came over DICOM. EHR: the FHIR DiagnosticReport bundle,
# POSTed as a transaction to this FHIR base URL with this Authorization header (e.g. "Bearer <token>").
CXR_RESULTS_PACS_HOST = env("CXR_RESULTS_PACS_HOST", default="")
CXR_RESULTS_PACS_PORT = env.int("CXR_RESULTS_PACS_PORT", default=104)
CXR_RESULTS_PACS_AE_TITLE = env("CXR_RESULTS_PACS_AE_TITLE", default="PACS")
CXR_RESULTS_PACS_CALLING_AE_TITLE = env("CXR_RESULTS_PACS_CALLING_AE_TITLE", default=CXR_DICOM_AE_TITLE)
CXR_RESULTS_PACS_SECONDARY_CAPTURE = env.bool("CXR_RESULTS_PACS_SECONDARY_CAPTURE", default=False)
CXR_RESULTS_PACS_TIMEOUT_SECONDS = env.float("CXR_RESULTS_PACS_TIMEOUT_SECONDS", default=30.0)
CXR_RESULTS_FHIR_URL = env("CXR_RESULTS_FHIR_URL", default="")
CXR_RESULTS_FHIR_AUTHORIZATION = env("CXR_RESULTS_FHIR_AUTHORIZATION", default="")
CXR_RESULTS_FHIR_TIMEOUT_SECONDS = env.float("CXR_RESULTS_FHIR_TIMEOUT_SECONDS", default=15.0)
CXR_RESULTS_MAX_ATTEMPTS = env.int("CXR_RESULTS_MAX_ATTEMPTS", default=6)
CXR_RESULTS_RETRY_BASE_SECONDS = env.int("CXR_RESULTS_RETRY_BASE_SECONDS", default=30)

# Operations (docs/operations.md, "Health and metrics").
# /metrics answers these networks, or anyone sending "Authorization: Bearer <CXR_METRICS_TOKEN>".
METRICS_ALLOWED_NETWORKS = env.list("CXR_METRICS_ALLOWED_NETWORKS", default=["127.0.0.1/32", "::1/128"])
METRICS_TOKEN = env("CXR_METRICS_TOKEN", default="")
HEALTH_BROKER_TIMEOUT_SECONDS = env.float("CXR_HEALTH_BROKER_TIMEOUT_SECONDS", default=1.0)
# Each worker's main process writes a heartbeat this often; one older than the stale bound counts as gone.
WORKER_HEARTBEAT_INTERVAL = timedelta(seconds=env.int("CXR_WORKER_HEARTBEAT_SECONDS", default=10))
WORKER_HEARTBEAT_STALE_AFTER = timedelta(seconds=env.int("CXR_WORKER_HEARTBEAT_STALE_SECONDS", default=60))
CELERY_OBSERVED_QUEUES = ["inference", "default"]
# The request that queued a task names its log lines too.
CELERY_WORKER_TASK_LOG_FORMAT = (
    "[%(asctime)s: %(levelname)s/%(processName)s] [%(request_id)s] %(task_name)s[%(task_id)s]: %(message)s"
)

"""Production settings pass Django's deployment checks; every response carries the security headers."""

import base64
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def production_environment(**overrides) -> dict:
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "cxr_portal.settings.production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(60),
        "DJANGO_ALLOWED_HOSTS": "cxr.example.org",
        "DATABASE_URL": "postgres://cxr@db.example.org:5432/cxr",
        "CELERY_BROKER_URL": "redis://redis.example.org:6379/0",
        "CXR_STORAGE_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "CXR_AUDIT_KEY": secrets.token_urlsafe(48),
        "CXR_PUBLIC_BASE_URL": "https://cxr.example.org",
    }
    environment.update(overrides)
    return {name: value for name, value in environment.items() if value is not None}


def manage(*args, environment: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=PROJECT_ROOT, env=environment,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_check_deploy_reports_nothing_with_production_settings():
    result = manage("check", "--deploy", "--fail-level", "DEBUG", environment=production_environment())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.mark.slow
def test_start_up_warns_when_the_public_base_url_is_unset_in_production():
    result = manage("check", environment=production_environment(CXR_PUBLIC_BASE_URL=None))
    assert "cxr.W010" in result.stdout + result.stderr and "CXR_PUBLIC_BASE_URL is not set" in result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "CXR_STORAGE_KEY", "CXR_AUDIT_KEY", "DJANGO_ALLOWED_HOSTS"])
def test_production_refuses_to_start_without_its_secrets(missing):
    result = manage("check", environment=production_environment(**{missing: None}))
    assert result.returncode != 0
    assert missing in result.stderr


def test_production_settings_are_strict():
    """Read the settings module directly, so the assertion names the setting that changed."""
    environment = production_environment()
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; print(json.dumps({"
        "'hsts': s.SECURE_HSTS_SECONDS, 'ssl': s.SECURE_SSL_REDIRECT, 'session_secure': s.SESSION_COOKIE_SECURE,"
        "'session_httponly': s.SESSION_COOKIE_HTTPONLY, 'session_samesite': s.SESSION_COOKIE_SAMESITE,"
        "'csrf_secure': s.CSRF_COOKIE_SECURE, 'frame': s.X_FRAME_OPTIONS, 'referrer': s.SECURE_REFERRER_POLICY,"
        "'debug': s.DEBUG, 'csp': s.CONTENT_SECURITY_POLICY}))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=120)
    import json

    values = json.loads(result.stdout)
    assert values["hsts"] >= 31536000 and values["ssl"] and not values["debug"]
    assert values["session_secure"] and values["session_httponly"] and values["session_samesite"] in ("Lax", "Strict")
    assert values["csrf_secure"] and values["frame"] == "DENY" and values["referrer"] == "same-origin"
    assert "frame-ancestors 'none'" in values["csp"] and "script-src 'self'" in values["csp"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/accounts/login/", "/api/auth/token/"])
def test_security_headers_on_every_response(client, path):
    response = client.get(path)
    csp = response["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "'unsafe-eval'" not in csp
    assert "script-src 'self';" in csp  # no inline scripts
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "camera=()" in response["Permissions-Policy"]


@pytest.mark.django_db
def test_pages_contain_no_inline_scripts(client, clinician, auditor):
    import re

    client.force_login(clinician)
    for name in ("diagnosis:worklist", "diagnosis:patient_list", "accounts:two_factor_setup"):
        page = client.get(reverse(name)).content.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), f"{name} has an inline script"
    docs = client.get("/api/docs/").content.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", docs), "Swagger UI has an inline script"

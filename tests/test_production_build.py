"""The Docker image's build step: collectstatic with production settings and hashed, compressed files."""

import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def build_environment(static_root: Path) -> dict[str, str]:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert "CXR_STORAGE_KEY=" in dockerfile and "collectstatic" in dockerfile
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "cxr_portal.settings.production",
        "DJANGO_SECRET_KEY": "build",
        "DJANGO_ALLOWED_HOSTS": "build",
        "DATABASE_URL": "sqlite:////tmp/build.sqlite3",
        "CELERY_BROKER_URL": "memory://",
        "CXR_STORAGE_KEY": "MDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA=",
        "CXR_AUDIT_KEY": "build-placeholder-audit-key-000000000000",
        "DJANGO_STATIC_ROOT": str(static_root),
    }


def test_collectstatic_succeeds_with_production_settings(tmp_path):
    static_root = tmp_path / "static"
    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        cwd=PROJECT_ROOT, env=build_environment(static_root), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (static_root / "staticfiles.json").exists()  # the manifest the production storage serves from
    assert list((static_root / "vendor" / "bootstrap").glob("bootstrap.min.*.css.gz"))

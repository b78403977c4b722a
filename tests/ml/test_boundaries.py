"""ml/ is plain Python: it never imports Django or the portal apps, and importing it never loads TensorFlow."""

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import ml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ML_MODULES = sorted(module.name for module in pkgutil.walk_packages(ml.__path__, "ml.") if "._" not in module.name)


def imported_after(statement: str) -> set[str]:
    script = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    return set(result.stdout.split())


def test_ml_imports_neither_django_nor_portal_apps():
    modules = imported_after("\n".join(f"import {name}" for name in ML_MODULES))
    forbidden = {name for name in modules if name.split(".")[0] in {"django", "rest_framework", "accounts", "diagnosis", "audit", "cxr_portal"}}
    assert not forbidden, f"ml/ must stay free of Django: {sorted(forbidden)[:5]}"


def test_importing_ml_does_not_load_tensorflow():
    modules = imported_after("\n".join(f"import {name}" for name in ML_MODULES))
    assert "tensorflow" not in modules
    assert "keras" not in modules


def test_web_process_does_not_load_tensorflow():
    modules = imported_after(
        "import os, django\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'cxr_portal.settings.test'\n"
        "django.setup()\n"
        "import cxr_portal.urls, diagnosis.views, diagnosis.api, diagnosis.tasks"
    )
    assert "tensorflow" not in modules



def test_the_worker_loads_only_ml_serving():
    # Training and evaluation code load only inside the tasks that run them (adaptation, label imports), so a
    # worker classifying films carries nothing else of ml/.
    modules = imported_after(
        "import os, django\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'cxr_portal.settings.test'\n"
        "django.setup()\n"
        "import cxr_portal.celery, diagnosis.tasks, diagnosis.services.inference"
    )
    loaded = {name for name in modules if name.startswith("ml.")}
    assert "ml.serving.imaging" in loaded
    assert all(name.startswith("ml.serving") for name in loaded), sorted(loaded)

"""Each process gets the packages it imports and no more (requirements/, Dockerfile targets, docker-compose.yml).

The web image must never carry TensorFlow, Keras, LiteRT or the test tools; a web process must never import them.
"""

import re
import subprocess
import sys
from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = PROJECT_ROOT / "requirements"
MODEL_PACKAGES = {"tensorflow", "tensorflow-cpu", "keras", "ai-edge-litert"}
TEST_PACKAGES = {"pytest", "pytest-django", "playwright", "factory-boy", "hypothesis", "import-linter", "pypdf", "polib"}


def pinned(name: str) -> dict[str, str]:
    """The packages a requirements file names, with those of the files it includes (-r)."""
    packages = {}
    for line in (REQUIREMENTS / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            packages |= pinned(line[3:].strip())
        elif line:
            package, version = line.split("==")
            packages[package.lower()] = version
    return packages


def test_every_requirement_is_pinned_and_each_file_adds_to_the_one_it_includes():
    for name in ("web.txt", "worker.txt", "training.txt", "dev.txt"):
        for line in (REQUIREMENTS / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            assert not line or line.startswith("-r ") or re.fullmatch(r"[\w.\-\[\]]+==[\w.]+", line), (name, line)
    web, worker, training, dev = (pinned(name) for name in ("web.txt", "worker.txt", "training.txt", "dev.txt"))
    assert web.items() < worker.items() < training.items() < dev.items()


def test_the_web_set_has_no_model_runtime_and_no_test_tools():
    assert not (MODEL_PACKAGES | TEST_PACKAGES) & set(pinned("web.txt"))
    assert not ({"tensorflow-cpu", "keras"} | TEST_PACKAGES) & set(pinned("worker.txt"))
    assert "ai-edge-litert" in pinned("worker.txt") and "tensorflow-cpu" in pinned("training.txt")


def test_each_image_installs_its_own_set_and_compose_runs_each_service_from_the_right_one():
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    parents = {stage: parent for parent, stage in re.findall(r"^FROM (\S+) AS (\S+)$", dockerfile, flags=re.M)}
    bodies = dict(re.findall(r"^FROM \S+ AS (\S+)\n(.*?)(?=^FROM |\Z)", dockerfile, flags=re.M | re.S))

    def requirement_files(stage: str) -> list[str]:
        """What the stage installs, with what the stages it builds on installed."""
        files = re.findall(r"pip install .*-r (requirements/\S+)", bodies.get(stage, ""))
        return files + (requirement_files(parents[stage]) if stage in parents else [])

    assert sorted(requirement_files("web")) == ["requirements/web.txt"]
    assert sorted(requirement_files("worker")) == ["requirements/web.txt", "requirements/worker.txt"]
    assert "requirements/training.txt" in requirement_files("trainer")
    assert dockerfile.rstrip().splitlines()[-1].startswith("CMD [\"gunicorn\""), "a plain build gives the web image"

    services = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["services"]
    targets = {name: service["build"]["target"] for name, service in services.items() if "build" in service}
    assert targets == {"migrate": "web", "web": "web", "scheduler": "web", "dicom-receiver": "web",
                       "worker-inference": "worker", "worker-default": "worker", "worker-training": "trainer"}


def test_the_web_process_imports_no_model_runtime():
    """Load every URL's view and the WSGI application as gunicorn would, then look at what got imported."""
    script = """
import sys
import django
from django.urls import get_resolver

django.setup()
import cxr_portal.wsgi  # noqa: F401

def walk(resolver):
    for pattern in resolver.url_patterns:
        if hasattr(pattern, "url_patterns"):
            walk(pattern)
        else:
            pattern.callback

walk(get_resolver())
print(sorted({name.split(".")[0] for name in sys.modules} & {"tensorflow", "keras", "ai_edge_litert", "pytest"}))
"""
    environment = {"DJANGO_SETTINGS_MODULE": "cxr_portal.settings.test", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=environment, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"

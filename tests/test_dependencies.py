"""Each process gets the packages it imports and no more (requirements/, Dockerfile targets, docker-compose.yml).

The web image must never carry TensorFlow, Keras, LiteRT or the test tools; a web process must never import them.
"""

import importlib.metadata
import json
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


def test_the_web_process_imports_only_what_the_web_set_installs():
    """Load the WSGI application, every URL's view and the task modules as gunicorn and Celery's client would;
    then every module-level import of the project's modules that got loaded must come from requirements/web.txt
    or what its packages depend on. A module-level import of TensorFlow, LiteRT, tqdm... in code the web loads
    fails here, in the development environment that has them all."""
    script = """
import ast
import importlib.metadata
import json
import sys

import django
from django.urls import get_resolver

django.setup()
import cxr_portal.wsgi  # noqa: F401
import diagnosis.tasks  # noqa: F401
import audit.tasks  # noqa: F401


def walk(resolver):
    for pattern in resolver.url_patterns:
        if hasattr(pattern, "url_patterns"):
            walk(pattern)
        else:
            pattern.callback


walk(get_resolver())
# The web serves pages; training code runs only in the trainer image (lower ml layers may be imported).
loaded_training = sorted(name for name in sys.modules if name.startswith("ml.training"))
assert not loaded_training, f"the web process loaded training code: {loaded_training}"
imported = {}
for name, module in list(sys.modules.items()):
    if name.split(".")[0] not in PROJECT_PACKAGES or not getattr(module, "__file__", None):
        continue
    for node in ast.parse(open(module.__file__).read()).body:  # module level only: not inside functions
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        for imported_name in names:
            imported.setdefault(imported_name.split(".")[0], name)
installed_by = importlib.metadata.packages_distributions()
print(json.dumps({dist: module for top, module in imported.items() for dist in installed_by.get(top, [])}))
""".replace("PROJECT_PACKAGES", repr({"accounts", "audit", "cxr_portal", "diagnosis", "ml"}))
    environment = {"DJANGO_SETTINGS_MODULE": "cxr_portal.settings.test", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=environment, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    imported_by = {dist.lower().replace("_", "-"): module
                   for dist, module in json.loads(result.stdout.strip().splitlines()[-1]).items()}
    assert not set(imported_by) & MODEL_PACKAGES, f"the web process must never load the model runtime: {imported_by}"
    missing = {dist: module for dist, module in imported_by.items() if dist not in web_set_with_dependencies()}
    assert missing == {}, "the web imports these (package: first module importing it); add them to requirements/web.txt"


def web_set_with_dependencies() -> set[str]:
    """requirements/web.txt and, through the installed packages' metadata, everything they require."""
    from packaging.requirements import Requirement

    wanted, seen = list(pinned("web.txt")), set()
    while wanted:
        name = wanted.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                wanted.append(requirement.name)
    return seen

"""The portal's own processes for the end-to-end tests: a Celery worker or the DICOM receiver, started as
production starts them, on the test database, the test Redis database and the test image store."""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def portal_environment(image_store: Path, **extra: str) -> dict:
    """The environment of a portal process that shares this test's database, broker and image store."""
    database = connection.settings_dict
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "cxr_portal.settings.test",
        "DATABASE_URL": (f"postgres://{database['USER']}:{database['PASSWORD'] or ''}@"
                         f"{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}/{database['NAME']}"),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CXR_IMAGE_STORE_DIR": str(image_store),
        "CUDA_VISIBLE_DEVICES": "",
        **extra,
    }


@contextmanager
def portal_process(arguments: list[str], *, env: dict, log_path: Path) -> Iterator[subprocess.Popen]:
    """Run ``python ARGUMENTS`` from the project root, its output in ``log_path``; stopped on exit."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, *arguments], cwd=PROJECT_ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


# One process and no neighbour handshakes: the quickest worker to start. PRODUCTION_POOL runs as
# docs/operations.md starts workers: two pool processes, gossip and mingle on.
SOLO_POOL = ("--pool=solo", "--concurrency=1", "--without-gossip", "--without-mingle")
PRODUCTION_POOL = ("--pool=prefork", "--concurrency=2")


@contextmanager
def celery_worker(*, queues: str, name: str, env: dict, log_path: Path,
                  pool: tuple[str, ...] = SOLO_POOL) -> Iterator[tuple[subprocess.Popen, Path]]:
    """A real `celery worker` consuming ``queues`` through Redis; the test's Redis database starts and ends empty."""
    broker_url = settings.CELERY_BROKER_URL
    assert broker_url.startswith("redis://"), "the end-to-end tests run against Redis"
    redis.Redis.from_url(broker_url).flushdb()
    try:
        with portal_process(["-m", "celery", "-A", "cxr_portal", "worker", "-Q", queues, *pool,
                             "--loglevel=INFO", "-n", f"{name}-{os.getpid()}@%h"],
                            env=env, log_path=log_path) as process:
            yield process, log_path
    finally:
        redis.Redis.from_url(broker_url).flushdb()


def wait_until(condition: Callable[[], bool], *, what: str, worker: tuple[subprocess.Popen, Path],
               timeout: float) -> None:
    """Poll ``condition`` until it holds; fail with the worker's log if the worker exits or time runs out."""
    process, log_path = worker
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            pytest.fail(f"worker exited early:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.5)
    pytest.fail(f"{what} did not happen within {timeout}s:\n{log_path.read_text()[-4000:]}")

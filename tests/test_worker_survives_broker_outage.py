"""Redis dies while a worker holds a task; once Redis is back, the same worker consumes again.

A private redis-server on a free loopback port plays the broker, so the shared one is never touched. The
worker runs as in docker-compose.yml (prefork, gossip, mingle and remote control on): without
cxr_portal/kombu_patch.py, celery 5.7.0 dies here with "AttributeError: 'NoneType' object has no attribute
'hostname'".
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
from django.db import connection, transaction
from django.utils import timezone

from cxr_portal.celery import app as celery_app
from diagnosis.models import Study, StudyStatus
from diagnosis.services.inference import study_enqueue
from diagnosis.tasks import run_inference
from tests import images

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BOUND_SECONDS = 90


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_redis(port: int, workdir: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip()
               == b"PONG", what="redis to answer", seconds=10)
    return process


def wait_until(condition, *, what: str, seconds: float = BOUND_SECONDS, log: Path | None = None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    tail = log.read_text()[-4000:] if log else ""
    pytest.fail(f"gave up waiting for {what} after {seconds}s\n{tail}")


def new_study(clinician, patient, accession: str) -> Study:
    """A stored study whose bell has not rung yet: the test rings it when it is ready."""
    from diagnosis.services.ingest import study_create

    with mock.patch.object(run_inference, "delay"):
        return study_create(patient=patient, uploaded_by=clinician, accession_number=accession,
                            data=images.png_bytes(images.gradient(seed=len(accession))))


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_worker_consumes_again_after_the_broker_dies_while_it_holds_a_task(
    clinician, patient, tiny_model_dir, image_store, tmp_path
):
    from diagnosis.services.model_registry import model_version_register

    model_version_register(artifact_dir=tiny_model_dir, activate=True)
    port = free_loopback_port()
    broker_url = f"redis://127.0.0.1:{port}/0"
    redis_process = start_redis(port, tmp_path)
    original_broker = celery_app.conf.broker_url
    celery_app.conf.broker_url = broker_url
    celery_app._after_fork()

    database = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "cxr_portal.settings.test",
        "DATABASE_URL": f"postgres://{database['USER']}:{database['PASSWORD'] or ''}@{database['HOST'] or '127.0.0.1'}:"
                        f"{database['PORT'] or 5432}/{database['NAME']}",
        "CELERY_BROKER_URL": broker_url,
        "CXR_IMAGE_STORE_DIR": str(image_store),
        "CUDA_VISIBLE_DEVICES": "",
    }
    log_path = tmp_path / "worker.log"
    log = open(log_path, "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "cxr_portal", "worker", "-Q", "inference,default", "--concurrency=2",
         "--loglevel=INFO", "-n", f"outage-{os.getpid()}@%h"],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: b" ready." in log_path.read_bytes(), what="the worker to start", log=log_path)
        held = new_study(clinician, patient, "OUTAGE-HELD")
        with transaction.atomic():
            # Lock the study's row: the worker's claim blocks on it, so the worker holds the task (unacked).
            Study.objects.select_for_update().get(id=held.id)
            study_enqueue(study_id=held.id)
            wait_until(lambda: b"Task diagnosis.run_inference" in log_path.read_bytes(), what="the task to arrive",
                       log=log_path)
            time.sleep(1)
            redis_process.send_signal(signal.SIGKILL)
            redis_process.wait(timeout=10)
            time.sleep(3)
            assert worker.poll() is None, log_path.read_text()[-4000:]
            redis_process = start_redis(port, tmp_path)
        outage_ended = timezone.now()

        wait_until(lambda: Study.objects.get(id=held.id).status == StudyStatus.COMPLETED,
                   what="the held study to complete", log=log_path)
        after = new_study(clinician, patient, "OUTAGE-AFTER")
        study_enqueue(study_id=after.id)
        wait_until(lambda: worker.poll() is not None or Study.objects.get(id=after.id).status == StudyStatus.COMPLETED,
                   what="a study sent after the outage to complete", log=log_path)
        assert worker.poll() is None, f"the worker died:\n{log_path.read_text()[-4000:]}"
        assert "Unrecoverable error" not in log_path.read_text()
        assert (Study.objects.get(id=after.id).completed_at - outage_ended).total_seconds() < BOUND_SECONDS
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
        redis_process.kill()
        redis_process.wait(timeout=10)
        celery_app.conf.broker_url = original_broker
        celery_app._after_fork()

"""A pool process killed while its worker starts is replaced; the worker goes on to consume.

The worker runs as production runs it (prefork, two pool processes, mingle on), so it spends a second or more
between starting its pool and entering its event loop. Without cxr_portal/pool_start_patch.py, a pool process
killed in that second makes celery 5.7.0 stop the whole worker with "Unrecoverable error:
WorkerLostError('Could not start worker processes')" (18 of 20 tries killed 0.2-3 s after start).
"""

import os
import signal
import subprocess
import time

import pytest

from diagnosis.models import Study, StudyStatus
from diagnosis.services.inference import study_enqueue
from tests.portal_processes import PRODUCTION_POOL, celery_worker, portal_environment, wait_until
from tests.test_worker_survives_broker_outage import new_study

BOUND_SECONDS = 50


def pool_processes(worker: subprocess.Popen) -> list[int]:
    listed = subprocess.run(["ps", "--ppid", str(worker.pid), "-o", "pid="], capture_output=True, text=True)
    return [int(pid) for pid in listed.stdout.split()]


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_worker_consumes_after_a_pool_process_is_killed_while_it_starts(
    clinician, patient, tiny_model_dir, image_store, tmp_path
):
    from diagnosis.services.model_registry import model_version_register

    model_version_register(artifact_dir=tiny_model_dir, activate=True)
    started = time.monotonic()
    with celery_worker(queues="inference,default", name="pool-kill", env=portal_environment(image_store),
                       log_path=tmp_path / "worker.log", pool=PRODUCTION_POOL) as worker:
        process, log_path = worker
        wait_until(lambda: bool(pool_processes(process)), what="the pool to start", worker=worker,
                   timeout=BOUND_SECONDS)
        # Killed before the worker says it is ready, that is before its event loop starts (mingle alone waits
        # a second); later kills were always survived.
        assert b" ready." not in log_path.read_bytes(), "the worker started too fast to test the window"
        os.kill(pool_processes(process)[0], signal.SIGKILL)

        wait_until(lambda: b" ready." in log_path.read_bytes(), what="the worker to be ready", worker=worker,
                   timeout=BOUND_SECONDS)
        study = new_study(clinician, patient, "POOL-KILLED-AT-START")
        study_enqueue(study_id=study.id)
        wait_until(lambda: Study.objects.get(id=study.id).status == StudyStatus.COMPLETED,
                   what="a study sent after the kill to complete", worker=worker, timeout=BOUND_SECONDS)

        log = log_path.read_text()
        assert "exited with 'signal 9 (SIGKILL)'" in log
        assert "Could not start worker processes" not in log
        assert len(pool_processes(process)) == 2, log[-4000:]
    assert time.monotonic() - started < 60

"""Fault drills against the production processes (bench/stack.py): nothing acknowledged is lost, nothing 500s.

    .venv/bin/python bench/faults.py workers    # (a) kill a pool process 10x and the worker's main process 3x
    .venv/bin/python bench/faults.py redis      # (b) kill Redis for 10 s during an upload burst
    .venv/bin/python bench/faults.py postgres   # (c) restart PostgreSQL during an upload burst

Each uses its own PostgreSQL and Redis on free loopback ports, is bounded in time, and prints a table: every
upload answered 2xx has its row, its stored image, a completed status and exactly one prediction; how many
answers were 5xx (500 must be 0; 503 with Retry-After is the promised answer while PostgreSQL is down); and the
time from the fault's end until the last study completed. Clients behave as the API asks: each upload carries
an Idempotency-Key and is retried on a connection error or a 503, so a retry never duplicates a study.
"""

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import Stack, film_png, wait_until  # noqa: E402

RESULT_BOUND_SECONDS = 180


class Uploader:
    def __init__(self, stack: Stack, token: str, patient_id: int):
        self.stack, self.token, self.patient_id = stack, token, patient_id
        self.statuses: Counter = Counter()
        self.acknowledged: dict[str, int] = {}  # idempotency key -> study id
        self.lock = threading.Lock()

    def upload(self, number: int, *, give_up_after: float = 120) -> None:
        key = f"fault-{uuid.uuid4().hex}"
        data = film_png(256, seed=number)
        deadline = time.monotonic() + give_up_after
        while time.monotonic() < deadline:
            try:
                response = requests.post(
                    f"{self.stack.base_url}/api/studies/",
                    headers={"Authorization": f"Token {self.token}", "Idempotency-Key": key},
                    data={"patient": self.patient_id}, files={"file": (f"film-{number}.png", data)}, timeout=30,
                )
            except requests.RequestException:
                with self.lock:
                    self.statuses["connection error"] += 1
                time.sleep(0.5)
                continue
            with self.lock:
                self.statuses[response.status_code] += 1
            if response.status_code in (200, 201):
                with self.lock:
                    self.acknowledged[key] = response.json()["id"]
                return
            if response.status_code == 503:
                time.sleep(float(response.headers.get("Retry-After", "1")) / 5)
                continue
            return  # any other answer is final: counted, not retried

    def burst(self, count: int, *, per_second: float, threads: int = 8) -> None:
        with ThreadPoolExecutor(threads) as pool:
            for number in range(count):
                pool.submit(self.upload, number)
                time.sleep(1 / per_second)


def verify(stack: Stack, uploader: Uploader, *, fault_ended: float, started: float) -> dict:
    study_ids = sorted(set(uploader.acknowledged.values()))
    id_list = ",".join(map(str, study_ids)) or "0"

    def all_done():
        pending = stack.postgres.psql(
            "cxr", f"SELECT count(*) FROM diagnosis_study WHERE id IN ({id_list}) AND status <> 'completed'")
        return int(pending) == 0

    try:
        wait_until(all_done, seconds=RESULT_BOUND_SECONDS, what="every acknowledged study to complete", interval=1)
    except TimeoutError as error:
        print(error)
    last_completed = float(stack.postgres.psql(
        "cxr", f"SELECT coalesce(extract(epoch from max(completed_at)), 0) FROM diagnosis_study WHERE id IN ({id_list})"))
    rows = stack.postgres.psql("cxr", f"""
        SELECT s.id, s.status, i.sha256, (SELECT count(*) FROM diagnosis_prediction p WHERE p.study_id = s.id)
        FROM diagnosis_study s JOIN diagnosis_storedimage i ON i.id = s.image_id WHERE s.id IN ({id_list})""")
    found = [line.split("|") for line in rows.splitlines() if line]
    images = stack.folder / "images"
    with_image = sum((images / sha[:2] / f"{sha}.original").is_file() for _, _, sha, _ in found)
    total_rows = int(stack.postgres.psql("cxr", "SELECT count(*) FROM diagnosis_study"))
    return {
        "acknowledged (2xx)": len(study_ids),
        "rows found": len(found),
        "stored images": with_image,
        "completed": sum(status == "completed" for _, status, _, _ in found),
        "exactly one prediction": sum(count == "1" for _, _, _, count in found),
        "studies in database (duplicates if > acknowledged)": total_rows,
        "HTTP 500 answers": uploader.statuses.get(500, 0),
        "answers": dict(uploader.statuses),
        "last result after fault ended (s)": round(last_completed - fault_ended, 1) if last_completed else None,
        "drill duration (s)": round(time.time() - started, 1),
    }


def worker_pids(stack: Stack) -> tuple[int, list[int]]:
    main = stack.processes["worker-inference"].pid
    children = subprocess.run(["pgrep", "-P", str(main)], capture_output=True, text=True).stdout.split()
    return main, [int(pid) for pid in children]


def drill_workers(stack: Stack, uploader: Uploader) -> float:
    """(a) 50 studies; a pool process killed 10 times, the worker's main process 3 times (restarted as compose)."""
    burst = threading.Thread(target=uploader.burst, args=(50,), kwargs={"per_second": 2.0})
    burst.start()
    for round_number in range(13):
        time.sleep(2)
        main, children = worker_pids(stack)
        if round_number % 4 == 3:
            # The main process dies: compose (restart: unless-stopped) or systemd starts it again.
            os.killpg(main, signal.SIGKILL)
            print(f"killed the worker's main process {main} (and its pool)", flush=True)
            stack.processes["worker-inference"].wait()
            time.sleep(1)
            stack.start_service("worker-inference")
        elif children:
            os.kill(children[0], signal.SIGKILL)
            print(f"killed pool process {children[0]}", flush=True)
    burst.join()
    return time.time()


def drill_redis(stack: Stack, uploader: Uploader) -> float:
    """(b) Redis killed for 10 s in the middle of a burst of 60 uploads at 3/s."""
    burst = threading.Thread(target=uploader.burst, args=(60,), kwargs={"per_second": 3.0})
    burst.start()
    time.sleep(5)
    stack.redis.kill()
    time.sleep(10)
    stack.redis.start()
    fault_ended = time.time()
    burst.join()
    return fault_ended


def drill_postgres(stack: Stack, uploader: Uploader) -> float:
    """(c) PostgreSQL stopped (fast) and started again 5 s later in the middle of a burst of 60 uploads."""
    burst = threading.Thread(target=uploader.burst, args=(60,), kwargs={"per_second": 3.0})
    burst.start()
    time.sleep(5)
    stack.postgres.stop("fast")
    time.sleep(5)
    stack.postgres.start()
    fault_ended = time.time()
    burst.join()
    return fault_ended


DRILLS = {"workers": drill_workers, "redis": drill_redis, "postgres": drill_postgres}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("drill", choices=sorted(DRILLS))
    arguments = parser.parse_args()
    stack = Stack()
    started = time.time()
    try:
        stack.up()
        token, patient_id = stack.provision_clinician()
        uploader = Uploader(stack, token, patient_id)
        fault_ended = DRILLS[arguments.drill](stack, uploader)
        report = verify(stack, uploader, fault_ended=fault_ended, started=started)
    finally:
        stack.down()
    print(f"\nfault drill: {arguments.drill} (logs in {stack.folder})")
    for name, value in report.items():
        print(f"  {name:52s} {value}")
    ok = (report["HTTP 500 answers"] == 0 and report["acknowledged (2xx)"] == report["rows found"]
          == report["stored images"] == report["completed"] == report["exactly one prediction"]
          == report["studies in database (duplicates if > acknowledged)"])
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

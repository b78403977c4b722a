"""Load on the production processes (bench/stack.py): uploads at fixed rates, then 50 clinicians reading.

    .venv/bin/python bench/load.py                       # 1, 5, 20 uploads/s x 1 and 2 inference processes x 512 px
                                                         # and 2000x2000 16-bit PNGs, then 50 users on pages and API
    .venv/bin/python bench/load.py --rates 5 --processes 2 --films 2000 --seconds 20

Prints, per configuration: upload request p50/p95, upload -> stored prediction p50/p95 (server clock:
created_at -> completed_at), sustained studies/s (completed / time from first upload to last result). Then
page (/worklist/, /studies/<id>/) and GET /api/studies/ p50/p95/p99 with 50 concurrent logged-in users.
A bounded client of its own (threads and requests), so nothing else needs installing. Shares the CPU with
everything else on the machine: compare configurations side by side, not with another machine's numbers.
"""

import argparse
from collections import Counter
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import Stack, cpu_seconds, film_png  # noqa: E402

DRAIN_BOUND_SECONDS = 240


def percentile(values, share):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


DEV_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cxr"
DEV_SPLIT = Path(__file__).resolve().parent.parent / "ml" / "artifacts" / "dev_split.json"


def films(side: int, count: int, *, source: str) -> list[bytes]:
    """``count`` distinct films: synthetic (a gradient plus noise; the model calls every one COVID-19, so each
    raises an alert: the costliest path) or development films the model never trained on (val and test
    splits of ../shared/data/cxr, read at run time, never stored in the repository). 2000 px films are
    16-bit; development films are scaled up to that size (bicubic) the way a detector's film would come."""
    if source == "synthetic":
        return [film_png(2000, bits=16, seed=seed) if side == 2000 else film_png(side, seed=seed)
                for seed in range(count)]
    import io
    import json

    import numpy as np
    from PIL import Image

    split = json.loads(DEV_SPLIT.read_text())
    paths = [DEV_DATA / name for name in split["test"] + split["val"]][:count]
    if side != 2000:
        return [path.read_bytes() for path in paths]
    scaled = []
    for path in paths:
        film = Image.open(path).convert("F")
        factor = 2000 / max(film.size)
        film = film.resize((round(film.width * factor), round(film.height * factor)), Image.Resampling.BICUBIC)
        levels = np.clip(np.asarray(film) / 255.0 * 65535.0, 0, 65535).astype(np.uint16)
        buffer = io.BytesIO()
        Image.fromarray(levels).save(buffer, format="PNG")
        scaled.append(buffer.getvalue())
    return scaled


def upload_run(stack: Stack, token: str, patient_id: int, *, rate: float, seconds: float, film_bytes: list[bytes]):
    latencies, study_ids, errors = [], [], []
    lock = threading.Lock()

    def one(number):
        started = time.perf_counter()
        try:
            response = requests.post(f"{stack.base_url}/api/studies/", headers={"Authorization": f"Token {token}"},
                                     data={"patient": patient_id},
                                     files={"file": (f"f{number}.png", film_bytes[number % len(film_bytes)])},
                                     timeout=120)
            elapsed = time.perf_counter() - started
            with lock:
                if response.status_code == 201:
                    latencies.append(elapsed)
                    study_ids.append(response.json()["id"])
                else:
                    errors.append(response.status_code)
        except requests.RequestException as error:
            with lock:
                errors.append(type(error).__name__)

    count = max(1, int(rate * seconds))
    cpu_before = cpu_seconds(stack)
    first = time.time()
    with ThreadPoolExecutor(min(64, count)) as pool:
        for number in range(count):
            pool.submit(one, number)
            time.sleep(1 / rate)
    id_list = ",".join(map(str, study_ids)) or "0"
    deadline = time.monotonic() + DRAIN_BOUND_SECONDS
    while time.monotonic() < deadline:
        pending = int(stack.postgres.psql("cxr", f"SELECT count(*) FROM diagnosis_study WHERE id IN ({id_list}) "
                                                 "AND status NOT IN ('completed', 'failed')"))
        if pending == 0:
            break
        time.sleep(1)
    rows = stack.postgres.psql("cxr", "SELECT extract(epoch from completed_at - created_at), "
                                      "extract(epoch from completed_at), extract(epoch from started_at - created_at) "
                                      f"FROM diagnosis_study WHERE id IN ({id_list}) AND status = 'completed'")
    waits, finished, queued = [], [], []
    for line in rows.splitlines():
        wait, completed, waited = line.split("|")
        waits.append(float(wait))
        finished.append(float(completed))
        queued.append(float(waited))  # upload stored -> a worker took it (the rest is the worker's own time)
    sustained = len(finished) / (max(finished) - first) if finished else 0.0
    cpu_after = cpu_seconds(stack)
    cpu_per_study = {name: 1000 * (cpu_after[name] - cpu_before.get(name, 0.0)) / max(1, len(finished))
                     for name in cpu_after}
    return {
        "uploads": count, "2xx": len(study_ids), "errors": len(errors),
        "error kinds": dict(Counter(errors)),
        "upload p50": percentile(latencies, 0.5), "upload p95": percentile(latencies, 0.95),
        "result p50": percentile(waits, 0.5), "result p95": percentile(waits, 0.95),
        "queued p50": percentile(queued, 0.5), "queued p95": percentile(queued, 0.95),
        "studies/s": sustained, "completed": len(finished),
        "cpu ms/study": " ".join(f"{name}={value:.0f}" for name, value in cpu_per_study.items())
                        + f" total={sum(cpu_per_study.values()):.0f}",
    }


def readers(stack: Stack, *, users: int, seconds: float, think_seconds: float = 0.0) -> dict[str, list[float]]:
    """users clinicians, each signed in (session) and with a token, reading pages and the API in a loop.

    With think_seconds 0 each user sends the next request as soon as the last one answers (a closed loop: the
    machine's saturation). Otherwise each pauses a random time, think_seconds on average (exponential), between
    requests, as a clinician reading a film does.
    """
    import random

    pause = random.Random(0)
    study_id = stack.postgres.psql("cxr", "SELECT max(id) FROM diagnosis_study WHERE status = 'completed'").strip()
    # Signed in the way Django's test client does it (a session row per user), and a token each for the API.
    script = (
        "from django.test import Client; from accounts.models import Role, User;"
        "from rest_framework.authtoken.models import Token;"
        "role = Role.objects.get(name='clinician');\n"
        f"for number in range({users}):\n"
        "    user, _ = User.objects.get_or_create(username=f'reader{number:02d}', defaults={'role': role});"
        " user.role = role; user.save(); client = Client(); client.force_login(user);"
        " print(Token.objects.get_or_create(user=user)[0].key, client.cookies['sessionid'].value)\n"
    )
    credentials = [line.split() for line in stack.manage("shell", "-c", script).splitlines()
                   if len(line.split()) == 2 and len(line.split()[0]) == 40]  # token (40 hex) and session id
    assert len(credentials) == users, credentials
    timings: dict[str, list[float]] = {"worklist page": [], "study page": [], "GET /api/studies/": []}
    failures = {name: 0 for name in timings}
    failure_kinds: Counter = Counter()
    settings_session_cookie = stack.manage("shell", "-c", "from django.conf import settings; "
                                           "print(settings.SESSION_COOKIE_NAME)").split()[-1]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def user(number: int):
        token, session_id = credentials[number]
        session = requests.Session()
        # Production marks the cookie Secure, so a cookie jar would not send it over this loopback HTTP.
        session.headers["Cookie"] = f"{settings_session_cookie}={session_id}"
        if think_seconds:  # clinicians do not all open the worklist in the same millisecond
            time.sleep(pause.uniform(0, 2 * think_seconds))
        while time.monotonic() < stop:
            for name, call in (
                ("worklist page", lambda: session.get(f"{stack.base_url}/worklist/", timeout=60,
                                                      allow_redirects=False)),
                ("study page", lambda: session.get(f"{stack.base_url}/studies/{study_id}/", timeout=60,
                                                   allow_redirects=False)),
                ("GET /api/studies/", lambda: requests.get(f"{stack.base_url}/api/studies/", timeout=60,
                                                           headers={"Authorization": f"Token {token}"})),
            ):
                started = time.perf_counter()
                try:
                    status = call().status_code
                except requests.RequestException:
                    status = "connection error"
                elapsed = time.perf_counter() - started
                if think_seconds:
                    time.sleep(min(pause.expovariate(1 / think_seconds), 10 * think_seconds))
                with lock:
                    if status == 200:
                        timings[name].append(elapsed)
                    else:
                        failures[name] += 1
                        failure_kinds[status] += 1

    with ThreadPoolExecutor(users) as pool:
        list(pool.map(user, range(users)))
    if failure_kinds:
        print(f"failed reads: {dict(failure_kinds)}")
    return timings, failures


def print_statements(stack: Stack, limit: int, *, per: int):
    """The statements PostgreSQL spent most time on since the last call (pg_stat_statements), per study."""
    rows = stack.postgres.psql("cxr", "SELECT round((total_exec_time + total_plan_time)::numeric / %d, 3), "
                                      "round(calls::numeric / %d, 2), left(regexp_replace(query, '\\s+', ' ', 'g'), 110) "
                                      "FROM pg_stat_statements ORDER BY total_exec_time + total_plan_time DESC LIMIT %d"
                               % (per, per, limit))
    print("   ms/study  calls/study  statement")
    for line in rows.splitlines():
        milliseconds, calls, query = line.split("|", 2)
        print(f"   {milliseconds:>8}  {calls:>11}  {query}")
    stack.postgres.psql("cxr", "SELECT pg_stat_statements_reset()")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[1, 5, 20])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--films", type=int, nargs="+", default=[512, 2000])
    parser.add_argument("--seconds", type=float, default=15, help="upload phase per configuration")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--read-seconds", type=float, default=30)
    parser.add_argument("--think-seconds", type=float, nargs="+", default=[0.0],
                        help="readers' mean pause between requests; 0 = back to back (closed loop). Several values "
                             "run one reading phase each")
    parser.add_argument("--film-source", choices=["synthetic", "dev"], default="synthetic",
                        help="synthetic films (each raises an alert), or unseen development films from "
                             "../shared/data/cxr (a real mix of answers and alerts)")
    parser.add_argument("--statements", type=int, default=0, metavar="N",
                        help="after each upload run, print the N statements PostgreSQL spent most time on")
    arguments = parser.parse_args()
    # Distinct films for every 512 px upload (a repeated film would skip its storage write); 2000 px films are
    # costly to make, so 24 of them go round.
    uploads = int(max(arguments.rates) * arguments.seconds)
    film_sets = {side: films(side, 24 if side == 2000 else uploads, source=arguments.film_source)
                 for side in arguments.films}
    rows = []
    for processes in arguments.processes:
        stack = Stack(inference_concurrency=processes, statement_stats=bool(arguments.statements))
        try:
            stack.up()
            token, patient_id = stack.provision_clinician()
            for side in arguments.films:
                for rate in arguments.rates:
                    result = upload_run(stack, token, patient_id, rate=rate, seconds=arguments.seconds,
                                        film_bytes=film_sets[side])
                    rows.append((processes, side, rate, result))
                    if arguments.statements:
                        print_statements(stack, arguments.statements, per=max(1, result["completed"]))
                    print(f"{processes} proc {side:>4} px {rate:>4.0f}/s: " + ", ".join(
                        f"{key} {value:.2f}" if isinstance(value, float) else f"{key} {value}"
                        for key, value in result.items()), flush=True)
            if processes == arguments.processes[-1] and arguments.users:
                reads = [(think, *readers(stack, users=arguments.users, seconds=arguments.read_seconds,
                                          think_seconds=think)) for think in arguments.think_seconds]
        finally:
            stack.down()
    print("\nprocs  film        rate/s  uploads  2xx  upload p50  upload p95  result p50  result p95  studies/s")
    for processes, side, rate, result in rows:
        film = "512 px 8-bit" if side == 512 else f"{side}² 16-bit"
        print(f"{processes:>5}  {film:<12}{rate:>6.0f}  {result['uploads']:>7}  {result['2xx']:>3}"
              f"  {result['upload p50']:>9.2f}s  {result['upload p95']:>9.2f}s  {result['result p50']:>9.2f}s"
              f"  {result['result p95']:>9.2f}s  {result['studies/s']:>9.2f}")
    for think, timings, failures in reads if arguments.users else []:
        pace = "back to back" if not think else f"pausing {think:g} s on average between requests"
        print(f"\n{arguments.users} logged-in users for {arguments.read_seconds:.0f} s, {pace} "
              f"({arguments.processes[-1]} inference processes idle):")
        print("request               count  failed     p50      p95      p99    requests/s")
        for name, values in timings.items():
            print(f"{name:<20}{len(values):>6}  {failures[name]:>6}  {percentile(values, .5) * 1000:>6.0f}ms"
                  f" {percentile(values, .95) * 1000:>6.0f}ms {percentile(values, .99) * 1000:>6.0f}ms"
                  f"  {len(values) / arguments.read_seconds:>8.1f}")


if __name__ == "__main__":
    sys.exit(main())

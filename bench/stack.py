"""The production processes of docker-compose.yml on this machine, against a private PostgreSQL and Redis.

    .venv/bin/python bench/stack.py            # start everything, upload one film, wait for its result, stop

There is no image registry here, so instead of containers this runs the very commands the compose file gives
(migrate, web from the Dockerfile's web CMD, worker-inference, worker-default, scheduler), read from
docker-compose.yml and Dockerfile each time, so the two cannot drift apart. Only what a single machine needs
is rewritten: ports (loopback only), the beat schedule file, and the environment. PostgreSQL (initdb into a
temporary folder, roles as deploy/postgres/init-roles.sh creates them) and Redis (append-only, noeviction,
as in compose) are private instances on other ports; nothing shared is touched. The fault and load scripts
(bench/faults.py, bench/load.py) build on this.
"""

import base64
import glob
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
PG_BIN = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1])
SERVICES = ("web", "worker-inference", "worker-default", "scheduler")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, *, seconds: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(interval)
    raise TimeoutError(f"gave up waiting for {what} after {seconds}s")


def compose_commands() -> dict[str, list[str]]:
    """Each service's command as docker-compose.yml (or, for web, the Dockerfile's web target) says."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    commands = {name: service.get("command") for name, service in compose["services"].items()}
    stage = None
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            stage = line.split()[-1]
        elif line.startswith("CMD ") and stage == "web":
            commands["web"] = json.loads(line[4:])
    return commands


class Postgres:
    def __init__(self, folder: Path, port: int, *, statement_stats: bool = False):
        self.folder, self.port = folder / "postgres", port
        self.data = self.folder / "data"
        # pg_stat_statements: which statements the run's PostgreSQL time went to (bench/load.py --statements).
        self.statement_stats = statement_stats
        # PostgreSQL refuses to run as root: run its programs as the postgres system user then.
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def init(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.as_owner:
            shutil.chown(self.folder, "postgres", "postgres")
        subprocess.run([*self.as_owner, PG_BIN / "initdb", "-D", self.data, "-U", "postgres", "-A", "trust"],
                       check=True, capture_output=True)
        self.start()
        self.psql("postgres", "CREATE ROLE cxr_owner LOGIN; CREATE ROLE cxr_app LOGIN NOSUPERUSER NOCREATEDB;")
        self.psql("postgres", "CREATE DATABASE cxr OWNER cxr_owner")  # not inside a transaction
        self.psql("cxr", "ALTER SCHEMA public OWNER TO cxr_owner; REVOKE CREATE ON SCHEMA public FROM PUBLIC;"
                         "GRANT CONNECT ON DATABASE cxr TO cxr_app; GRANT USAGE ON SCHEMA public TO cxr_app;")
        if self.statement_stats:
            self.psql("cxr", "CREATE EXTENSION pg_stat_statements")

    def psql(self, database: str, sql: str) -> str:
        return subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
                               "-v", "ON_ERROR_STOP=1", "-qAtc", sql], check=True, capture_output=True,
                              text=True).stdout

    def start(self):
        subprocess.run([*self.as_owner, PG_BIN / "pg_ctl", "-D", self.data, "-l", self.folder / "postgres.log", "-w",
                        "start", "-o",
                        f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c max_connections=200"
                        + (" -c shared_preload_libraries=pg_stat_statements" if self.statement_stats else "")],
                       check=True, capture_output=True)

    def stop(self, mode: str = "fast"):
        subprocess.run([*self.as_owner, PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop"],
                       capture_output=True)

    def url(self, role: str, database: str = "cxr") -> str:
        return f"postgres://{role}@127.0.0.1:{self.port}/{database}"


class Redis:
    """As in compose: append-only persistence and noeviction (a full Redis refuses writes, never drops tasks)."""

    def __init__(self, folder: Path, port: int):
        self.folder, self.port = folder, port
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--maxmemory-policy", "noeviction", "--save", ""],
            stdout=open(self.folder / "redis.log", "ab"), stderr=subprocess.STDOUT,
        )
        wait_until(lambda: subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True)
                   .stdout.strip() == b"PONG", seconds=10, what="redis")

    def kill(self):
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class Stack:
    def __init__(self, folder: Path | None = None, *, inference_concurrency: int | None = None,
                 web_workers: int | None = None, extra_env: dict | None = None, statement_stats: bool = False):
        self.folder = folder or Path(tempfile.mkdtemp(prefix="cxr-stack-"))
        self.folder.chmod(0o755)  # the postgres user reaches its data folder through it
        self.postgres = Postgres(self.folder, free_port(), statement_stats=statement_stats)
        self.redis = Redis(self.folder, free_port())
        self.web_port = free_port()
        self.processes: dict[str, subprocess.Popen] = {}
        self.commands = compose_commands()
        self.inference_concurrency = inference_concurrency
        self.web_workers = web_workers
        (self.folder / "images").mkdir(exist_ok=True)
        self.env = {
            **os.environ,
            "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
            "DJANGO_SETTINGS_MODULE": "cxr_portal.settings.production",
            "DJANGO_SECRET_KEY": "bench-" + base64.b64encode(os.urandom(24)).decode(),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_SECURE_SSL_REDIRECT": "false",
            "DATABASE_URL": self.postgres.url("cxr_app"),
            "CELERY_BROKER_URL": self.redis.url(),
            "CXR_IMAGE_STORE_DIR": str(self.folder / "images"),
            "CXR_STORAGE_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "CXR_AUDIT_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "CXR_AUDIT_ANCHOR_FILE": str(self.folder / "anchors.jsonl"),
            "CXR_UPLOAD_RATE_LIMIT": "100000",
            "DJANGO_STATIC_ROOT": str(self.folder / "static"),
            "CUDA_VISIBLE_DEVICES": "",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            **(extra_env or {}),
        }

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def command(self, service: str) -> list[str]:
        command = list(self.commands[service])
        if service == "web":
            command[command.index("--bind") + 1] = f"127.0.0.1:{self.web_port}"
            if self.web_workers:
                command[command.index("--workers") + 1] = str(self.web_workers)
        if service == "scheduler":
            command[command.index("--schedule") + 1] = str(self.folder / "celerybeat-schedule")
        if service == "worker-inference" and self.inference_concurrency:
            command = [part for part in command if not part.startswith("--concurrency")]
            command.append(f"--concurrency={self.inference_concurrency}")
        if service.startswith("worker-"):
            command += ["-n", f"{service}@%h"]
        return command

    def migrate(self):
        env = {**self.env, "DATABASE_URL": self.postgres.url("cxr_owner")}
        subprocess.run(self.commands["migrate"], cwd=ROOT, env=env, check=True,
                       stdout=open(self.folder / "migrate.log", "ab"), stderr=subprocess.STDOUT)

    def start_service(self, service: str):
        log = open(self.folder / f"{service}.log", "ab")
        self.processes[service] = subprocess.Popen(self.command(service), cwd=ROOT, env=self.env, stdout=log,
                                                   stderr=subprocess.STDOUT, start_new_session=True)

    def stop_service(self, service: str, sig=signal.SIGTERM, timeout: float = 30):
        process = self.processes.get(service)
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def up(self, services=SERVICES, *, ready_seconds: float = 180):
        self.postgres.init()
        self.redis.start()
        # The Dockerfile's web target runs collectstatic at build time; production serves the manifest it writes.
        subprocess.run([str(VENV_BIN / "python"), "manage.py", "collectstatic", "--noinput"], cwd=ROOT, env=self.env,
                       check=True, capture_output=True)
        self.migrate()
        for service in services:
            self.start_service(service)
        import requests

        wait_until(lambda: requests.get(f"{self.base_url}/health/ready", timeout=5).status_code == 200,
                   seconds=ready_seconds, what="/health/ready", interval=1)

    def down(self):
        for service in list(self.processes):
            self.stop_service(service, timeout=15)
        self.redis.kill()
        self.postgres.stop("immediate")

    def manage(self, *arguments: str, stdin: str | None = None) -> str:
        return subprocess.run([str(VENV_BIN / "python"), "manage.py", *arguments], cwd=ROOT, env=self.env,
                              input=stdin, capture_output=True, text=True, check=True).stdout

    def provision_clinician(self, username: str = "bench_clinician") -> tuple[str, int]:
        """A clinician's API token and a patient to upload for."""
        script = (
            "from accounts.models import Role, User; from rest_framework.authtoken.models import Token;"
            "from diagnosis.models import Patient;"
            f"user, _ = User.objects.get_or_create(username={username!r});"
            "user.role = Role.objects.get(name='clinician'); user.set_password('bench-password-123'); user.save();"
            "token, _ = Token.objects.get_or_create(user=user);"
            "patient, _ = Patient.objects.get_or_create(mrn='BENCH-1', defaults={'name': 'Bench Patient'});"
            "print(token.key, patient.id)"
        )
        key, patient_id = self.manage("shell", "-c", script).split()[-2:]
        return key, int(patient_id)


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields after "pid (comm)": state is [0], ppid [1], pgrp [2]


def _ticks(fields: list[str], *, reaped: bool) -> int:
    # utime, stime (fields 14, 15 of stat; [11], [12] here) and, for reaped children, cutime, cstime ([13], [14])
    return int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if reaped else 0)


def cpu_seconds(stack: "Stack") -> dict[str, float]:
    """CPU seconds so far of each service (its process group), PostgreSQL (postmaster, backends and the backends
    it reaped), Redis and this client. Differences of two readings say where a run's CPU time went."""
    hertz = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _proc_stat(int(entry.name))) is not None:
            stats[int(entry.name)] = fields
    totals: dict[str, float] = {}
    for service, process in stack.processes.items():
        totals[service] = sum(_ticks(f, reaped=pid == process.pid) for pid, f in stats.items()
                              if int(f[2]) == process.pid) / hertz
    postmaster_file = stack.postgres.data / "postmaster.pid"
    if postmaster_file.exists():
        postmaster = int(postmaster_file.read_text().split()[0])
        totals["postgres"] = sum(_ticks(f, reaped=pid == postmaster) for pid, f in stats.items()
                                 if pid == postmaster or int(f[1]) == postmaster) / hertz
    if stack.redis.process is not None and stack.redis.process.pid in stats:
        totals["redis"] = _ticks(stats[stack.redis.process.pid], reaped=False) / hertz
    own = os.times()
    totals["load client"] = own.user + own.system
    return totals


def film_png(side: int | tuple[int, int], *, bits: int = 8, seed: int = 0) -> bytes:
    """A synthetic chest-film-like PNG (a smooth gradient plus noise): unique bytes for every seed."""
    import io

    from PIL import Image

    height, width = (side, side) if isinstance(side, int) else side
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 0.5 + 0.3 * np.sin(x / width * 3.1) * np.cos(y / height * 2.7) + rng.normal(0, 0.05, (height, width))
    base = np.clip(base, 0, 1)
    buffer = io.BytesIO()
    if bits == 16:
        Image.fromarray((base * 65535).astype(np.uint16)).save(buffer, format="PNG")
    else:
        Image.fromarray((base * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def main():
    import requests

    stack = Stack()
    print(f"stack folder: {stack.folder}")
    for service in SERVICES:
        print(f"{service:17s} {shlex.join(stack.command(service))}")
    started = time.monotonic()
    try:
        stack.up()
        print(f"ready after {time.monotonic() - started:.1f} s (/health/ready 200)")
        token, patient_id = stack.provision_clinician()
        response = requests.post(f"{stack.base_url}/api/studies/", headers={"Authorization": f"Token {token}"},
                                 data={"patient": patient_id}, files={"file": ("film.png", film_png(512))},
                                 timeout=60)
        response.raise_for_status()
        study_id = response.json()["id"]
        wait_until(lambda: requests.get(f"{stack.base_url}/api/studies/{study_id}/",
                                        headers={"Authorization": f"Token {token}"}, timeout=10)
                   .json()["status"] == "completed", seconds=120, what="the study's result")
        print(f"upload -> result through the stack: study {study_id} completed")
        print(requests.get(f"{stack.base_url}/health/ready", timeout=10).json())
    finally:
        stack.down()


if __name__ == "__main__":
    sys.exit(main())

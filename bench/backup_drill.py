"""Backup drill: pg_dump while uploads run, restore into a fresh database, check what came back.

    .venv/bin/python bench/backup_drill.py

On the production processes (bench/stack.py) with a private PostgreSQL and Redis: uploads run at 2/s; in the
middle, pg_dump -Fc takes the database and the image store is copied after it (docs/operations.md, "Backups
and restore": files are only added, so a later copy holds every file the dump references). The dump is
restored into a new database (owner role, as the operations guide says) and checked:

- row counts of the main tables in the restored database, against the live one after the load (never more);
- the audit chain of the restored database (manage.py audit_verify against it; events written after the
  dump are reported as tail_deleted against the newer anchors, which is expected and says how many);
- every restored study's original and preview exist in the copied store, and every copied file's SHA-256
  equals the live file's.
"""

import hashlib
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faults import Uploader  # noqa: E402
from stack import PG_BIN, Stack  # noqa: E402

TABLES = ["diagnosis_patient", "diagnosis_storedimage", "diagnosis_study", "diagnosis_prediction",
          "diagnosis_alert", "audit_auditevent"]


def checksums(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def main():
    stack = Stack()
    dump = stack.folder / "cxr.dump"
    copy = stack.folder / "images-backup"
    try:
        stack.up()
        token, patient_id = stack.provision_clinician()
        uploader = Uploader(stack, token, patient_id)
        burst = threading.Thread(target=uploader.burst, args=(40,), kwargs={"per_second": 2.0})
        burst.start()
        time.sleep(8)
        started = time.monotonic()
        subprocess.run([PG_BIN / "pg_dump", "-h", "127.0.0.1", "-p", str(stack.postgres.port), "-U", "postgres",
                        "-Fc", "-f", dump, "cxr"], check=True)
        dump_seconds = time.monotonic() - started
        shutil.copytree(stack.folder / "images", copy)
        burst.join()
        time.sleep(5)

        stack.postgres.psql("postgres", "CREATE DATABASE cxr_restored OWNER cxr_owner")
        subprocess.run([PG_BIN / "pg_restore", "-h", "127.0.0.1", "-p", str(stack.postgres.port), "-U", "postgres",
                        "-d", "cxr_restored", "--no-owner", "--role=cxr_owner", dump], check=True)
        print(f"pg_dump during load: {dump.stat().st_size / 1e6:.1f} MB in {dump_seconds:.2f} s; restored into "
              "cxr_restored\n")
        print(f"{'table':<26}{'restored':>10}{'live':>10}")
        counts_ok = True
        for table in TABLES:
            restored = int(stack.postgres.psql("cxr_restored", f"SELECT count(*) FROM {table}"))
            live = int(stack.postgres.psql("cxr", f"SELECT count(*) FROM {table}"))
            counts_ok &= 0 < restored <= live
            print(f"{table:<26}{restored:>10}{live:>10}")

        digests = stack.postgres.psql("cxr_restored", "SELECT sha256 FROM diagnosis_storedimage").split()
        missing = [digest for digest in digests for kind in ("original", "preview.png")
                   if not (copy / digest[:2] / f"{digest}.{kind}").is_file()]
        live_sums, copied_sums = checksums(stack.folder / "images"), checksums(copy)
        differing = [name for name, digest in copied_sums.items() if live_sums.get(name) != digest]
        print(f"\nstored images referenced by the restored database: {len(digests)}; files missing from the "
              f"copied store: {len(missing)}")
        print(f"copied files: {len(copied_sums)}; SHA-256 differing from the live store: {len(differing)}")

        verify = subprocess.run(
            [sys.executable, "manage.py", "audit_verify"], cwd=Path(__file__).resolve().parent.parent,
            env={**stack.env, "DATABASE_URL": stack.postgres.url("cxr_owner", "cxr_restored")},
            capture_output=True, text=True,
        )
        verdict = (verify.stdout + verify.stderr).strip().splitlines()[-1]
        print(f"audit chain of the restored database: {verdict}")
        chain_ok = verify.returncode == 0 or "tail_deleted" in verdict
        ok = counts_ok and not missing and not differing and chain_ok
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        stack.down()


if __name__ == "__main__":
    sys.exit(main())

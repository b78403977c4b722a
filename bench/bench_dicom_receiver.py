"""How many chest films a second the DICOM receiver stores and queues (issue 24, item 7).

    .venv/bin/python bench/bench_dicom_receiver.py [--instances 200] [--size 2000] [--senders 1]

Writes ``--instances`` 16-bit DX films of ``--size``² pixels (12 bits stored, a smooth film with noise; one
SOP Instance UID each), starts the receiver (the same code as ``manage.py dicom_receiver``) on a free loopback
port against a throwaway PostgreSQL database, and times dcmtk's ``storescu`` sending them all, ``--senders``
associations at once. Counted: studies stored and queued for inference when ``storescu`` has had its last
answer. The broker is kombu's in-memory transport, so the shared Redis is not touched (publishing is a
fraction of a millisecond of each film's cost). Needs PostgreSQL on 127.0.0.1 and dcmtk.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
SENDER_AE = "BENCH"
RECEIVER_AE = "CXR_BENCH"


def write_films(folder: Path, *, count: int, size: int) -> int:
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    film = 0.5 + 0.3 * np.sin(6 * x) * np.cos(5 * y) + rng.normal(0, 0.02, (size, size))
    pixels = np.round(np.clip(film, 0, 1) * 4095).astype(np.uint16).tobytes()
    study_uid = generate_uid()
    total = 0
    for number in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset = Dataset()
        dataset.file_meta = meta
        dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        dataset.Modality, dataset.BodyPartExamined, dataset.ViewPosition = "DX", "CHEST", "PA"
        dataset.PatientID, dataset.PatientName = f"BENCH-{number % 20:03d}", "Bench^Patient"
        dataset.AccessionNumber = f"BENCH-{number:05d}"
        dataset.StudyDate, dataset.StudyTime = "20260101", "120000"
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study_uid, generate_uid()
        dataset.Rows = dataset.Columns = size
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 12, 11, 0
        dataset.PixelData = pixels
        path = folder / f"film{number:05d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        total += path.stat().st_size
    return total


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=1, help="storescu processes (associations) at once")
    args = parser.parse_args()
    if shutil.which("storescu") is None:
        sys.exit("storescu (dcmtk) is not installed: apt-get install dcmtk")

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cxr_portal.settings.test")
    os.environ["CELERY_BROKER_URL"] = "memory://"
    os.environ["CXR_TEST_DATABASE_NAME"] = f"bench_dicom_receiver_{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="bench-dicom-"))
    os.environ["CXR_IMAGE_STORE_DIR"] = str(work / "images")
    sys.path.insert(0, str(REPOSITORY))
    import logging

    import django

    django.setup()
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("diagnosis").setLevel(logging.WARNING)
    from django.db import connection

    from diagnosis.dicom_receiver import ReceiverConfig, receiver_start
    from diagnosis.models import Study, StudySource, StudyStatus

    films = work / "films"
    folders = [films / f"sender{index}" for index in range(args.senders)]
    for folder in folders:
        folder.mkdir(parents=True)
    started = time.perf_counter()
    total_bytes = 0
    for index, folder in enumerate(folders):
        share = args.instances // args.senders + (1 if index < args.instances % args.senders else 0)
        total_bytes += write_films(folder, count=share, size=args.size)
    print(f"{args.instances} films of {args.size}x{args.size} 16-bit, {total_bytes / args.instances / 1e6:.1f} MB each "
          f"(written in {time.perf_counter() - started:.0f} s)")

    database = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    server = None
    try:
        config = ReceiverConfig(ae_title=RECEIVER_AE, port=free_port(), allowed_calling_aes=[SENDER_AE])
        server = receiver_start(config, block=False)
        commands = [["storescu", "-aet", SENDER_AE, "-aec", RECEIVER_AE, "--scan-directories", "-q",
                     "127.0.0.1", str(config.port), str(folder)] for folder in folders]
        started = time.perf_counter()
        senders = [subprocess.Popen(command) for command in commands]
        codes = [sender.wait() for sender in senders]
        elapsed = time.perf_counter() - started
        stored = Study.objects.filter(source=StudySource.PACS).count()
        queued = Study.objects.filter(source=StudySource.PACS, status=StudyStatus.QUEUED).count()
        print(f"storescu exit codes {codes}; {args.senders} association(s)")
        print(f"stored {stored}, queued {queued} of {args.instances} in {elapsed:.1f} s: "
              f"{queued / elapsed:.2f} instances/s, {total_bytes / elapsed / 1e6:.1f} MB/s received")
    finally:
        if server is not None:
            server.shutdown()
        connection.creation.destroy_test_db(database, verbosity=0)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

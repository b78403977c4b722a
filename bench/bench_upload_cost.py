"""What one upload costs the web process: peak memory and time of the decode, re-encode and preview.

Each case runs in a fresh subprocess so its peak resident memory (ru_maxrss) is its own; the number
reported is the rise of the peak over the process after imports and a small warm-up upload.

Cases:
- zeros-8192: an all-zero 8192 x 8192 8-bit PNG (about 65 KB), the decompression-bomb upload of issue 22;
- zeros-5000: the same at 5000 x 5000, just inside the pixel limit (the worst file that is accepted);
- film16-3000: a real development film scaled to 3000 x 3000 and stored as 16-bit PNG with noise in
  the low bits (a detector's output compresses like that); no 16-bit film may be committed;
- dicom16-3000: the same pixels as an uncompressed 16-bit DICOM.

    .venv/bin/python bench/bench_upload_cost.py [--film PATH] [--runs 3]

Results and how to read them: bench/RESULTS.md ("Upload cost").
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILM_GLOB = "../shared/data/cxr/dev/normal/*.png"

CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cxr_portal.settings.local")
import django
django.setup()
from diagnosis.services.ingest import image_prepare
from tests.images import png_bytes

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

image_prepare(data=png_bytes())  # imports and first-call work out of the measurement
data = open(sys.argv[2], "rb").read()
runs = int(sys.argv[3])
base = peak_mb()
times, outcome = [], "accepted"
for _ in range(runs):
    start = time.perf_counter()
    try:
        image_prepare(data=data)
    except Exception as error:
        outcome = f"refused: {type(error).__name__}: {str(error)[:90]}"
    times.append(time.perf_counter() - start)
print(json.dumps({"peak_rise_mb": peak_mb() - base, "seconds": sorted(times)[len(times) // 2], "outcome": outcome}))
"""


def zeros_png(side: int) -> bytes:
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((side, side), dtype=np.uint8)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def film16(film: Path, side: int = 3000):
    import numpy as np
    from PIL import Image

    source = Image.open(film).convert("L").resize((side, side), Image.Resampling.BICUBIC)
    pixels = np.asarray(source, dtype=np.uint16) * 16  # 12-bit range, as most detectors
    rng = np.random.default_rng(0)
    return (pixels + rng.integers(0, 16, size=pixels.shape, dtype=np.uint16)).astype(np.uint16)


def png16(pixels) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def dicom16(pixels) -> bytes:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.Modality, dataset.PatientID, dataset.PhotometricInterpretation = "DX", "BENCH", "MONOCHROME2"
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel, dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 1, 16, 12, 11
    dataset.PixelRepresentation = 0
    dataset.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def measure(path: Path, runs: int) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(path), str(runs)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--film", type=Path, help="a real chest film (8-bit PNG) to build the 16-bit cases from")
    parser.add_argument("--runs", type=int, default=3, help="uploads per case; the median time is reported")
    arguments = parser.parse_args()
    film = arguments.film or sorted(ROOT.glob(DEFAULT_FILM_GLOB))[0]
    pixels = film16(film)
    cases = {
        "zeros-8192": zeros_png(8192),
        "zeros-5000": zeros_png(5000),
        "film16-3000": png16(pixels),
        "dicom16-3000": dicom16(pixels),
    }
    with tempfile.TemporaryDirectory() as folder:
        print(f"{'case':<14}{'file':>10}  {'peak rise':>10}  {'time':>8}  outcome")
        for name, data in cases.items():
            path = Path(folder) / name
            path.write_bytes(data)
            numbers = measure(path, arguments.runs)
            if "error" in numbers:
                print(f"{name:<14}{len(data) / 1024:>8.0f}KB  {numbers['error']}")
                continue
            print(f"{name:<14}{len(data) / 1024:>8.0f}KB  {numbers['peak_rise_mb']:>8.0f}MB  {numbers['seconds']:>7.2f}s  "
                  f"{numbers['outcome']}")
    print(f"(film: {os.path.relpath(film, ROOT)}; {arguments.runs} runs per case, median time)")


if __name__ == "__main__":
    main()

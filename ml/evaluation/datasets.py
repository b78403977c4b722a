"""Loading labelled image folders, patient-level splits and leave-one-source-out.

A data set is any folder laid out as ``<root>/{covid,normal,pneumonia}/*``
(PNG, JPEG or DICOM), optionally with a manifest CSV (columns ``file``,
``cls``, ``source``, ``patient``) whose ``file`` paths are relative to the
manifest's folder. Without a manifest every image is its own patient and the
source is "unknown".
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ml.serving.imaging import decode_path
from ml.serving.labels import CLASS_NAMES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", "")
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    source: str
    patient: str
    key: str  # stable identifier used in split files: path relative to the data root


@dataclass
class Split:
    seed: int
    train: list[str]
    val: list[str]
    test: list[str]
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    notes: dict = field(default_factory=dict)

    def part(self, samples: list[Sample], name: str) -> list[Sample]:
        keys = set(getattr(self, name))
        return [s for s in samples if s.key in keys]


def default_data_dir() -> Path:
    repo = Path(__file__).resolve().parents[2]
    return Path(os.environ.get("CXR_DATA_DIR", repo.parent / "shared" / "data" / "cxr"))


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def load_dataset(root: Path | str, manifest: Path | str | None = None) -> list[Sample]:
    """All labelled images under ``root``, sorted by key.

    ``root`` may be the folder holding the class folders or (as for the
    development pool) a folder whose ``manifest.csv`` lists them.
    """
    root = Path(root)
    if manifest is None and (root / "manifest.csv").is_file() and not (root / CLASS_NAMES[0]).is_dir():
        manifest = root / "manifest.csv"
    if manifest is not None:
        manifest = Path(manifest)
        base = manifest.parent
        samples = []
        with open(manifest, newline="") as handle:
            for row in csv.DictReader(handle):
                label = row.get("cls") or row.get("label")
                if label not in CLASS_NAMES:
                    continue
                path = base / row["file"]
                key = row["file"]
                patient = (row.get("patient") or "").strip() or f"image:{key}"
                source = (row.get("source") or "").strip() or "unknown"
                samples.append(Sample(path=path, label=label, source=source, patient=patient, key=key))
        return sorted(samples, key=lambda s: s.key)
    samples = []
    for label in CLASS_NAMES:
        folder = root / label
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if _is_image(path):
                key = f"{label}/{path.name}"
                samples.append(Sample(path=path, label=label, source="unknown", patient=f"image:{key}", key=key))
    return samples


def _patient_groups(samples: list[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[sample.patient].append(sample)
    return groups


def _stratum(group: list[Sample]) -> tuple[str, str]:
    """A patient's stratum: its most frequent class (ties by CLASS_NAMES order) and source."""
    counts = Counter(s.label for s in group)
    label = max(CLASS_NAMES, key=lambda name: (counts[name], -CLASS_NAMES.index(name)))
    return label, group[0].source


def make_patient_split(
    *, samples: list[Sample], seed: int, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
) -> Split:
    """Patient-level split stratified by class and source, reproducible from ``seed``.

    All images of a patient land in the same part. Patients are shuffled
    within each (class, source) stratum and assigned greedily so each part
    gets close to its share of images.
    """
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError("fractions must sum to 1")
    rng = random.Random(seed)
    strata: dict[tuple[str, str], list[list[Sample]]] = defaultdict(list)
    groups = _patient_groups(samples)
    for patient in sorted(groups):
        strata[_stratum(groups[patient])].append(groups[patient])
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    names = ("train", "val", "test")
    for stratum in sorted(strata):
        patients = strata[stratum]
        rng.shuffle(patients)
        total = sum(len(g) for g in patients)
        assigned = {name: 0 for name in names}
        for group in patients:
            # Give the patient to the part furthest below its target share.
            deficits = [fractions[i] * total - assigned[name] for i, name in enumerate(names)]
            name = names[int(np.argmax(deficits))]
            assigned[name] += len(group)
            parts[name].extend(s.key for s in group)
    return Split(
        seed=seed,
        train=sorted(parts["train"]),
        val=sorted(parts["val"]),
        test=sorted(parts["test"]),
        fractions=tuple(fractions),
    )


def save_split(split: Split, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(split), indent=1) + "\n")
    return path


def load_split(path: Path | str) -> Split:
    data = json.loads(Path(path).read_text())
    return Split(
        seed=int(data["seed"]),
        train=list(data["train"]),
        val=list(data["val"]),
        test=list(data["test"]),
        fractions=tuple(data.get("fractions", DEFAULT_FRACTIONS)),
        notes=dict(data.get("notes", {})),
    )


def sources(samples: list[Sample]) -> list[str]:
    return sorted({s.source for s in samples})


@dataclass
class LeaveOneSourceOut:
    source: str
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    description: str


def leave_one_source_out(*, samples: list[Sample], split: Split, source: str) -> LeaveOneSourceOut:
    """Train/validate without ``source``; test on all of its images.

    When the left-out source has only one class (cxnet is all COVID-19), a
    COVID-vs-rest AUC needs negatives: the test set then also takes the
    held-out test-split images of the other classes from the remaining
    sources (never used in training or validation). Symmetrically, when the
    left-out source has no COVID-19 images, the test-split COVID-19 images of
    the other sources are added.
    """
    held_out = [s for s in samples if s.source == source]
    train = [s for s in split.part(samples, "train") if s.source != source]
    val = [s for s in split.part(samples, "val") if s.source != source]
    test = list(held_out)
    labels = {s.label for s in held_out}
    description = f"test = all {len(held_out)} images of source {source!r}"
    other_test = [s for s in split.part(samples, "test") if s.source != source]
    if labels == {"covid"}:
        extra = [s for s in other_test if s.label != "covid"]
        test += extra
        description += f" + {len(extra)} non-COVID test-split images of other sources"
    elif "covid" not in labels:
        extra = [s for s in other_test if s.label == "covid"]
        test += extra
        description += f" + {len(extra)} COVID-19 test-split images of other sources"
    return LeaveOneSourceOut(source=source, train=train, val=val, test=test, description=description)


def decode_file(path: Path | str) -> np.ndarray:
    """Decode through the portal's decoder (ml.serving.imaging) so training sees what serving sees."""

    return np.asarray(decode_path(path).pixels, dtype=np.float32)


class EvaluationError(ValueError):
    """The data cannot be evaluated (nothing found, nothing decodable); the message says why."""


def select_samples(*, data: Path, manifest: Path | None, split_file: Path | None, subset: str):
    """The samples to evaluate; ``subset="loso"`` is the test set of a leave-one-source-out artifact.

    A LOSO artifact's split.json is the shared split with ``notes.leave_out_source``;
    its train and val parts leave that source out, and its test set
    (``ml.evaluation.datasets.leave_one_source_out``) is every image of that source plus
    the other sources' test images the source lacks a class for.
    """

    samples = load_dataset(data, manifest)
    if split_file is not None:
        split = load_split(split_file)
        left_out = split.notes.get("leave_out_source")
        if subset == "loso" and not left_out:
            raise EvaluationError(f"{split_file} is not a leave-one-source-out split (no notes.leave_out_source).")
        if subset == "loso" or (left_out and subset in ("train", "val")):
            # A leave-one-source-out run never trained or calibrated on that source.
            loso = leave_one_source_out(samples=samples, split=split, source=left_out)
            samples = {"loso": loso.test, "train": loso.train, "val": loso.val}[subset]
        else:
            samples = split.part(samples, subset)
        if not samples:
            raise EvaluationError(
                f"No image of {split_file} subset {subset!r} was found under {data}: "
                "the split's keys are paths relative to the data root (or manifest folder) it was made from."
            )
    if not samples:
        raise EvaluationError(f"No labelled images under {data} (expected class folders {', '.join(CLASS_NAMES)}).")
    return samples


def label_array(samples) -> np.ndarray:
    """Class indices (into CLASS_NAMES) of ``samples``."""
    return np.array([CLASS_NAMES.index(s.label) for s in samples], dtype=np.int64)

import csv

import numpy as np
from PIL import Image

from ml.evaluation.datasets import (
    Sample,
    leave_one_source_out,
    load_dataset,
    load_split,
    make_patient_split,
    save_split,
)
from ml.serving.labels import CLASS_NAMES


def _write_png(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16), value, np.uint8)).save(path)


def test_loads_a_plain_class_folder_without_manifest(tmp_path):
    for label in CLASS_NAMES:
        for index in range(3):
            _write_png(tmp_path / label / f"{index}.png")
    (tmp_path / "normal" / ".hidden").write_text("x")
    samples = load_dataset(tmp_path)
    assert len(samples) == 9
    assert {s.label for s in samples} == set(CLASS_NAMES)
    assert all(s.source == "unknown" and s.patient.startswith("image:") for s in samples)


def test_loads_manifest_with_patient_and_source(tmp_path):
    _write_png(tmp_path / "dev" / "covid" / "a.png")
    _write_png(tmp_path / "dev" / "normal" / "b.png")
    with open(tmp_path / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["cls", "file", "source", "patient"])
        writer.writeheader()
        writer.writerow({"cls": "covid", "file": "dev/covid/a.png", "source": "web", "patient": "p1"})
        writer.writerow({"cls": "normal", "file": "dev/normal/b.png", "source": "hospital", "patient": ""})
    samples = load_dataset(tmp_path)
    assert [(s.label, s.source, s.patient) for s in samples] == [
        ("covid", "web", "p1"),
        ("normal", "hospital", "image:dev/normal/b.png"),
    ]
    assert samples[0].path.is_file()


def _synthetic_samples(count=300):
    rng = np.random.default_rng(0)
    samples = []
    for index in range(count):
        label = CLASS_NAMES[index % 3]
        source = "web" if label == "covid" else "hospital"
        patient = f"p{index // 2}" if index % 5 else f"p{index}"  # some patients with two images
        samples.append(Sample(path=None, label=label, source=source, patient=patient, key=f"{label}/{index}.png"))
    rng.shuffle(samples)
    return samples


def test_patient_split_is_disjoint_reproducible_and_stratified(tmp_path):
    samples = _synthetic_samples()
    split = make_patient_split(samples=samples, seed=3)
    again = make_patient_split(samples=samples, seed=3)
    assert split.train == again.train and split.test == again.test
    parts = {name: split.part(samples, name) for name in ("train", "val", "test")}
    patients = {name: {s.patient for s in part} for name, part in parts.items()}
    assert not patients["train"] & patients["test"] and not patients["val"] & patients["test"]
    assert sum(len(p) for p in parts.values()) == len(samples)
    for name, share in (("train", 0.7), ("test", 0.15)):
        assert abs(len(parts[name]) / len(samples) - share) < 0.05
        assert {s.label for s in parts[name]} == set(CLASS_NAMES)
    assert load_split(save_split(split, tmp_path / "split.json")).test == split.test


def test_leaving_out_a_single_class_source_adds_test_negatives():
    samples = _synthetic_samples()
    split = make_patient_split(samples=samples, seed=3)
    loso = leave_one_source_out(samples=samples, split=split, source="web")
    assert all(s.source != "web" for s in loso.train + loso.val)
    negatives = [s for s in loso.test if s.label != "covid"]
    assert negatives and {s.key for s in negatives} <= set(split.test)
    assert len([s for s in loso.test if s.source == "web"]) == len([s for s in samples if s.source == "web"])

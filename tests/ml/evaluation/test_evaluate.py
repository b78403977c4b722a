"""End-to-end evaluation of a tiny trained artifact on folders of synthetic PNGs."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from ml.evaluation import evaluate
from ml.evaluation.datasets import select_samples
from ml.evaluation.summary import summarize_predictions

SIZE = 48
CLASSES = ("covid", "normal", "pneumonia")


def _films(n: int, seed: int):
    """Class k: a bright vertical band at a class-specific position, on noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    films = rng.random((n, SIZE, SIZE)).astype(np.float32) * 0.3
    for i, k in enumerate(labels):
        films[i, 8:40, 4 + 14 * k : 16 + 14 * k] += 0.6
    return np.clip(films, 0, 1), labels


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    from ml.training.recipe import recipe_for
    from ml.training.train import train_from_arrays

    films, labels = _films(90, seed=0)
    out = tmp_path_factory.mktemp("artifact")
    return train_from_arrays(
        films, labels, recipe=recipe_for("tiny", epochs=4, patience=4, seed=0), out_dir=out, name="tiny-test",
        version="0",
    )


def _write_folder(root, *, classes, n=24, seed=1):
    films, labels = _films(n, seed=seed)
    written = []
    for i, (film, k) in enumerate(zip(films, labels)):
        if CLASSES[k] not in classes:
            continue
        folder = root / CLASSES[k]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"film{i:03d}.png"
        Image.fromarray((film * 255).astype(np.uint8)).save(path)
        written.append((f"{CLASSES[k]}/{path.name}", CLASSES[k], i))
    return written


def _write_manifest(root, written, *, patient_of):
    """manifest.csv for ``_write_folder``'s films: odd-numbered films come from source alpha, even from beta."""
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cls", "file", "source", "patient"])
        for key, label, i in written:
            writer.writerow([label, key, "alpha" if i % 2 else "beta", patient_of(i)])


def test_cli_on_unseen_folder_without_manifest_and_with_a_missing_class(artifact, tmp_path, capsys):
    data = tmp_path / "external"
    _write_folder(data, classes=("covid", "normal"))
    (data / "normal" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    out = tmp_path / "eval"

    code = evaluate.main(
        ["--model", str(artifact), "--data", str(data), "--out", str(out),
         "--quiet", "--bootstrap", "100", "--gradcam-samples", "3"]
    )

    assert code == 0
    for name in ("metrics.json", "report.md", "confusion_matrix.png", "roc_curves.png", "reliability.png",
                 "stability.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert (out / "roc_curves.png").read_bytes().startswith(b"\x89PNG")
    m = json.loads((out / "metrics.json").read_text())
    for key in ("n", "classes", "accuracy", "accuracy_ci", "macro_auc", "macro_auc_ci", "ece",
                "confusion_matrix", "per_class", "threshold", "per_source", "shortcut_audit"):
        assert key in m
    assert m["n"] == 16 and m["classes"] == list(CLASSES)
    assert m["skipped"] == [{"file": "normal/truncated.png", "reason": m["skipped"][0]["reason"]}]
    assert m["per_source"] is None
    assert m["per_class"]["pneumonia"]["auc"] is None and m["per_class"]["pneumonia"]["support"] == 0
    assert any("pneumonia" in note and "null" in note for note in m["notes"])
    assert m["per_class"]["covid"]["auc"] is not None
    lo, hi = m["accuracy_ci"]
    assert 0.0 <= lo <= m["accuracy"] <= hi <= 1.0
    assert sum(map(sum, m["confusion_matrix"])) == 16
    covid = m["per_class"]["covid"]
    assert set(covid) >= {"precision", "recall", "f1", "auc", "auc_ci", "sensitivity_at_threshold"}
    assert covid["sensitivity_at_threshold"] == m["threshold"]["sensitivity"]
    audit = m["shortcut_audit"]
    assert audit["gradcam"]["n"] <= 3 and audit["chance_accuracy"] == pytest.approx(1 / 3)
    assert isinstance(audit["shortcut_suspected"], bool)
    assert audit["source_probe"] is None  # no manifest: every film's source is unknown
    assert m["bootstrap"]["unit"] == "image"
    assert set(m["stability"]["perturbations"]) == {"jpeg_q90", "half_resolution", "gamma_0.8"}
    for stability in m["stability"]["perturbations"].values():
        assert stability["n"] == 16 and 0.0 <= stability["same_class"] <= 1.0
        assert stability["accuracy_original"] == pytest.approx(m["accuracy"])
    unstable = m["stability"]["unstable"]
    assert unstable["n"] == 16 and 0 <= unstable["n_flagged"] <= 16
    report = (out / "report.md").read_text()
    assert "Shortcut audit" in report and "confusion_matrix.png" in report and "Stability under changes" in report
    assert "accuracy" in capsys.readouterr().out
    # predictions.csv: one row per decoded film, its probabilities summing to one, its alert at the threshold.
    import csv

    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 16 and list(rows[0]) == ["file", "source", "patient", "true_label", "p_covid", "p_normal",
                                                 "p_pneumonia", "predicted", "alert", "warnings"]
    for row in rows:
        probabilities = [float(row[f"p_{name}"]) for name in CLASSES]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
        assert row["alert"] == str(probabilities[0] >= m["threshold"]["value"])
    assert sum(row["alert"] == "True" for row in rows) == m["threshold"]["alerts"]


def test_manifest_split_and_per_source(artifact, tmp_path):
    data = tmp_path / "pool"
    written = _write_folder(data, classes=CLASSES, n=30, seed=2)
    _write_manifest(data, written, patient_of=lambda i: f"p{i // 2}")  # two images per patient, two sources
    keys = [key for key, _, _ in written]
    split = data / "split.json"
    split.write_text(json.dumps({"seed": 0, "train": keys[:6], "val": [], "test": keys[6:]}))

    output = evaluate.evaluate_artifact(
        artifact_dir=artifact, data=data, manifest=data / "manifest.csv", split_file=split, subset="test",
        out_dir=tmp_path / "eval", gradcam_samples=0, n_resamples=50, progress=False,
    )

    m = output.metrics
    assert m["n"] == 24
    assert set(m["per_source"]) == {"alpha", "beta"}
    assert sum(s["n"] for s in m["per_source"].values()) == 24
    assert m["bootstrap"]["unit"] == "patient"
    assert m["data"]["n_patients"] == len({i // 2 for _, _, i in written[6:]})
    assert m["shortcut_audit"]["gradcam"] is None

    # A leave-one-source-out split: source alpha was left out, so its images are the test set
    # (alpha has every class here, so nothing is added from beta).
    split.write_text(json.dumps({"seed": 0, "train": keys, "val": [], "test": [], "notes": {"leave_out_source": "alpha"}}))
    loso = evaluate.evaluate_artifact(
        artifact_dir=artifact, data=data, manifest=data / "manifest.csv", split_file=split, subset="loso",
        out_dir=tmp_path / "loso", gradcam_samples=0, n_resamples=20, progress=False,
    ).metrics
    assert set(loso["per_source"]) == {"alpha"}
    assert loso["n"] == sum(1 for _, _, i in written if i % 2)
    # Its validation part (what ml.recalibrate refits on) leaves alpha out too.
    split.write_text(json.dumps({"seed": 0, "train": [], "val": keys, "test": [], "notes": {"leave_out_source": "alpha"}}))
    val = select_samples(data=data, manifest=data / "manifest.csv", split_file=split, subset="val")
    assert {s.source for s in val} == {"beta"} and len(val) == sum(1 for _, _, i in written if i % 2 == 0)


def test_a_manifest_with_two_sources_per_class_adds_the_source_probe(artifact, tmp_path):
    data = tmp_path / "pool"
    written = _write_folder(data, classes=CLASSES, n=60, seed=3)
    # Each class alternates between two sources; ten patients per source and class.
    _write_manifest(data, written, patient_of=lambda i: f"p{i}")
    out = tmp_path / "eval"

    m = evaluate.evaluate_artifact(
        artifact_dir=artifact, data=data, manifest=data / "manifest.csv", out_dir=out,
        gradcam_samples=0, n_resamples=50, progress=False,
    ).metrics

    probe = m["shortcut_audit"]["source_probe"]
    assert set(probe) == {"input", "features", "outputs"}
    for representation in probe.values():
        for class_name in CLASSES:
            result = representation["by_class"][class_name]
            assert result["sources"] == {"alpha": 10, "beta": 10} and result["folds"] == 5
            assert 0.0 <= result["auc"] <= 1.0
    assert probe["outputs"]["n_features"] == len(CLASSES)
    assert any(f.startswith("Within covid (20 films), a linear probe") for f in m["shortcut_audit"]["findings"])
    report = (out / "report.md").read_text()
    assert "source probe" in report and "| covid | alpha 10 (10 patients), beta 10 (10 patients) |" in report


def test_summary_of_perfect_predictions():
    y_true = np.array([0, 1, 2, 0, 1, 2])
    probabilities = np.eye(3)[y_true] * 0.9 + 0.1 / 3
    summary = summarize_predictions(
        y_true=y_true, probabilities=probabilities, class_names=CLASSES, threshold=0.5, n_resamples=50
    )
    assert summary["accuracy"] == 1.0 and summary["macro_auc"] == 1.0
    assert summary["threshold"]["sensitivity"] == 1.0 and summary["threshold"]["specificity"] == 1.0
    assert summary["per_class"]["normal"]["sensitivity_at_threshold"] is None
    assert summary["ece"] == pytest.approx(abs(1.0 - (0.9 + 0.1 / 3)))


def test_training_overlap_ignores_the_left_out_source(tmp_path):
    from pathlib import Path

    from ml.evaluation.datasets import Sample

    (tmp_path / "split.json").write_text(
        json.dumps({"seed": 0, "train": ["a", "b"], "val": ["c"], "test": ["d"], "notes": {"leave_out_source": "x"}})
    )
    samples = [
        Sample(path=Path(key), label="covid", source=source, patient=key, key=key)
        for key, source in (("a", "x"), ("b", "y"), ("c", "y"), ("d", "y"))
    ]
    # a was in the shared train split but its source was left out; b and c were used; d is test.
    assert evaluate._training_overlap(split=evaluate._artifact_split(tmp_path), samples=samples) == 2
    assert evaluate._training_overlap(split=evaluate._artifact_split(tmp_path / "none"), samples=samples) is None


def test_cli_explains_an_empty_or_unreadable_folder(artifact, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert evaluate.main(["--model", str(artifact), "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "No labelled images" in capsys.readouterr().err
    broken = tmp_path / "broken" / "covid"
    broken.mkdir(parents=True)
    (broken / "a.png").write_bytes(b"not an image")
    code = evaluate.main(
        ["--model", str(artifact), "--data", str(tmp_path / "broken"), "--out", str(tmp_path / "o"), "--quiet"]
    )
    assert code == 2
    assert "None of the 1 images could be decoded (covid/a.png:" in capsys.readouterr().err


def test_recalibrate_refits_temperature_and_threshold_and_keeps_the_model(artifact, tmp_path, capsys):
    import shutil

    from ml.serving.artifact import load_metadata, verify_artifact
    from ml.training import recalibrate

    copy = tmp_path / "model"
    shutil.copytree(artifact, copy)
    before = load_metadata(copy)
    data = tmp_path / "site"
    _write_folder(data, classes=CLASSES, n=60, seed=5)

    assert recalibrate.main(["--model", str(copy), "--data", str(data), "--dry-run", "--quiet"]) == 0
    assert load_metadata(copy).to_dict() == before.to_dict()
    capsys.readouterr()

    assert recalibrate.main(["--model", str(copy), "--data", str(data), "--quiet"]) == 0
    after = load_metadata(copy)
    assert verify_artifact(copy) and after.sha256 == before.sha256
    assert after.threshold_confidence == 0.95
    record = after.training["recalibrations"][-1]
    assert record["n"] == 60 and record["positives"] == 20
    assert record["previous"]["covid_threshold"] == before.covid_threshold
    assert after.covid_threshold == record["covid_threshold"]
    # 20 positives cannot prove 95% sensitivity: the threshold detects every one of them.
    assert record["metrics"]["covid_sensitivity"] == 1.0
    assert record["sensitivity_lower_bound"] == pytest.approx(0.05 ** (1 / 20), abs=1e-6)
    # The site monitor's reference now describes the served operating point on the same 60 films.
    reference = after.monitoring
    assert reference["subset"] == "recalibration" and reference["n"] == 60
    assert [sum(row) for row in reference["confusion"]] == [20, 20, 20]
    assert reference["alerts"]["covid"] == 20  # every COVID-19 film alerts at the new threshold, as fitted
    # Its warnings are counted per predicted class too, for the warning checks compared within classes.
    for code, total in reference["warnings"].items():
        assert sum(reference["warnings_by_predicted"][code]) == total
    assert json.loads(capsys.readouterr().out)["monitoring_reference"]["n"] == 60


def test_recalibrate_explains_data_without_covid(artifact, tmp_path, capsys):
    from ml.training import recalibrate

    data = tmp_path / "site"
    _write_folder(data, classes=("normal", "pneumonia"))
    code = recalibrate.main(["--model", str(artifact), "--data", str(data), "--quiet"])
    assert code == 2
    assert "no COVID-19 images" in capsys.readouterr().err


def test_record_stores_the_shortcut_audit_with_the_artifact_it_evaluated(artifact, tmp_path, capsys):
    import shutil

    from ml.serving.artifact import SHORTCUT_AUDIT_FILE, held_out_evaluation, load_metadata

    model = tmp_path / "model"
    shutil.copytree(artifact, model)
    data = tmp_path / "pool"
    written = _write_folder(data, classes=CLASSES, n=60, seed=3)
    _write_manifest(data, written, patient_of=lambda i: f"p{i}")
    split = data / "split.json"
    split.write_text(json.dumps({"seed": 0, "train": [], "val": [], "test": [key for key, _, _ in written]}))
    common = ["--model", str(model), "--data", str(data), "--manifest", str(data / "manifest.csv"),
              "--gradcam-samples", "4", "--bootstrap", "20", "--quiet", "--record"]

    with pytest.raises(SystemExit):  # an audit on films of unknown standing is not recorded
        evaluate.main([*common, "--out", str(tmp_path / "e0")])
    assert "--record needs --split-file and --subset test" in capsys.readouterr().err
    assert not (model / SHORTCUT_AUDIT_FILE).exists()

    assert evaluate.main([*common, "--split-file", str(split), "--out", str(tmp_path / "e1")]) == 0
    assert "recorded the shortcut audit in" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "e1" / "metrics.json").read_text())
    record = json.loads((model / SHORTCUT_AUDIT_FILE).read_text())
    audit = metrics["shortcut_audit"]
    assert record["sha256"] == load_metadata(model).sha256 and record["subset"] == "test" and record["n"] == 60
    assert record["lungs_hidden_accuracy"] == audit["lungs_hidden"]["accuracy"]
    assert record["gradcam_n"] == 4
    assert record["gradcam_share_outside_lungs"] == audit["gradcam"]["mean_share_outside_lungs"]
    assert record["shortcut_suspected"] == audit["shortcut_suspected"]
    features = audit["source_probe"]["features"]["by_class"]["covid"]
    assert record["source_probe"]["covid"] == {
        "sources": {"alpha": 10, "beta": 10}, "auc": features["auc"], "auc_ci": features["auc_ci"],
        "input_auc": audit["source_probe"]["input"]["by_class"]["covid"]["auc"],
        "outputs_auc": audit["source_probe"]["outputs"]["by_class"]["covid"]["auc"],
    }
    assert held_out_evaluation(model)["shortcut_audit"] == record

    # Once the folder's model changes, the record no longer describes it and is not read.
    metadata = json.loads((model / "metadata.json").read_text())
    (model / "metadata.json").write_text(json.dumps({**metadata, "sha256": "0" * 64}))
    assert "shortcut_audit" not in held_out_evaluation(model)

"""Training away from the data: the pack rebuilds model inputs exactly, members become one ensemble."""

import json
from pathlib import Path

import numpy as np
import pytest

from ml.datasets import Sample, Split
from ml.labels import CLASS_NAMES
from ml.pack import build_pack, frame_to_uint8, load_pack, save_pack
from ml.preprocess import (
    PreprocessConfig,
    finish_frame,
    lung_frame,
    preprocess,
    preprocess_batch,
)

LUNGS = PreprocessConfig(
    input_size=32, equalize="histogram", crop="lungs", mask_outside_lungs=True,
    lung_segmenter="lung_segmenter", equalize_region="frame",
)


def _film(seed: int) -> np.ndarray:
    """A chest-like film: bright body, two darker lung fields, noise."""
    rng = np.random.default_rng(seed)
    film = np.full((120, 100), 0.75, np.float32)
    film[20:95, 12:44] = 0.25
    film[20:95, 56:88] = 0.3
    return np.clip(film + rng.normal(0, 0.05, film.shape), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def pool():
    samples, films = [], {}
    for index in range(18):
        label = CLASS_NAMES[index % 3]
        source = "alpha" if index < 12 else "beta"
        key = f"{label}/{index}.png"
        samples.append(Sample(path=Path(key), label=label, source=source, patient=f"p{index}", key=key))
        films[key] = _film(index)
    keys = [s.key for s in samples]
    split = Split(seed=1, train=keys[:6] + keys[12:15], val=keys[6:9] + keys[15:], test=keys[9:12])
    return samples, films, split


def test_lung_frame_then_finish_frame_is_preprocess():
    film = _film(3)
    frame, mask, _found = lung_frame(film, LUNGS)
    assert np.array_equal(finish_frame(frame, mask, LUNGS), preprocess(film, LUNGS))
    # Quantising the frame to 8 bits changes nothing: equalisation quantises the same way.
    assert np.array_equal(finish_frame(frame_to_uint8(frame) / np.float32(255), mask, LUNGS), preprocess(film, LUNGS))


def test_pack_rebuilds_the_portals_model_inputs_exactly_and_survives_a_round_trip(pool, tmp_path):
    samples, films, split = pool
    pack = build_pack(samples=samples, split=split, config=LUNGS, loso_sources=["beta"], decode=lambda s: films[s.key])
    loaded = load_pack(save_pack(pack, tmp_path / "pack.npz"))
    members = split.part(samples, "train") + split.part(samples, "val")
    assert loaded.keys == [s.key for s in members]
    assert set(loaded.keys).isdisjoint(split.test)  # test films never leave the machine
    expected = preprocess_batch([films[s.key] for s in members], LUNGS)
    assert np.array_equal(loaded.model_inputs(range(len(members))), expected)
    assert loaded.labels.tolist() == [CLASS_NAMES.index(s.label) for s in members]
    assert loaded.config == LUNGS
    # The leave-one-source-out group trains and validates without the left-out source.
    group = loaded.groups["loso-beta"]
    assert {loaded.sources[i] for i in group["train"] + group["val"]} == {"alpha"}
    assert len(loaded.groups["main"]["train"]) == len(split.train)


def test_pack_refuses_preprocessing_it_cannot_rebuild_exactly(pool):
    samples, films, split = pool
    with pytest.raises(ValueError, match="exact only"):
        build_pack(samples=samples, split=split, config=PreprocessConfig(input_size=32), loso_sources=[],
                   decode=lambda s: films[s.key])


def _members(count: int, input_size: int = 32):
    import keras

    from ml.architectures import build_model

    members = []
    for seed in range(count):
        keras.utils.set_random_seed(seed)
        members.append(build_model(architecture="sepres-wide", input_size=input_size))
    return members


def test_ensemble_averages_the_members_logits_and_its_cam_is_grad_cam():
    import keras

    from ml.architectures import build_ensemble
    from ml.gradcam import cam_model, gradcam, heatmap_from_class_maps

    members = _members(3)
    ensemble = build_ensemble(members)
    inputs = np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 1)).astype(np.float32)
    logits = np.mean([keras.Model(m.inputs, m.get_layer("logits").output).predict(inputs, verbose=0) for m in members], 0)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert np.max(np.abs(ensemble.predict(inputs, verbose=0) - expected)) < 1e-5
    maps = cam_model(ensemble)
    assert maps is not None  # the heatmap is exported to TFLite like a single model's
    class_maps = maps.predict(inputs[:1], verbose=0)[0]
    for class_index in range(len(CLASS_NAMES)):
        difference = heatmap_from_class_maps(class_maps, class_index, 32) - gradcam(ensemble, inputs[0], class_index)
        assert np.max(np.abs(difference)) < 1e-4


def test_accel_train_members_load_into_an_ensemble(tmp_path):
    from ml.accel_train import main as accel_train
    from ml.architectures import build_ensemble
    from ml.ensemble import load_members
    from ml.pack import Pack

    rng = np.random.default_rng(0)
    count, size = 24, 32
    labels = np.arange(count) % 3
    frames = (rng.uniform(0, 60, (count, size, size)) + labels[:, None, None] * 80).astype(np.uint8)
    masks = np.zeros((count, size, size), bool)
    masks[:, 4:28, 4:28] = True
    indices = list(range(count))
    pack = Pack(
        frames=frames, masks=masks, labels=labels, keys=[f"k{i}" for i in indices], sources=["a"] * count,
        groups={"main": {"train": indices[:18], "val": indices[18:]}}, config=LUNGS, info={},
    )
    save_pack(pack, tmp_path / "pack.npz")
    out = tmp_path / "members"
    assert accel_train([
        "--pack", str(tmp_path / "pack.npz"), "--out", str(out), "--members", "2", "--epochs", "2",
        "--workers", "0", "--batch-size", "8",
    ]) == 0
    summary = json.loads((out / "members.json").read_text())
    trained = summary["groups"]["main"]
    assert [m["seed"] for m in trained] == [101, 102]
    assert all(m["epochs"] == 2 and m["n_train"] == 18 and m["n_val"] == 6 for m in trained)
    members = load_members(members_dirs=[out], group="main", architecture="sepres-wide", input_size=size, count=None)
    assert len(members) == 2
    first, second = (m.get_layer("logits").get_weights()[0] for m in members)
    assert not np.allclose(first, second)  # two trained members, not one copied
    ensemble = build_ensemble(members)
    probabilities = ensemble.predict(pack.model_inputs(indices[18:]), verbose=0)
    assert probabilities.shape == (6, 3) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    alone = load_members(members_dirs=[out], group="main", architecture="sepres-wide", input_size=size, count=1,
                         skip=1)
    assert len(alone) == 1 and np.array_equal(alone[0].get_layer("logits").get_weights()[0], second)
    with pytest.raises(ValueError, match="3 members asked for after skipping 0, 2 trained"):
        load_members(members_dirs=[out], group="main", architecture="sepres-wide", input_size=size, count=3)
    # A second run with --first-seed trains more members of the group; both folders load in the order given.
    more = tmp_path / "more"
    assert accel_train([
        "--pack", str(tmp_path / "pack.npz"), "--out", str(more), "--members", "1", "--epochs", "1",
        "--workers", "0", "--batch-size", "8", "--first-seed", "103",
    ]) == 0
    three = load_members(members_dirs=[out, more], group="main", architecture="sepres-wide", input_size=size,
                         count=None)
    assert len(three) == 3
    assert np.array_equal(three[0].get_layer("logits").get_weights()[0], first)
    assert np.array_equal(three[1].get_layer("logits").get_weights()[0], second)
    with np.load(more / "main.npz") as data:
        logits_kernel = [data[k] for k in sorted(data.files)][-2]
    assert np.array_equal(three[2].get_layer("logits").get_weights()[0], logits_kernel)


def test_members_without_a_pooled_head_are_not_averaged():
    from ml.architectures import build_ensemble, build_model, has_pooled_head

    seed = build_model(architecture="seed", input_size=32)
    assert not has_pooled_head(seed) and has_pooled_head(_members(1)[0])
    with pytest.raises(ValueError, match="one such member can be used alone"):
        build_ensemble([seed, build_model(architecture="seed", input_size=32)])

"""Source-balanced class weights: each collection carries an equal share of its class, capped per film."""

import numpy as np
import pytest

from ml.train import class_weights, source_balanced_weights


def composition(cells):
    labels, sources = [], []
    for (label, source), count in cells.items():
        labels += [label] * count
        sources += [source] * count
    return np.array(labels), sources


def test_each_source_of_a_class_weighs_the_same_and_each_class_keeps_its_total():
    labels, sources = composition({(0, "a"): 30, (0, "b"): 10, (1, "a"): 40, (2, "c"): 20})
    weights, factors = source_balanced_weights(labels, sources)
    assert factors["covid"] == {"a": pytest.approx(2 / 3, abs=1e-4), "b": 2.0}
    assert factors["normal"] == {"a": 1.0} and factors["pneumonia"] == {"c": 1.0}  # one source: unchanged
    per_class = class_weights(labels)
    for label in range(3):
        in_class = labels == label
        assert weights[in_class].sum() == pytest.approx(per_class[label] * in_class.sum(), rel=1e-5)
    is_a, is_b = (labels == 0) & (np.array(sources) == "a"), (labels == 0) & (np.array(sources) == "b")
    assert weights[is_a].sum() == pytest.approx(weights[is_b].sum(), rel=1e-5)


def test_a_tiny_cell_is_capped_and_its_class_keeps_its_total():
    # Like the development pool's normal class: 346 NIH films and 8 from cohen.
    labels, sources = composition({(1, "nih"): 346, (1, "cohen"): 8, (0, "cxnet"): 50})
    weights, factors = source_balanced_weights(labels, sources, max_factor=5)
    assert factors["normal"]["cohen"] == 5.0
    assert factors["normal"]["nih"] == pytest.approx((354 - 40) / 346, abs=1e-4)
    in_class = labels == 1
    assert weights[in_class].sum() == pytest.approx(class_weights(labels)[1] * 354, rel=1e-5)


def test_a_mismatch_or_a_cap_below_one_is_refused():
    with pytest.raises(ValueError, match="3 labels but 2 sources"):
        source_balanced_weights(np.array([0, 1, 2]), ["a", "b"])
    with pytest.raises(ValueError, match="at least 1"):
        source_balanced_weights(np.array([0, 1, 2]), ["a", "b", "c"], max_factor=0.5)


def test_balanced_training_feeds_the_weights_and_records_them(tmp_path):
    from ml.artifact import load_metadata
    from ml.augment import LIGHT
    from ml.preprocess import PreprocessConfig, preprocess_batch
    from ml.train import _make_batches, train_model

    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(3), 12)
    sources = ["north" if index % 4 == 0 else "south" for index in range(len(labels))]
    films = []
    for label in labels:
        film = rng.uniform(0, 0.3, (32, 32)).astype(np.float32)
        film[2 + 10 * label:10 + 10 * label, 4:28] += 0.6  # class = band position
        films.append(np.clip(film, 0, 1))
    config = PreprocessConfig(input_size=32)
    weights, _ = source_balanced_weights(labels[:27], sources[:27])
    batches = _make_batches(films=films[:27], model_inputs=preprocess_batch(films[:27], config),
                            labels=labels[:27], batch_size=9, config=config,
                            augment=LIGHT, seed=0, film_weights=weights)
    _, batch_labels, batch_weights = batches[0]
    picked = batches.order[:9]
    assert np.array_equal(batch_labels, labels[picked]) and np.allclose(batch_weights, weights[picked])

    common = dict(train_films=films[:27], train_labels=labels[:27], val_films=films[27:], val_labels=labels[27:],
                  architecture="tiny", config=config, augment=LIGHT, epochs=2, seed=1, name="tiny-bal",
                  version="0", batch_size=9, patience=2, threads=1, verbose=0, balance_sources=5.0)
    with pytest.raises(ValueError, match="source of every training film"):
        train_model(**common, out_dir=tmp_path / "refused")
    result = train_model(**common, out_dir=tmp_path / "tiny", train_sources=sources[:27])
    recorded = load_metadata(result.artifact_dir).training["source_balanced"]
    assert recorded["max_factor"] == 5.0
    assert set(recorded["factor_per_class_and_source"]["covid"]) == {"north", "south"}


def test_balancing_and_an_adversary_are_both_recorded(tmp_path):
    from ml.artifact import load_metadata
    from ml.augment import LIGHT
    from ml.preprocess import PreprocessConfig
    from ml.train import train_model

    rng = np.random.default_rng(1)
    labels = np.tile(np.arange(3), 8)
    sources = ["north" if index % 3 == 0 else "south" for index in range(len(labels))]
    films = [np.clip(rng.uniform(0, 0.3, (32, 32)) + 0.2 * label, 0, 1).astype(np.float32) for label in labels]
    result = train_model(
        train_films=films[:18], train_labels=labels[:18], val_films=films[18:], val_labels=labels[18:],
        architecture="tiny", config=PreprocessConfig(input_size=32), augment=LIGHT, out_dir=tmp_path / "both",
        epochs=1, seed=0, name="t", version="0", batch_size=6, threads=1, verbose=0,
        balance_sources=5.0, source_adversary=0.5, train_sources=sources[:18], val_sources=sources[18:],
    )
    training = load_metadata(result.artifact_dir).training
    assert training["source_balanced"]["max_factor"] == 5.0
    assert training["source_adversary"]["strength"] == 0.5

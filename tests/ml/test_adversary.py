"""Source-adversarial training (ml.adversary): gradient reversal, schedule, and a trained artifact."""

import json

import numpy as np
import pytest

from ml.adversary import ramp
from ml.labels import CLASS_NAMES


def test_ramp_starts_at_zero_and_approaches_one():
    assert ramp(0.0) == 0.0
    assert 0.84 < ramp(0.25) < 0.85
    assert 0.98 < ramp(0.5) < 0.99 and ramp(1.0) > 0.9999
    assert [ramp(p) for p in (0.1, 0.2, 0.4)] == sorted(ramp(p) for p in (0.1, 0.2, 0.4))


def test_gradient_reversal_is_identity_forward_and_negates_the_gradient():
    import tensorflow as tf

    from ml.adversary import gradient_reversal_layer

    layer = gradient_reversal_layer()
    layer.strength.assign(0.7)
    x = tf.constant([[1.0, -2.0, 3.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * tf.constant([[1.0, 2.0, 3.0]]))
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), [[-0.7, -1.4, -2.1]], rtol=1e-6)


def test_a_network_without_pooled_features_is_refused():
    from ml.adversary import build_trainer
    from ml.architectures import build_model

    with pytest.raises(ValueError, match="pooled features"):
        build_trainer(build_model(architecture="seed", input_size=32), num_sources=2)


@pytest.fixture(scope="module")
def adversarial_artifact(tmp_path_factory):
    from ml.augment import LIGHT
    from ml.preprocess import PreprocessConfig
    from ml.train import train_model

    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(3), 16)
    sources = ["north" if index % 2 else "south" for index in range(len(labels))]
    films = []
    for label, source in zip(labels, sources):
        film = rng.uniform(0, 0.3, (48, 48)).astype(np.float32)
        film[4 + 14 * label:16 + 14 * label, 6:42] += 0.6  # class = band position
        if source == "north":
            film[:, :4] += 0.5  # a collection mark
        films.append(np.clip(film, 0, 1))
    out = tmp_path_factory.mktemp("adversary") / "tiny"
    result = train_model(
        train_films=films[:36], train_labels=labels[:36], val_films=films[36:], val_labels=labels[36:],
        architecture="tiny", config=PreprocessConfig(input_size=48), augment=LIGHT, out_dir=out,
        epochs=4, seed=1, name="tiny-adv", version="0", batch_size=12, patience=4, threads=1, verbose=0,
        source_adversary=0.5, train_sources=sources[:36], val_sources=sources[36:40] + ["elsewhere"] * 8,
    )
    return result


def test_adversarial_training_exports_the_classifier_alone(adversarial_artifact):
    import keras

    from ml.artifact import load_metadata, verify_artifact

    path = adversarial_artifact.artifact_dir
    assert verify_artifact(path)
    model = keras.models.load_model(path / "model.keras", compile=False)
    names = {layer.name for layer in model.layers}
    assert not any(name.startswith(("adversary", "gradient_reversal")) for name in names)
    assert model.output.shape[-1] == len(CLASS_NAMES) and len(model.inputs) == 1
    training = load_metadata(path).training
    assert training["source_adversary"]["sources"] == ["north", "south"]
    assert training["source_adversary"]["strength"] == 0.5
    assert training["source_adversary"]["early_stopping_on"] == "val_class_loss"


def test_adversary_strength_follows_the_ramp_and_both_heads_are_logged(adversarial_artifact):
    history = json.loads((adversarial_artifact.artifact_dir / "history.json").read_text())
    assert history["adversary_strength"] == pytest.approx([0.5 * ramp(epoch / 4) for epoch in range(4)], abs=1e-6)
    for key in ("class_loss", "source_loss", "val_class_loss", "val_source_loss"):
        assert len(history[key]) == 4 and all(np.isfinite(history[key]))


def test_an_adversary_without_two_sources_is_refused(tmp_path):
    from ml.augment import LIGHT
    from ml.preprocess import PreprocessConfig
    from ml.train import train_model

    films = [np.full((32, 32), 0.1 * (index % 3), dtype=np.float32) for index in range(6)]
    common = dict(train_films=films, train_labels=np.arange(6) % 3, val_films=films, val_labels=np.arange(6) % 3,
                  architecture="tiny", config=PreprocessConfig(input_size=32), augment=LIGHT, out_dir=tmp_path,
                  epochs=1, seed=0, name="t", version="0", threads=1, verbose=0, source_adversary=1.0)
    with pytest.raises(ValueError, match="the source of every training and validation film"):
        train_model(**common)
    with pytest.raises(ValueError, match="two sources or more"):
        train_model(**common, train_sources=["unknown"] * 6, val_sources=["unknown"] * 6)

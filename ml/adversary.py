"""Source-adversarial training: make the pooled features useless for telling collections apart within a class.

The source probe (``ml.source_probe``) shows that a linear read-out of the
production model's pooled features tells ``cohen`` pneumonias from ``nih``
ones (AUC 0.87 on test), although the network sees only the lungs. This is
the classic remedy for such a cue (domain-adversarial training, Ganin et al.
2016), applied within classes:

- a small head predicts each training film's **source** from the pooled
  features **and its true class**, so it can only gain from what identifies
  the collection beyond the class itself (a class drawn from one source gives
  it nothing to learn, and so no gradient to reverse);
- between the features and that head sits a gradient-reversal layer: the
  head learns to name the source, the network below it receives the opposite
  gradient, scaled by a strength that ramps from 0 to ``strength`` over the
  epochs (``2 / (1 + exp(-10 p)) - 1`` of the fraction ``p`` of epochs run).

Only the classifier is exported: the head and the reversal exist in training.
"""

from __future__ import annotations

import math

import numpy as np

from ml.architectures import POOLED_FEATURES_LAYER as FEATURES_LAYER
from ml.architectures import has_pooled_head

ADVERSARY_HIDDEN = 64


def ramp(progress: float) -> float:
    """The DANN schedule: 0 at the start, about 0.85 at a quarter of training, 0.99 at the middle."""
    return 2.0 / (1.0 + math.exp(-10.0 * float(progress))) - 1.0


def gradient_reversal_layer():
    """A layer that is the identity forward and multiplies the gradient by ``-strength`` backward."""
    import keras
    import tensorflow as tf

    class GradientReversal(keras.layers.Layer):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            self.strength = keras.Variable(0.0, trainable=False, dtype="float32", name="strength")

        def call(self, inputs):
            @tf.custom_gradient
            def reverse(x, strength):
                def grad(upstream):
                    return -strength * upstream, tf.zeros_like(strength)

                return tf.identity(x), grad

            return reverse(inputs, tf.convert_to_tensor(self.strength))

    return GradientReversal(name="gradient_reversal")


def build_trainer(model, *, num_sources: int):
    """Wrap a classifier: inputs (image, one-hot true class), outputs ``class`` and ``source`` probabilities.

    Returns ``(trainer, reversal)``; the trainer shares every classifier weight.
    """
    import keras

    if not has_pooled_head(model):
        raise ValueError(f"a source adversary needs pooled features (a {FEATURES_LAYER!r} layer); "
                         f"{model.name!r} has none")
    num_classes = int(model.output.shape[-1])
    true_class = keras.Input((num_classes,), name="true_class")
    features = model.get_layer(FEATURES_LAYER).output
    reversal = gradient_reversal_layer()
    x = keras.layers.Concatenate(name="adversary_input")([reversal(features), true_class])
    x = keras.layers.Dense(ADVERSARY_HIDDEN, activation="relu", name="adversary_hidden")(x)
    source = keras.layers.Dense(num_sources, activation="softmax", name="adversary_source")(x)
    classes = keras.layers.Identity(name="class")(model.output)
    source = keras.layers.Identity(name="source")(source)
    trainer = keras.Model([model.input, true_class], {"class": classes, "source": source}, name="adversarial")
    return trainer, reversal


def strength_schedule(reversal, *, strength: float, epochs: int):
    """A callback that sets the reversal's strength at the start of every epoch."""
    import keras

    class Schedule(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            reversal.strength.assign(strength * ramp(epoch / max(epochs, 1)))

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["adversary_strength"] = float(reversal.strength.numpy())

    return Schedule()


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]


def source_indices(sources, names: list[str]) -> np.ndarray:
    """Index of each film's source in ``names``."""
    lookup = {name: index for index, name in enumerate(names)}
    return np.array([lookup[source] for source in sources], dtype=np.int64)

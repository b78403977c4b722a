"""Keras model definitions. TensorFlow/Keras are imported inside functions.

Every model ends in a Dense layer named ``logits`` followed by a Softmax named
``probabilities``, and names its last convolutional feature map
``gradcam_features`` so that Grad-CAM works on any of them.
"""

from __future__ import annotations

from ml.serving.gradcam import GRADCAM_LAYER, POOLED_FEATURES_LAYER
from ml.serving.labels import CLASS_NAMES

ARCHITECTURES = ("seed", "sepres-wide", "tiny")

# Keras' default 0.99 leaves the running statistics far from the data after the
# few hundred steps these small data sets give; validation then collapses onto one class.
BN_MOMENTUM = 0.9


def build_model(*, architecture: str, input_size: int, num_classes: int = len(CLASS_NAMES)):
    if architecture == "seed":
        return build_seed(input_size=input_size, num_classes=num_classes)
    if architecture == "sepres-wide":
        return build_sepres(input_size=input_size, num_classes=num_classes, width=2.0)
    if architecture == "tiny":
        return build_tiny(input_size=input_size, num_classes=num_classes)
    raise ValueError(f"unknown architecture {architecture!r}; choose from {ARCHITECTURES}")


def _head(features, *, num_classes: int):
    import keras

    logits = keras.layers.Dense(num_classes, name="logits")(features)
    return keras.layers.Softmax(name="probabilities")(logits)


def build_seed(*, input_size: int, num_classes: int):
    """The baseline: ten 3x3 ReLU convolutions with batch norm, flatten, two dense 100s."""
    import keras

    inputs = keras.Input((input_size, input_size, 1), name="image")
    filters = (8, 16, 32, 16, 32, 64, 32, 64, 128, 64)
    pool_after = {1, 2, 5, 8}
    x = inputs
    for index, count in enumerate(filters, start=1):
        x = keras.layers.Conv2D(count, 3, padding="same", activation="relu", name=f"conv{index}")(x)
        name = GRADCAM_LAYER if index == len(filters) else f"bn{index}"
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)(x)
        if index in pool_after:
            x = keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for index in (1, 2):
        x = keras.layers.Dense(100, activation="relu", name=f"dense{index}")(x)
        x = keras.layers.Dropout(0.25, name=f"dropout{index}")(x)
    return keras.Model(inputs, _head(x, num_classes=num_classes), name="seed")


def _residual_block(x, *, filters: int, stride: int, name: str):
    import keras

    regularizer = keras.regularizers.L2(1e-4)
    shortcut = x
    y = keras.layers.SeparableConv2D(
        filters, 3, strides=stride, padding="same", use_bias=False,
        depthwise_regularizer=regularizer, pointwise_regularizer=regularizer, name=f"{name}_sep1",
    )(x)
    y = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.SeparableConv2D(
        filters, 3, padding="same", use_bias=False,
        depthwise_regularizer=regularizer, pointwise_regularizer=regularizer, name=f"{name}_sep2",
    )(y)
    y = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn2")(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=stride, use_bias=False, kernel_regularizer=regularizer, name=f"{name}_proj"
        )(shortcut)
        shortcut = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_proj_bn")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def build_sepres(*, input_size: int, num_classes: int, width: float = 1.0):
    """Small residual CNN with depthwise-separable convolutions and global average pooling.

    Global average pooling (instead of flatten) stops the head from memorising
    where in the frame something appears, which is how border and text
    artefacts are usually exploited. ``width`` scales every layer's channels
    ("sepres-wide" is width 2: the 1x model under-fits the lung crops, with
    training accuracy stuck near validation accuracy).
    """
    import keras

    def channels(count: int) -> int:
        return int(round(count * width / 8)) * 8

    inputs = keras.Input((input_size, input_size, 1), name="image")
    x = keras.layers.Conv2D(channels(24), 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, (filters, stride) in enumerate(((32, 1), (64, 2), (96, 2), (128, 2)), start=1):
        x = _residual_block(x, filters=channels(filters), stride=stride, name=f"block{stage}")
    x = keras.layers.Activation("linear", name=GRADCAM_LAYER)(x)
    x = keras.layers.GlobalAveragePooling2D(name=POOLED_FEATURES_LAYER)(x)
    x = keras.layers.Dropout(0.3, name="dropout")(x)
    return keras.Model(inputs, _head(x, num_classes=num_classes), name="sepres")


def build_tiny(*, input_size: int, num_classes: int):
    """A few thousand parameters: trains in seconds, for end-to-end tests only."""
    import keras

    inputs = keras.Input((input_size, input_size, 1), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name=GRADCAM_LAYER)(x)
    x = keras.layers.GlobalAveragePooling2D(name=POOLED_FEATURES_LAYER)(x)
    return keras.Model(inputs, _head(x, num_classes=num_classes), name="tiny")

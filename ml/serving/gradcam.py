"""Grad-CAM for the predicted class, and a PNG overlay for the portal."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# Every architecture names its last convolutional feature map so; Grad-CAM and the familiarity check read it.
GRADCAM_LAYER = "gradcam_features"
# The global average pooling the Dense head reads (sepres, tiny); the seed flattens instead.
POOLED_FEATURES_LAYER = "gap"



def has_pooled_head(model) -> bool:
    """Whether the network ends gradcam_features -> global average pooling -> Dense logits."""
    return any(layer.name == POOLED_FEATURES_LAYER for layer in model.layers)

def gradcam(keras_model, model_input: np.ndarray, class_index: int) -> np.ndarray:
    """Heatmap (S, S) in [0, 1] of where the model looked for ``class_index``.

    Uses the pre-softmax logit so the gradient does not vanish when the
    model is confident.
    """
    import keras
    import tensorflow as tf

    image = np.asarray(model_input, dtype=np.float32)
    if image.ndim == 2:
        image = image[..., None]
    size = image.shape[0]
    grad_model = keras.Model(
        keras_model.inputs,
        [keras_model.get_layer(GRADCAM_LAYER).output, keras_model.get_layer("logits").output],
    )
    batch = tf.convert_to_tensor(image[None])
    with tf.GradientTape() as tape:
        features, logits = grad_model(batch, training=False)
        score = logits[:, class_index]
    gradients = tape.gradient(score, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2))
    cam = tf.reduce_sum(features * weights[:, None, None, :], axis=-1)[0].numpy()
    return heatmap_from_class_maps(cam[..., None], 0, size)


def cam_model(keras_model):
    """A Keras model giving every class's activation map (h, w, classes), or None for other heads.

    For a network whose Grad-CAM features reach the logits only through
    global average pooling (and dropout) and one Dense layer, the gradient of
    a logit with respect to the features is the same at every position
    (its Dense column / h*w), so Grad-CAM equals the class activation map
    sum_k W[k, c] * A_k. Exported to TFLite, it gives the same heatmap as
    ``gradcam`` without TensorFlow at serving time.
    """
    import keras

    features = keras_model.get_layer(GRADCAM_LAYER)
    logits = keras_model.get_layer("logits")
    layers = keras_model.layers
    between = layers[layers.index(features) + 1 : layers.index(logits)]
    chain = [features, *between, logits]
    # A straight chain: each layer reads exactly the previous one's output.
    if any(later.input is not earlier.output for earlier, later in zip(chain, chain[1:])):
        return None
    if not between or not all(
        isinstance(layer, (keras.layers.GlobalAveragePooling2D, keras.layers.Dropout)) for layer in between
    ) or sum(isinstance(layer, keras.layers.GlobalAveragePooling2D) for layer in between) != 1:
        return None
    kernel = logits.get_weights()[0]  # (channels, classes)
    projection = keras.layers.Conv2D(kernel.shape[1], 1, use_bias=False, name="class_maps")
    maps = projection(features.output)
    projection.set_weights([kernel[None, None]])
    return keras.Model(keras_model.inputs, maps, name="cam")


def heatmap_from_class_maps(class_maps: np.ndarray, class_index: int, size: int) -> np.ndarray:
    """The same normalisation as ``gradcam``: ReLU, bilinear upsampling to the input, scaled to a peak of 1."""
    cam = np.maximum(np.asarray(class_maps, dtype=np.float32)[..., class_index], 0.0)
    cam = np.asarray(Image.fromarray(cam, mode="F").resize((size, size), Image.Resampling.BILINEAR))
    peak = float(cam.max())
    if not np.isfinite(peak) or peak <= 0:
        return np.zeros((size, size), dtype=np.float32)
    return np.clip(cam / peak, 0.0, 1.0).astype(np.float32)


def overlay_png(model_input: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.4) -> bytes:
    """PNG bytes: the grayscale input with a jet-coloured heatmap blended on top."""
    from matplotlib import colormaps

    gray = np.asarray(model_input, dtype=np.float32)
    if gray.ndim == 3:
        gray = gray[..., 0]
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != gray.shape:
        heat = np.asarray(Image.fromarray(heat, mode="F").resize(gray.shape[::-1], Image.Resampling.BILINEAR))
    colours = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    base = np.repeat(np.clip(gray, 0, 1)[..., None], 3, axis=-1)
    # Weight the colour by the heat so cold regions keep the radiograph visible.
    weight = alpha * np.clip(heat, 0, 1)[..., None]
    blended = (1 - weight) * base + weight * colours
    buffer = io.BytesIO()
    Image.fromarray((blended * 255 + 0.5).astype(np.uint8), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _jet_palette() -> bytes:
    """The jet colour map as a 256-entry PNG palette (RGB triplets), computed once."""
    from matplotlib import colormaps

    colours = colormaps["jet"](np.linspace(0.0, 1.0, 256))[:, :3]
    return (colours * 255 + 0.5).astype(np.uint8).tobytes()


_JET_PALETTE: bytes | None = None
# Palette entry k is as opaque as it is hot: alpha k. A PNG keeps this as its tRNS chunk.
_HEAT_ALPHA = bytes(range(256))


def heat_layer_png(heatmap: np.ndarray, *, width: int, height: int) -> bytes:
    """PNG bytes (``width`` x ``height``): the heatmap in jet colours, as opaque as it is hot.

    Cold regions are transparent, so laid over the film (at the crop box the model saw) it hides nothing the
    model did not weigh; the page sets the overall opacity. Stored as a palette PNG whose entry k is jet(k/255)
    with alpha k: one byte a pixel, against four for RGBA, and encoded in a tenth of the time (the worker makes
    one per film). Any reader that converts it to RGBA (browsers, Pillow) gets the colours within 1/255 of a
    level of the heat.
    """
    global _JET_PALETTE
    if _JET_PALETTE is None:
        _JET_PALETTE = _jet_palette()
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != (height, width):
        heat = np.asarray(Image.fromarray(heat, mode="F").resize((width, height), Image.Resampling.BILINEAR))
    levels = np.rint(np.clip(heat, 0.0, 1.0) * 255.0).astype(np.uint8)
    layer = Image.frombytes("P", (width, height), levels.tobytes())
    layer.putpalette(_JET_PALETTE)
    buffer = io.BytesIO()
    # zlib level 1: a smooth map compresses well at any level, and the default (6) took twice as long.
    layer.save(buffer, format="PNG", transparency=_HEAT_ALPHA, compress_level=1)
    return buffer.getvalue()

"""Keras -> TFLite float32 export and the equivalence check between the two.

    python -m ml export --cam ARTIFACT    add the heatmap model (cam.tflite) to an artifact
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ml.serving.artifact import file_sha256, load_metadata, save_metadata
from ml.serving.gradcam import cam_model, gradcam, heatmap_from_class_maps
from ml.serving.interpreter import make_interpreter, run_interpreter


def export_tflite(*, keras_model, path: Path | str) -> Path:
    """Convert to a float32 TFLite flatbuffer with a fixed batch of 1 (the serving shape)."""
    import tensorflow as tf

    signature = tf.TensorSpec([1, *keras_model.input_shape[1:]], tf.float32, name="image")

    @tf.function(input_signature=[signature])
    def serve(image):
        return keras_model(image, training=False)

    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # Freeze the weights into constants: otherwise the flatbuffer keeps
    # resource variables that the interpreter reads as uninitialised (NaN).
    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    path = Path(path)
    path.write_bytes(converter.convert())
    return path


def check_class_maps(*, class_maps_of, keras_model, inputs: np.ndarray, n_classes: int) -> float:
    """Largest difference between the heatmaps made from exported class maps and Keras Grad-CAM, over ``inputs``."""

    size = inputs.shape[1]
    differences = []
    for image in inputs:
        class_maps = class_maps_of(image)
        differences += [
            np.max(np.abs(heatmap_from_class_maps(class_maps, k, size) - gradcam(keras_model, image, k)))
            for k in range(n_classes)
        ]
    return float(np.max(differences))  # NaN if any is NaN


def max_tflite_difference(*, keras_model, tflite_path: Path | str, inputs: np.ndarray) -> float:
    """Largest absolute probability difference between Keras and TFLite on ``inputs`` (N, S, S, 1)."""
    interpreter = make_interpreter(tflite_path)
    keras_out = keras_model.predict(inputs, verbose=0)
    tflite_out = np.stack([run_interpreter(interpreter, image) for image in inputs])
    return float(np.max(np.abs(keras_out - tflite_out)))


CAM_FILE = "cam.tflite"


def add_cam(artifact_dir: Path | str, *, keras_model=None, check_inputs: np.ndarray | None = None) -> Path | None:
    """Export the class-activation-map model next to model.tflite and record it in metadata.json.

    Returns None (and changes nothing) when the network's head is not global
    average pooling + Dense, where Grad-CAM needs gradients (Keras) instead.
    The exported maps must give the Keras Grad-CAM heatmap within 1e-4.
    """
    import keras


    artifact_dir = Path(artifact_dir)
    metadata = load_metadata(artifact_dir)
    if keras_model is None:
        keras_model = keras.models.load_model(artifact_dir / metadata.keras_file, compile=False)
    model = cam_model(keras_model)
    if model is None:
        return None
    path = export_tflite(keras_model=model, path=artifact_dir / CAM_FILE)
    size = metadata.input_size
    if check_inputs is None:
        check_inputs = np.random.default_rng(0).uniform(0, 1, (3, size, size, 1)).astype(np.float32)
    interpreter = make_interpreter(path)
    difference = check_class_maps(class_maps_of=lambda image: run_interpreter(interpreter, image),
                                  keras_model=keras_model, inputs=check_inputs, n_classes=len(metadata.class_names))
    if not difference <= 1e-4:
        path.unlink()
        raise RuntimeError(f"cam.tflite heatmap differs from Grad-CAM by {difference:.2e}")
    metadata.cam_file = CAM_FILE
    metadata.cam_sha256 = file_sha256(path)
    save_metadata(artifact_dir=artifact_dir, metadata=metadata)
    return path


EXAMPLE = """example:
    python -m ml export --cam runs/my-model
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ml export", description="Add cam.tflite to artifacts.", epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cam", nargs="+", type=Path, required=True, help="artifact folders")
    args = parser.parse_args(argv)
    for artifact_dir in args.cam:
        path = add_cam(artifact_dir)
        print(f"{artifact_dir}: " + (f"wrote {path.name}" if path else "head is not pooling + Dense; Grad-CAM stays in Keras"))
    return 0

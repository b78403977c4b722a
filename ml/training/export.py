"""Keras -> TFLite float32 export and the equivalence check between the two.

    python -m ml.export --cam ARTIFACT    add the heatmap model (cam.tflite) to an artifact
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def export_tflite(*, keras_model, path: Path | str) -> Path:
    """Convert to a float32 TFLite flatbuffer with a fixed batch of 1 (the serving shape)."""
    import tensorflow as tf

    signature = tf.TensorSpec([1, *keras_model.input_shape[1:]], tf.float32, name="image")

    @tf.function(input_signature=[signature])
    def serve(image):
        return keras_model(image, training=False)

    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    # Freeze the weights into constants: otherwise the flatbuffer keeps
    # resource variables that the interpreter reads as uninitialised (NaN).
    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    path = Path(path)
    path.write_bytes(converter.convert())
    return path


def make_interpreter(path: Path | str, *, threads: int = 1):
    """One thread per process: the worker runs one process per core."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def run_interpreter(interpreter, image: np.ndarray) -> np.ndarray:
    """Run one (S, S, 1) input; returns the probability vector."""
    return run_interpreter_outputs(interpreter, image)[0]


def run_interpreter_outputs(interpreter, image: np.ndarray) -> list[np.ndarray]:
    """Run one (S, S, 1) input; returns every output, without the batch axis, in the flatbuffer's order."""
    input_detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(input_detail["index"], np.asarray(image, dtype=np.float32)[None])
    interpreter.invoke()
    return [np.array(interpreter.get_tensor(detail["index"])[0]) for detail in interpreter.get_output_details()]


def check_class_maps(*, class_maps_of, keras_model, inputs: np.ndarray, n_classes: int) -> float:
    """Largest difference between the heatmaps made from exported class maps and Keras Grad-CAM, over ``inputs``."""
    from ml.gradcam import gradcam, heatmap_from_class_maps

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

    from ml.artifact import file_sha256, load_metadata, save_metadata
    from ml.gradcam import cam_model

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


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ml.export", description="Add cam.tflite to artifacts.")
    parser.add_argument("--cam", nargs="+", type=Path, required=True, help="artifact folders")
    args = parser.parse_args(argv)
    for artifact_dir in args.cam:
        path = add_cam(artifact_dir)
        print(f"{artifact_dir}: " + (f"wrote {path.name}" if path else "head is not pooling + Dense; Grad-CAM stays in Keras"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

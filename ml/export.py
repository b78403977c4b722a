"""Keras -> TFLite float32 export and the equivalence check between the two."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def export_tflite(*, keras_model, path: Path | str) -> Path:
    """Convert to a float32 TFLite flatbuffer with a fixed batch of 1 (the serving shape)."""
    import tensorflow as tf

    size = keras_model.input_shape[1]
    signature = tf.TensorSpec([1, size, size, 1], tf.float32, name="image")

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


def make_interpreter(path: Path | str, *, threads: int = 1):
    """One thread per process: the worker runs one process per core."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def run_interpreter(interpreter, image: np.ndarray) -> np.ndarray:
    """Run one (S, S, 1) input; returns the probability vector."""
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    interpreter.set_tensor(input_detail["index"], np.asarray(image, dtype=np.float32)[None])
    interpreter.invoke()
    return np.array(interpreter.get_tensor(output_detail["index"])[0])


def max_tflite_difference(*, keras_model, tflite_path: Path | str, inputs: np.ndarray) -> float:
    """Largest absolute probability difference between Keras and TFLite on ``inputs`` (N, S, S, 1)."""
    interpreter = make_interpreter(tflite_path)
    keras_out = keras_model.predict(inputs, verbose=0)
    tflite_out = np.stack([run_interpreter(interpreter, image) for image in inputs])
    return float(np.max(np.abs(keras_out - tflite_out)))

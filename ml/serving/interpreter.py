"""Running exported TFLite models with LiteRT (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


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

"""Seeds and thread limits for TensorFlow/Keras, set once before training."""

from __future__ import annotations


def configure_tensorflow(*, threads: int, seed: int) -> None:
    """Fix seeds and cap threads (the machine's cores are shared)."""
    import keras
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised in this process (tests): keep the earlier setting
    keras.utils.set_random_seed(seed)

"""ml.serving layer."""

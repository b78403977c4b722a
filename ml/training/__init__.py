"""ml.training layer."""

"""ml.evaluation layer."""

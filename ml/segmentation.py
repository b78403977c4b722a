"""Lung segmentation used by preprocessing (placeholder until the segmenter is trained)."""

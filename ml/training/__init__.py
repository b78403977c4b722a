"""Making an artifact: architectures, augmentation, training, export, the lung segmenter, the familiarity fit and
recalibration. Builds on ml.serving and ml.evaluation (an artifact is measured on its validation films).
"""

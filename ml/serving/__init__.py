"""What the worker runs on every film: decoding, preprocessing, finding the lungs, the predictor, applying
calibration, the familiarity and stability checks, heatmaps, loading artifacts, and the site monitor's rules;
also the --model/--data options the ``python -m ml`` commands share, as the lowest layer they all may import.

Imports neither ml.evaluation nor ml.training (.importlinter); TensorFlow only inside the functions that need it.
"""

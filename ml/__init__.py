"""Chest X-ray machine learning: plain Python, no Django.

Three layers, each named for its users (a lower one never imports a higher one; .importlinter checks it):

- ``ml.serving``: what the worker runs on every film.
- ``ml.evaluation``: measuring an artifact on labelled films.
- ``ml.training``: making an artifact.

Modules take arrays and paths and return dataclasses. TensorFlow is imported
lazily inside the functions that need it so that importing ``ml`` stays cheap.
"""

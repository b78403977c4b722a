"""Chest X-ray machine learning: plain Python, no Django.

Modules take arrays and paths and return dataclasses. TensorFlow is imported
lazily inside the functions that need it so that importing ``ml`` stays cheap.
"""

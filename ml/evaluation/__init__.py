"""Measuring an artifact on labelled films: data sets and splits, metrics, fitting the operating point,
evaluation in steps (collect, summarise, audit, write), reports, plots, the shortcut audit, the source probe and
the monitor's replay. Builds on ml.serving only.
"""

"""Scoring: class maps against labels.

Labels onto the prediction's grid, the streaming confusion matrix, reports and
object-level metrics.
"""

"""Vectorizing: class maps to GIS polygons and centre lines.

Chunked polygonize, seam merge, post-processing, regularization and writers.
"""

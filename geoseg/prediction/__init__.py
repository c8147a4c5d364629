"""Prediction: a scene in, a georeferenced class map out.

Tiling, inference engines, stitching, the dask graph, outputs, distributed workers,
batches and previews.
"""

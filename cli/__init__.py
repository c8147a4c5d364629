"""The geoseg command-line interface (installed as ``geoseg.cli``)."""

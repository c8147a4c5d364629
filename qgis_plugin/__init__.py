"""Data only: the QGIS plugin ``geoseg_qgis`` shipped in the geoseg distribution.

Nothing here is imported by geoseg; ``geoseg qgis install`` copies or links the folder
``geoseg_qgis`` into a QGIS profile. It is a package only so ``importlib.resources`` can
find it.
"""

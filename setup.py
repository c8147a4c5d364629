"""Package list for setuptools; everything else is in pyproject.toml.

``find_packages`` puts every ``geoseg`` subpackage in the wheel, so a new stage package can
never be left out again; ``cli/`` and ``qgis_plugin/`` are mapped to ``geoseg.cli`` and
``geoseg.qgis_plugin`` by ``package-dir`` in pyproject.toml, which ``packages.find`` there
cannot express.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["geoseg", "geoseg.*"]), "geoseg.cli",
                "geoseg.qgis_plugin"])

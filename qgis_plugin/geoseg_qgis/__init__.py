"""GeoSeg QGIS plugin: a Processing provider that runs the geoseg command line."""


def classFactory(iface):
    """Return the plugin instance QGIS asks for (``iface`` is None in qgis_process)."""
    from .plugin import GeosegPlugin

    return GeosegPlugin(iface)

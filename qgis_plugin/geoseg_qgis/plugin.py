"""Plugin object: registers the GeoSeg Processing provider."""

from __future__ import annotations

from qgis.core import QgsApplication

from .provider import GeosegProvider


class GeosegPlugin:
    """What ``classFactory`` returns; qgis_process calls only :meth:`initProcessing`."""

    def __init__(self, iface: object) -> None:
        self.iface = iface
        self.provider: GeosegProvider | None = None

    def initProcessing(self) -> None:
        """Add the provider to the Processing registry (once)."""
        if self.provider is None:
            self.provider = GeosegProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        """Desktop start-up: the provider is all the GUI there is."""
        self.initProcessing()

    def unload(self) -> None:
        """Remove the provider (plugin reload or uninstall)."""
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

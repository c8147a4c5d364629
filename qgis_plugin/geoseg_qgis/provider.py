"""The GeoSeg Processing provider and its one setting (the geoseg executable)."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider, QgsSettings

from .runner import SETTING_EXECUTABLE

try:  # the Processing plugin's settings dialog (Options > Processing > Providers)
    from processing.core.ProcessingConfig import ProcessingConfig, Setting
except ImportError:  # pragma: no cover - Processing plugin disabled
    ProcessingConfig = None
    Setting = None

PROVIDER_NAME = "GeoSeg"


def executable_setting() -> str | None:
    """Return the 'geoseg executable' Processing option, or None when unset."""
    if ProcessingConfig is not None:
        value = ProcessingConfig.getSetting(SETTING_EXECUTABLE)
    else:
        value = QgsSettings().value(f"Processing/Configuration/{SETTING_EXECUTABLE}", "")
    return str(value) if value else None


class GeosegProvider(QgsProcessingProvider):
    """Provider ``geoseg``: Segment raster, Vectorize, Score."""

    def load(self) -> bool:
        if ProcessingConfig is not None:
            ProcessingConfig.settingIcons[self.name()] = self.icon()
            ProcessingConfig.addSetting(Setting(
                self.name(), SETTING_EXECUTABLE,
                "geoseg executable (<geoseg environment>/bin/geoseg; empty: "
                "GEOSEG_EXECUTABLE, then PATH)", "", valuetype=Setting.FILE))
            ProcessingConfig.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        if ProcessingConfig is not None and SETTING_EXECUTABLE in ProcessingConfig.settings:
            ProcessingConfig.removeSetting(SETTING_EXECUTABLE)

    def loadAlgorithms(self) -> None:
        from .algorithms import ScoreAlgorithm, SegmentRasterAlgorithm, VectorizeAlgorithm

        for alg in (SegmentRasterAlgorithm(), VectorizeAlgorithm(), ScoreAlgorithm()):
            self.addAlgorithm(alg)

    def id(self) -> str:
        return "geoseg"

    def name(self) -> str:
        return PROVIDER_NAME

    def longName(self) -> str:
        return "GeoSeg: semantic segmentation of satellite and aerial imagery"

    def supportsNonFileBasedOutput(self) -> bool:
        # geoseg writes files; QGIS then gives every destination a real file path.
        return False

    def supportedOutputRasterLayerExtensions(self) -> list[str]:
        return ["tif"]

    def supportedOutputVectorLayerExtensions(self) -> list[str]:
        return ["gpkg", "geojson", "fgb", "shp"]

    def defaultVectorFileExtension(self, hasGeometry: bool = True) -> str:
        return "gpkg"

    def defaultRasterFileExtension(self) -> str:
        return "tif"

"""Processing algorithms that mirror geoseg's commands: predict, vectorize, score.

Each one builds a geoseg command line, runs it through :mod:`.runner` (a subprocess with a
cleaned environment) and maps its outcome onto Processing: progress and log lines go to
the feedback, Cancel stops geoseg and removes the partial output, a failure raises
``QgsProcessingException`` with geoseg's one-line message.
"""

from __future__ import annotations

import html
import json
import os
import shlex
from pathlib import Path
from typing import Any, ClassVar

from qgis.core import (
    QgsApplication,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsRasterLayer,
)

from . import runner
from .provider import executable_setting


def _executable() -> str:
    try:
        return runner.find_executable(executable_setting())
    except runner.GeosegNotFound as exc:
        raise QgsProcessingException(str(exc)) from None


def _models_cache() -> Path:
    return Path(QgsApplication.qgisSettingsDirPath()) / "geoseg_qgis" / "models.json"


def _default_models() -> list[str]:
    """Model names for the enum; never fails (QGIS builds algorithms at start-up)."""
    try:
        exe = runner.find_executable(executable_setting())
    except runner.GeosegNotFound:
        return list(runner.DEFAULT_MODELS)
    return runner.list_models(exe, cache=_models_cache())


def _layer_path(layer: Any, what: str) -> str:
    """Return the file behind ``layer`` (GDAL/OGR sources only; geoseg opens files itself)."""
    if layer is None:
        raise QgsProcessingException(f"{what}: no layer given")
    source = layer.source()
    path = source.split("|")[0]
    if layer.providerType() not in ("gdal", "ogr") or not (
            os.path.exists(path) or path.startswith("/vsi")):
        raise QgsProcessingException(
            f"{what}: layer {layer.name()!r} is not a file ({source!r}); save it to a "
            "GeoTIFF or GeoPackage first (Export > Save As)")
    return path


def class_legend(path: str) -> list[tuple[int, str, tuple[int, int, int]]]:
    """Classes ``(id, name, rgb)`` from a geoseg class map's tags (QGIS's own GDAL)."""
    try:
        from osgeo import gdal
    except ImportError:  # pragma: no cover - QGIS always ships GDAL's bindings
        return []
    ds = gdal.Open(path)
    if ds is None:
        return []
    try:
        return runner.parse_class_tags(ds.GetMetadata() or {})
    finally:
        ds = None


def apply_class_legend(layer: QgsRasterLayer, path: str | None = None) -> bool:
    """Give ``layer`` a paletted renderer with the class map's real names and colours.

    GDAL's colour table has 256 entries, so QGIS's default legend lists 0..255; this keeps
    only the model's classes. Returns False (layer untouched) if the map has no class tags.
    """
    from qgis.core import QgsPalettedRasterRenderer
    from qgis.PyQt.QtGui import QColor

    classes = class_legend(path or layer.source())
    if not classes or not layer.isValid():
        return False
    renderer = QgsPalettedRasterRenderer(
        layer.dataProvider(), 1,
        [QgsPalettedRasterRenderer.Class(cid, QColor(*rgb), name)
         for cid, name, rgb in classes])
    layer.setRenderer(renderer)
    layer.triggerRepaint()
    return True


class ClassLegendPostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Sets the class legend once QGIS has loaded the class map."""

    _alive: ClassVar[list[ClassLegendPostProcessor]] = []  # PyQGIS: keep the Python side alive

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    @classmethod
    def create(cls, path: str) -> ClassLegendPostProcessor:
        """Return a post-processor kept alive until QGIS has used it."""
        cls._alive = cls._alive[-15:]
        cls._alive.append(cls(path))
        return cls._alive[-1]

    def postProcessLayer(self, layer: Any, context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> None:
        if isinstance(layer, QgsRasterLayer) and not apply_class_legend(layer, self.path):
            feedback.pushInfo("class map has no class tags; keeping QGIS's default legend")


class GeosegAlgorithm(QgsProcessingAlgorithm):
    """Shared plumbing: run geoseg, relay progress, honour Cancel."""

    _name = ""
    _display = ""
    _group = ("segmentation", "Segmentation")
    _help = ""

    def createInstance(self) -> GeosegAlgorithm:
        return type(self)()

    def name(self) -> str:
        return self._name

    def displayName(self) -> str:
        return self._display

    def groupId(self) -> str:
        return self._group[0]

    def group(self) -> str:
        return self._group[1]

    def shortHelpString(self) -> str:
        return self._help

    def run_geoseg(self, args: list[str], outputs: list[str],
                   feedback: QgsProcessingFeedback) -> runner.RunResult:
        """Run ``geoseg args...``; on Cancel or failure remove ``outputs`` written by it."""
        exe = _executable()
        before = {o: _mtime(o) for o in outputs}
        feedback.pushCommandInfo(" ".join(shlex.quote(a) for a in [exe, *args]))

        def on_text(message: str) -> None:
            if message.startswith("Warning:") and hasattr(feedback, "pushWarning"):
                feedback.pushWarning(message)
            else:
                feedback.pushConsoleInfo(message)

        def cleanup() -> None:
            for out in outputs:
                if _mtime(out) != before[out] or before[out] is None:
                    runner.remove_partials(out)

        try:
            return runner.run_geoseg(
                args, executable=exe, on_progress=lambda f: feedback.setProgress(100.0 * f),
                on_log=feedback.pushInfo, on_text=on_text, is_canceled=feedback.isCanceled)
        except runner.Cancelled:
            cleanup()
            # Raise rather than return {}: a cancelled step must not look like a success to
            # qgis_process (exit status) or to the next step of a model.
            raise QgsProcessingException(
                "Cancelled: geoseg was stopped and its partial output removed") from None
        except runner.GeosegFailed as exc:
            cleanup()
            raise QgsProcessingException(str(exc)) from None
        except OSError as exc:
            raise QgsProcessingException(f"cannot run {exe}: {exc}") from None


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


class SegmentRasterAlgorithm(GeosegAlgorithm):
    """``geoseg predict``: a georeferenced class map from a scene."""

    _name = "segmentraster"
    _display = "Segment raster"
    _help = ("Predicts a land-cover class map (GeoTIFF, same grid and CRS as the input) "
             "with a geoseg model. Runs <i>geoseg predict</i> in geoseg's own environment.<br>"
             "<b>Model</b>: a default model (<i>geoseg models</i>); <b>Model bundle</b>, if "
             "given, overrides it with a .safetensors file from <i>geoseg train</i>.<br>"
             "<b>Bands</b>: input bands in the model's order (default: all).<br>"
             "The result is loaded with the model's class names and colours.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Input raster"))
        models = _default_models()
        model = QgsProcessingParameterEnum(
            "MODEL", "Model", options=models,
            defaultValue="deeplab" if "deeplab" in models else models[0])
        model.setUsesStaticStrings(True)
        self.addParameter(model)
        self.addParameter(QgsProcessingParameterFile(
            "MODEL_FILE", "Model bundle (overrides Model)", optional=True,
            fileFilter="geoseg model bundles (*.safetensors)"))
        self.addParameter(QgsProcessingParameterBand(
            "BANDS", "Bands, in the model's order (default: all)", None, "INPUT",
            optional=True, allowMultiple=True))
        device = QgsProcessingParameterString(
            "DEVICE", "Device (auto, cpu, cuda, cuda:N, mps)", defaultValue="auto")
        device.setFlags(device.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(device)
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Class map"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "PROBABILITIES", "Class probabilities (uint8, p = value/254)", optional=True,
            createByDefault=False))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        src = _layer_path(self.parameterAsRasterLayer(parameters, "INPUT", context), "Input")
        model = (self.parameterAsFile(parameters, "MODEL_FILE", context)
                 or self.parameterAsEnumString(parameters, "MODEL", context))
        bands = self.parameterAsInts(parameters, "BANDS", context)
        device = self.parameterAsString(parameters, "DEVICE", context) or "auto"
        out = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        probs = self.parameterAsOutputLayer(parameters, "PROBABILITIES", context)
        args = ["predict", src, "-o", out, "--model", model, "--device", device,
                "--overwrite", "--progress", "json"]
        if bands:
            args += ["--bands", ",".join(str(b) for b in bands)]
        if probs:
            args += ["--probabilities", probs]
        self.run_geoseg(args, [o for o in (out, probs) if o], feedback)
        if context.willLoadLayerOnCompletion(out):
            details = context.layerToLoadOnCompletionDetails(out)
            details.name = "Class map"
            details.setPostProcessor(ClassLegendPostProcessor.create(out))
        return {"OUTPUT": out, "PROBABILITIES": probs or None}


class VectorizeAlgorithm(GeosegAlgorithm):
    """``geoseg vectorize``: polygons from a class map."""

    _name = "vectorize"
    _display = "Vectorize class map"
    _help = ("Polygons of the classes of a geoseg class map (attributes class_id, "
             "class_name, area). A land-cover map stays gap-free when simplified.<br>"
             "<b>Classes</b>: names or ids, comma-separated (default: all but background).")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Class map"))
        self.addParameter(QgsProcessingParameterString(
            "CLASSES", "Classes (names or ids, comma-separated; empty: all but background)",
            optional=True))
        self.addParameter(QgsProcessingParameterBoolean(
            "ALL", "Include background", defaultValue=False))
        self.addParameter(QgsProcessingParameterNumber(
            "SIMPLIFY", "Simplification tolerance (m)", QgsProcessingParameterNumber.Double,
            defaultValue=0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterNumber(
            "MIN_AREA", "Minimum polygon area (m²)", QgsProcessingParameterNumber.Double,
            defaultValue=0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "OUTPUT", "Polygons", QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        src = _layer_path(self.parameterAsRasterLayer(parameters, "INPUT", context),
                          "Class map")
        out = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        args = ["vectorize", src, "-o", out, "--overwrite", "--progress", "json"]
        classes = (self.parameterAsString(parameters, "CLASSES", context) or "").strip()
        if classes:
            args += ["--classes", classes]
        if self.parameterAsBoolean(parameters, "ALL", context):
            args.append("--all")
        for key, flag in (("SIMPLIFY", "--simplify"), ("MIN_AREA", "--min-area")):
            value = self.parameterAsDouble(parameters, key, context)
            if value > 0:
                args += [flag, repr(value)]
        self.run_geoseg(args, [out], feedback)
        return {"OUTPUT": out}


class ScoreAlgorithm(GeosegAlgorithm):
    """``geoseg score``: per-class IoU, mIoU, F1, kappa of a prediction against labels."""

    _name = "score"
    _display = "Score prediction"
    _group = ("evaluation", "Evaluation")
    _help = ("Scores a class map against labels (a raster, or a vector layer with a class "
             "attribute): per-class IoU, precision, recall, F1, mIoU, accuracy, kappa. "
             "Writes geoseg's JSON report and, optionally, an HTML table.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Prediction (class map)"))
        self.addParameter(QgsProcessingParameterMapLayer(
            "LABELS", "Labels (raster or vector)",
            types=[QgsProcessing.TypeRaster, QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterString(
            "LABEL_FIELD", "Vector labels: attribute holding class ids or names",
            optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "IGNORE_INDEX", "Label value to leave out of the scores",
            QgsProcessingParameterNumber.Integer, optional=True, minValue=0))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT", "Report (JSON)", fileFilter="JSON files (*.json)"))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT_HTML", "Report (HTML)", fileFilter="HTML files (*.html)", optional=True,
            createByDefault=False))
        for key, text in (("MIOU", "mIoU"), ("ACCURACY", "Overall accuracy"),
                          ("KAPPA", "Cohen's kappa")):
            self.addOutput(QgsProcessingOutputNumber(key, text))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        pred = _layer_path(self.parameterAsRasterLayer(parameters, "INPUT", context),
                           "Prediction")
        labels = _layer_path(self.parameterAsLayer(parameters, "LABELS", context), "Labels")
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        out_html = self.parameterAsFileOutput(parameters, "OUTPUT_HTML", context)
        args = ["score", pred, "--labels", labels, "-o", out, "--overwrite", "--quiet",
                "--progress", "json"]
        field = (self.parameterAsString(parameters, "LABEL_FIELD", context) or "").strip()
        if field:
            args += ["--label-field", field]
        if parameters.get("IGNORE_INDEX") not in (None, ""):
            args += ["--ignore-index",
                     str(self.parameterAsInt(parameters, "IGNORE_INDEX", context))]
        self.run_geoseg(args, [out], feedback)
        report = json.loads(Path(out).read_text(encoding="utf-8"))
        feedback.pushInfo(f"mIoU {report.get('miou')}, accuracy {report.get('accuracy')}, "
                          f"kappa {report.get('kappa')}")
        results: dict[str, Any] = {"OUTPUT": out, "MIOU": report.get("miou"),
                                   "ACCURACY": report.get("accuracy"),
                                   "KAPPA": report.get("kappa")}
        if out_html:
            Path(out_html).write_text(report_html(report), encoding="utf-8")
            results["OUTPUT_HTML"] = out_html
        return results


def report_html(report: dict[str, Any]) -> str:
    """Render an HTML page of geoseg's score report (per-class table and summary)."""

    def num(v: Any) -> str:
        return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))

    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(num(c.get(k)))}</td>"
                         for k in ("id", "name", "iou", "precision", "recall", "f1",
                                   "label_pixels", "predicted_pixels")) + "</tr>"
        for c in report.get("classes", []))
    summary = "".join(f"<li>{k}: {html.escape(num(report.get(k)))}</li>"
                      for k in ("miou", "mean_f1", "fw_iou", "accuracy", "kappa"))
    head = "".join(f"<th>{h}</th>" for h in ("id", "class", "IoU", "precision", "recall",
                                              "F1", "label px", "predicted px"))
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>geoseg score</title>"
            "</head><body>"
            f"<h3>{html.escape(str(report.get('pred')))} vs "
            f"{html.escape(str(report.get('labels')))}</h3><ul>{summary}</ul>"
            f"<table border='1' cellspacing='0' cellpadding='3'><tr>{head}</tr>{rows}"
            "</table></body></html>\n")

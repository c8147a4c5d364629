"""``geoseg score``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from geoseg.cli import options


def _names(ctx: click.Context, param: click.Parameter, value: str | None
           ) -> list[str] | None:
    if value is None:
        return None
    out = [v.strip() for v in value.split(",") if v.strip()]
    if not out:
        raise click.BadParameter("no class name given")
    return out


@click.command()
@click.argument("pred", type=click.Path(path_type=str))
@click.option("-l", "--labels", required=True, type=click.Path(path_type=str),
              help="Label raster, vector file, or directory of label tiles "
                   "(with --objects: true polygons).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report as JSON.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the confusion matrix as CSV (rows truth, columns "
                   "prediction).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Draw the row-normalised confusion matrix (PNG, SVG, PDF).")
@click.option("--ignore-index", type=int, metavar="N",
              help="Label value to exclude from scoring (counted as ignored).")
@click.option("--classes", callback=_names, metavar="NAME,NAME,...",
              help="Class names of PRED in id order (rename its tagged classes, or "
                   "name ids 0..k-1; without tags or this, classes are named by their "
                   "ids); with --objects: the object classes to keep.")
@click.option("--label-map", metavar="VALUE=CLASS,...",
              help="What label values mean, e.g. 0=land,1=building (classes by name "
                   "or id; a name PRED lacks is reported with IoU 0).")
@click.option("--label-field", metavar="FIELD",
              help="Vector labels: attribute holding class ids or names.")
@click.option("--label-fill", metavar="CLASS",
              help="Vector labels: class (id or name) of pixels no feature covers "
                   "(default: unlabeled, not scored).")
@click.option("--class-names", callback=_names, metavar="NAME,NAME,...",
              help="Names of the label ids 0,1,... as train takes them; vector labels "
                   "without --label-field: every feature is class 1, the rest class 0 "
                   "(e.g. background,building).")
@click.option("--label-value", metavar="CLASS",
              help="Vector labels without --label-field: the class (name or id) of every "
                   "feature.")
@click.option("--objects", is_flag=True,
              help="Object level: match polygons one-to-one (SpaceNet F1).")
@click.option("--iou-threshold", type=click.FloatRange(0, 1, min_open=True),
              default=0.5, show_default=True,
              help="With --objects: minimum IoU of a match.")
@click.option("--chunk-size", type=click.IntRange(16), default=1024, show_default=True,
              help="Chunk side, px (memory grows with its square).")
@click.option("--workers", type=click.IntRange(1),
              help="Threads (default: one per core).")
@options.xyz_pattern_opt
@options.overwrite_opt
@options.quiet_opt
@options.progress_opt
def score(*, pred: str, labels: str, output: Path | None, csv_path: Path | None,
          plot: Path | None, ignore_index: int | None, classes: list[str] | None,
          label_map: str | None, label_field: str | None, label_fill: str | None,
          class_names: list[str] | None, label_value: str | None, objects: bool,
          iou_threshold: float, chunk_size: int, workers: int | None,
          xyz_pattern: str | None, overwrite: bool, quiet: bool, progress_kind: str
          ) -> None:
    """Score the class map PRED against LABELS: per-class IoU, mIoU, F1, kappa.

    PRED may be a folder or a quoted glob of georeferenced class-map chips, scored as
    one virtual mosaic (with --objects, true polygons are cut to the chips).

    Classes absent from both labels and prediction are NaN and skipped by the means
    (mIoU averages the classes present in the labels or the prediction).

    \b
    geoseg score map.tif --labels truth.tif -o report.json --csv cm.csv
    geoseg score map.tif --labels fields.gpkg --label-field crop --ignore-index 0
    geoseg score map.tif --labels tiles/ --plot cm.png
    geoseg score map.tif --labels mask.tif --label-map 0=background,1=building
    geoseg score pred.geojson --labels truth.geojson --objects
    geoseg score 'chips/*.tif' --labels buildings.geojson --objects
    geoseg score map.tif --labels footprints.geojson --class-names background,building
    """
    from geoseg._atomic import check_distinct, check_output, destination_locks
    from geoseg.progress import make_progress
    from geoseg.scoring.report import PLOT_EXTENSIONS

    if objects and (csv_path or plot):
        raise click.UsageError("--csv and --plot are for pixel scores, not --objects")
    for dst, ext in ((output, ()), (csv_path, ()), (plot, PLOT_EXTENSIONS)):
        if dst is not None:  # fail before any compute
            check_output(dst, overwrite=overwrite, extensions=ext, what="--plot" if ext else
                         "output")
    check_distinct([("-o", output), ("--csv", csv_path), ("--plot", plot)],
                   [("PRED", pred), ("--labels", labels)])
    progress = make_progress("none" if quiet and progress_kind == "bar" else progress_kind)
    with destination_locks(output, csv_path, plot):
        text = _run(pred, labels, output, csv_path, plot, objects=objects,
                    iou_threshold=iou_threshold, label_field=label_field, classes=classes,
                    label_map=label_map, workers=workers, ignore_index=ignore_index,
                    label_fill=label_fill, chunk_size=chunk_size, xyz_pattern=xyz_pattern,
                    overwrite=overwrite, progress=progress, class_names=class_names,
                    label_value=label_value)
    if not quiet:
        click.echo(text)


def _run(pred: str, labels: str, output: Path | None, csv_path: Path | None,
         plot: Path | None, *, objects: bool, iou_threshold: float, label_field: str | None,
         classes: list[str] | None, label_map: str | None, workers: int | None,
         ignore_index: int | None, label_fill: str | None, chunk_size: int,
         xyz_pattern: str | None, overwrite: bool, progress: Any,
         class_names: list[str] | None = None, label_value: str | None = None) -> str:
    """Score and write the outputs (their locks are held); return the table."""
    from geoseg._atomic import atomic_path
    from geoseg.xyz import xyz_pattern as xyz_names

    with xyz_names(xyz_pattern):  # XYZ chips named otherwise than z/x/y or -X-Y-Z
        if objects:
            from geoseg.scoring.objects import score_objects

            result = score_objects(pred, labels, iou_threshold=iou_threshold,
                                   label_field=label_field, classes=classes,
                                   workers=workers)
            data, text = result.to_dict(), result.table()
        else:
            from geoseg.scoring.pipeline import plot_confusion, write_confusion_csv
            from geoseg.scoring.pipeline import score as run

            report = run(pred, labels, classes=classes, label_map=label_map,
                         ignore_index=ignore_index,
                         label_field=label_field, label_fill=label_fill,
                         chunk_size=chunk_size, num_workers=workers, progress=progress,
                         class_names=class_names, label_value=label_value)
            data, text = report.to_dict(), report.table()
            if csv_path is not None:
                write_confusion_csv(report, csv_path, overwrite=overwrite)
            if plot is not None:
                plot_confusion(report, plot, overwrite=overwrite)
    if output is not None:
        with atomic_path(output, overwrite=overwrite) as tmp:
            tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    progress.finish([str(p) for p in (output, csv_path, plot) if p is not None])
    progress.close()
    return text

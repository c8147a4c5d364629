"""Predict, vectorize and score with the geoseg library (copy and adapt).

Runs the default ``deeplab`` model on the held-out example image that ships with geoseg,
writes a class map, a PNG preview and building/road polygons, and, when the Dubai labels
are available beside the repository (../shared/data/dubai), scores the map against them.

usage: python examples/landcover_pipeline.py [OUTDIR]
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from rasterio.errors import NotGeoreferencedWarning

import geoseg
from geoseg.vector.pipeline import vectorize_to_file

HERE = Path(__file__).resolve().parent


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "geoseg-example")
    out.mkdir(exist_ok=True)
    image = HERE / "data" / "dubai_tile8_part5.jpg"
    # The example JPEG has no georeferencing; geoseg, rasterio and pyogrio each say so.
    warnings.simplefilter("ignore", geoseg.errors.GeosegWarning)
    warnings.simplefilter("ignore", NotGeoreferencedWarning)
    warnings.filterwarnings("ignore", message="'crs' was not provided")

    result = geoseg.predict(image, out / "landcover.tif", model="deeplab",
                            preview=out / "landcover.png", overwrite=True)
    print(result.summary())

    polygons = vectorize_to_file(out / "landcover.tif", out / "buildings_roads.gpkg",
                                 classes=["building", "road"], simplify=1.0, min_area=4.0,
                                 overwrite=True)
    print(f"{polygons.n_polygons} polygons -> {out / 'buildings_roads.gpkg'}")

    mask = HERE.parents[1] / "shared" / "data" / "dubai" / "tile_8" / "masks" / \
        "image_part_005.png"
    if mask.exists():  # the labels of this image, decoded from their colours
        import rasterio

        from geoseg.scoring.pipeline import score_arrays
        from geoseg.training.data import Pair, read_class_table, read_pair

        table = read_class_table(HERE / "dubai_classes.json")
        labels = read_pair(Pair(image, mask), table)[0].mask  # 255 where unlabeled border
        with rasterio.open(out / "landcover.tif") as src:
            pred = src.read(1)
        ids = [c.id for c in table.classes]
        report = score_arrays(labels, pred, ids, [c.name for c in table.classes],
                              truth_nodata=255)
        print(report.table())
    else:
        print(f"skipping the score: its labels are not here ({mask}); they are the "
              f"Dubai masks of ../shared/data (see the README's Data section)")

if __name__ == "__main__":
    main()

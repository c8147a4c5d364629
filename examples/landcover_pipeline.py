"""Predict, vectorize and score with the geoseg library (copy and adapt).

Runs the default ``deeplab`` model on the held-out example image that ships with geoseg,
writes a class map, a PNG preview and building/road polygons, and scores the map against
the image's labels (they ship beside it, as class ids).

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

    report = geoseg.score(out / "landcover.tif", HERE / "data" / "dubai_tile8_part5_labels.png",
                          ignore_index=255)
    print(report.table())


if __name__ == "__main__":
    main()

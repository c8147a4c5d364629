"""Labels onto a prediction's pixel grid: label rasters on any grid, vector files, label tiles.

The prediction's grid is the reference. A label raster on the same (or a pixel-aligned)
grid is read window by window; on any other grid it is resampled with nearest neighbour
through a :class:`rasterio.vrt.WarpedVRT`; a vector file is reprojected and rasterized per
chunk; a directory of georeferenced label tiles is a mosaic. This package is the only code
that puts labels onto a grid, for ``score`` and for training alike:

- :mod:`.grid`: the grid, block readers, what kind of labels a path is;
- :mod:`.raster`: label rasters and label tiles;
- :mod:`.vector`: vector labels (class ids or names in a field);
- :mod:`.ids`: labels as uint8 class ids on a scene's grid (training's source).
"""

from geoseg.scoring.labels.grid import RASTER_SUFFIXES, VECTOR_SUFFIXES
from geoseg.scoring.labels.ids import NO_LABEL, GridLabels, grid_labels

__all__ = ["NO_LABEL", "RASTER_SUFFIXES", "VECTOR_SUFFIXES", "GridLabels", "grid_labels"]

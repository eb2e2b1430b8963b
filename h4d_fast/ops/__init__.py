"""Public drop-in ops, one module each, each with one dispatch point over its backends.

Importing this package loads no Triton, CuPy or Numba code; a backend is imported on first use.
"""

from .collision import collision_loss, sdf_grid
from .oks import dedup_oks, oks
from .triangulate import triangulate_dlt, triangulate_ransac

__all__ = ["oks", "dedup_oks", "triangulate_dlt", "triangulate_ransac", "collision_loss", "sdf_grid"]

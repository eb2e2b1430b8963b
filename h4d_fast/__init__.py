"""h4d_fast: GPU-accelerated multi-view two-person capture processing (the Harmony4D pipeline).

Importing the package is cheap: it loads torch and numpy only. Kernel backends (Triton, CuPy,
Numba) are imported on first use by the ops in :mod:`h4d_fast.ops`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

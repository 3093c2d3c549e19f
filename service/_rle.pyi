"""Type stub of the C extension built from ``_rle.c`` (see its header for the arrays' layouts)."""

import numpy as np

def encode(
    padded: np.ndarray,
    p: int,
    meta: np.ndarray,
    ya: np.ndarray,
    wy: np.ndarray,
    xa: np.ndarray,
    wx: np.ndarray,
    tol: float,
    height: int,
    width: int,
) -> list[str]: ...

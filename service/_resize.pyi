"""Type stub of the C extension built from ``_resize.c`` (see its header for the arrays' layouts)."""

import numpy as np

def resize_normalize(
    image: np.ndarray,
    height: int,
    width: int,
    r0: np.ndarray,
    r1: np.ndarray,
    wy: np.ndarray,
    c0: np.ndarray,
    c1: np.ndarray,
    wx: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    out: np.ndarray,
    canvas: int,
) -> None: ...

"""The one compiled part of vitbench: the service's COCO RLE encoder (``vitbench.service._rle``).

Everything else is declared in pyproject.toml. The extension is optional: without a C compiler the
install still succeeds and ``vitbench.service.masks`` encodes with numpy (same bytes, slower).
"""

import sys

from setuptools import Extension, setup

# no fused multiply-add: the float32 arithmetic must round exactly as numpy's does
flags = [] if sys.platform == "win32" else ["-O3", "-ffp-contract=off", "-fno-fast-math"]

setup(
    ext_modules=[
        Extension("vitbench.service._rle", ["service/_rle.c"], extra_compile_args=flags, optional=True),
    ]
)

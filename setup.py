"""The compiled parts of vitbench: two small C extensions of the service.

- ``vitbench.service._rle``: the COCO RLE encoder of pasted masks;
- ``vitbench.service._resize``: the graph input of an image (resize, normalize, CHW) in one pass.

Everything else is declared in pyproject.toml. Both are optional: without a C compiler the install
still succeeds and ``vitbench.service.masks`` / ``vitbench.service.preprocess`` use numpy (same
bytes, slower).
"""

import sys

from setuptools import Extension, setup

# no fused multiply-add: the float32 arithmetic must round exactly as numpy's does
flags = [] if sys.platform == "win32" else ["-O3", "-ffp-contract=off", "-fno-fast-math"]

setup(
    ext_modules=[
        Extension(
            f"vitbench.service.{name}",
            [f"service/{name}.c"],
            depends=["service/_arrays.h"],
            extra_compile_args=flags,
            optional=True,
        )
        for name in ("_rle", "_resize")
    ]
)

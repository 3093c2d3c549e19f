"""vitbench: train, compare, register, export and serve Mask R-CNN detectors with plain ViT backbones.

One import namespace. The subpackages live in the repository's top-level folders and are mapped here:

- :mod:`vitbench.trainer`  models, initializations, data, engine, evaluation, export (needs torch);
- :mod:`vitbench.registry` the MLflow model registry client (torch-free);
- :mod:`vitbench.service`  the FastAPI inference service (torch-free);
- :mod:`vitbench.deploy`   Kubernetes Job rendering and the submit/watch client;
- :mod:`vitbench.cli`      the ``vitbench`` command line (thin: parse, call, print, exit code);
- :mod:`vitbench.flows`    flows that span packages (the demo);
- :mod:`vitbench.fileio`   atomic file writes (stdlib only).

The layout and the flows are described in ``docs/architecture.md``.

Importing this package imports none of them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vitbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]

"""Fetch and safely deserialize a checkpoint from a local path, ``http(s)://`` or ``s3://``.

Nothing here executes code from the file: ``.pth``/``.pth.tar`` files go through
``torch.load(weights_only=True)`` and detectron2 ``.pkl`` files through :class:`NumpyOnlyUnpickler`,
which admits numpy arrays/dtypes/scalars and plain containers and refuses every other global.
"""

from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from vitbench.trainer.inits.errors import InitError

_CHUNK = 1 << 20
REMOTE_SCHEMES = ("http://", "https://", "s3://")

# Globals that a detectron2 model-zoo pickle needs: numpy arrays (numpy 1 and 2 module paths),
# dtypes, scalars and ordered dicts. Anything else (os.system, builtins.eval, ...) is refused.
_PKL_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # protocol-2 pickles encode raw array bytes through it
    }
)


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list (it would run or build arbitrary objects)."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only resolves numpy array/dtype/scalar globals and ``OrderedDict``."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve an allowed global; refuse everything else with the offending name."""
        if (module, name) in _PKL_ALLOWED:
            return super().find_class(module, name)
        raise RefusedGlobal(
            f"refused global {module}.{name}: a detectron2 checkpoint holds only numpy arrays and containers"
        )


def is_remote(uri: str) -> bool:
    """True for ``http://``, ``https://`` and ``s3://`` URIs."""
    return uri.startswith(REMOTE_SCHEMES)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _copy_remote(uri: str, dest: IO[bytes]) -> None:
    try:
        import fsspec
    except ImportError as e:  # pragma: no cover - fsspec is a declared dependency
        raise InitError("reading remote weights needs fsspec (pip install 'vitbench[train]')") from e
    try:
        with fsspec.open(uri, "rb") as src:
            shutil.copyfileobj(src, dest, _CHUNK)
    except ImportError as e:
        raise InitError(f"cannot read {uri}: {e} (for s3:// install s3fs)") from e
    except (OSError, ValueError) as e:
        raise InitError(f"cannot read {uri}: {e}") from e


@contextmanager
def local_copy(uri: str) -> Iterator[Path]:
    """Yield a local path for ``uri``; remote files are streamed to a temporary file, removed afterwards."""
    if not is_remote(uri):
        path = Path(uri.removeprefix("file://")).expanduser()
        if not path.is_file():
            raise InitError(
                f"weights file not found: {path} (expected a local path, http(s):// or s3:// URI)"
            )
        yield path
        return
    suffix = "".join(Path(uri.split("?", 1)[0]).suffixes[-2:])
    fd, name = tempfile.mkstemp(prefix="vitbench-weights-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            _copy_remote(uri, f)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def verify_sha256(path: Path, expected: str, label: str) -> None:
    """Raise InitError unless the file's sha256 equals ``expected`` (hex, case-insensitive)."""
    want = expected.strip().lower()
    if len(want) != 64 or any(c not in "0123456789abcdef" for c in want):
        raise InitError(f"sha256 {expected!r} is not a 64-character hex digest")
    got = sha256_of(path)
    if got != want:
        raise InitError(f"sha256 mismatch for {label}: expected {want}, file has {got}; refusing to load it")


def _torch_load(path: Path, label: str) -> Any:
    import torch

    # MoBY/Swin training checkpoints store their yacs config next to the weights; read it back as an
    # OrderedDict instead of importing yacs (no code from the file runs either way).
    try:
        with torch.serialization.safe_globals([(collections.OrderedDict, "yacs.config.CfgNode")]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as e:
        found = re.search(
            r"(Unsupported global: GLOBAL \S+|Unsupported operand \S+|WeightsUnpickler error: [^\n.]*)",
            str(e),
        )
        reason = found.group(1) if found else str(e).splitlines()[0]
        raise InitError(
            f"refused to load {label}: it contains objects other than tensors and plain containers "
            f"({reason}); only weights-only checkpoints are accepted"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise InitError(
            f"cannot read {label}: the file is truncated or not a PyTorch checkpoint ({e})"
        ) from e


def _pkl_load(path: Path, label: str) -> Any:
    try:
        with path.open("rb") as f:
            return NumpyOnlyUnpickler(io.BufferedReader(f), encoding="latin1").load()
    except RefusedGlobal as e:
        raise InitError(f"refused to load {label}: {e}") from e
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
    ) as e:
        raise InitError(f"cannot read {label}: the file is truncated or not a pickle ({e!r})") from e


def verify_sha256_prefix(path: Path, prefix: str, label: str) -> None:
    """Raise InitError unless the file's sha256 starts with ``prefix`` (torch.hub's file-name convention)."""
    got = sha256_of(path)
    if not got.startswith(prefix.lower()):
        raise InitError(
            f"sha256 of {label} is {got}, but its published file name promises a digest starting with "
            f"{prefix} (torch.hub convention): it is corrupt or not the published file; refusing to load it"
        )


def read_checkpoint(
    uri: str, sha256: str | None = None, sha256_prefix: str | None = None
) -> Mapping[str, Any]:
    """Fetch ``uri``, verify its sha256 when given, and deserialize it safely.

    ``sha256_prefix`` (checked only when no full ``sha256`` is given) is the digest prefix that
    torch.hub-published files carry in their name (``deit_base_patch16_224-b5f2ef4d.pth``).

    Returns the top-level mapping of the file (e.g. ``{"model": {...}}``). ``.pkl`` files are read
    with the numpy-only unpickler, everything else with ``torch.load(weights_only=True)``.
    Raises InitError on a missing file, a digest mismatch, a truncated file or a refused object.
    """
    label = uri
    with local_copy(uri) as path:
        if sha256:
            verify_sha256(path, sha256, label)
        elif sha256_prefix:
            verify_sha256_prefix(path, sha256_prefix, label)
        loader = _pkl_load if path.name.endswith(".pkl") else _torch_load
        obj = loader(path, label)
    if not isinstance(obj, Mapping):
        raise InitError(f"{label} holds a {type(obj).__name__}, expected a mapping of names to tensors")
    return obj

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
    except Exception as e:  # fsspec backends raise their own types (aiohttp, botocore)
        raise InitError(f"cannot read {uri}: {remote_error_reason(e)}") from e


def remote_error_reason(exc: BaseException) -> str:
    """One line saying why a remote read failed, from the deepest useful exception in ``exc``'s chain.

    fsspec's HTTP backend raises ``FileNotFoundError(url)`` whose cause holds the real reason (an HTTP
    status, a refused connection); botocore raises ``NoCredentialsError`` without saying where to set them.
    """
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for e in chain:
        name = type(e).__name__
        if name in ("NoCredentialsError", "PartialCredentialsError"):
            return (
                "no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), "
                "and AWS_ENDPOINT_URL for S3-compatible storage"
            )
        status = getattr(e, "status", None)
        if isinstance(status, int) and name == "ClientResponseError":
            return f"HTTP {status} {getattr(e, 'message', '')}".strip()
    for e in reversed(chain):
        if isinstance(e, OSError) and e.strerror:
            return f"{e.strerror} ({type(e).__name__})"
    last = chain[-1]
    text = str(last).strip()
    return f"{type(last).__name__}: {text}" if text else type(last).__name__


@contextmanager
def local_copy(uri: str) -> Iterator[Path]:
    """Yield a local path for ``uri``; remote files are streamed to a temporary file, removed afterwards."""
    if not is_remote(uri):
        path = Path(uri.removeprefix("file://")).expanduser()
        if path.is_dir():
            raise InitError(f"weights path {path} is a directory; expected a checkpoint file (.pth, .pkl)")
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

    with path.open("rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # torch.save: zip, or pickle
        raise InitError(
            f"cannot read {label}: the file is truncated or not a PyTorch checkpoint (a .pth file is a zip "
            f"archive or a pickle; this one starts with {head!r})"
        )
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
    except (
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
    ) as e:
        # A text file or random bytes make the weights-only unpickler fail with any of these (KeyError: 101).
        text = str(e).splitlines()[0] if str(e) else ""
        reason = text if isinstance(e, (RuntimeError, OSError)) and text else f"{type(e).__name__}: {text}"
        raise InitError(
            f"cannot read {label}: the file is truncated or not a PyTorch checkpoint ({reason})"
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
    return read_checkpoint_with_digest(uri, sha256, sha256_prefix)[0]


def read_checkpoint_with_digest(
    uri: str, sha256: str | None = None, sha256_prefix: str | None = None
) -> tuple[Mapping[str, Any], str]:
    """:func:`read_checkpoint` plus the file's sha256 (hex): what a run's identity records."""
    label = uri
    with local_copy(uri) as path:
        if sha256:
            verify_sha256(path, sha256, label)
            digest = sha256.strip().lower()
        else:
            digest = sha256_of(path)
            if sha256_prefix and not digest.startswith(sha256_prefix.lower()):
                verify_sha256_prefix(path, sha256_prefix, label)  # raises with the explanation
        loader = _pkl_load if path.name.endswith(".pkl") else _torch_load
        obj = loader(path, label)
    if not isinstance(obj, Mapping):
        raise InitError(f"{label} holds a {type(obj).__name__}, expected a mapping of names to tensors")
    return obj, digest

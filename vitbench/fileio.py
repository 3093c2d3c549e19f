"""Atomic file writes: the one helper every package uses (stdlib only, so torch-free parts may import it).

A file with its final name is always complete: the content goes to a temporary name in the same folder
(so the rename stays on one file system), then ``os.replace`` renames it onto the target. On any error
the temporary file is removed and the target is left as it was. ``durable=True`` also fsyncs the file
and its folder, so the rename survives a power cut (checkpoints use it).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, suffix: str = ".tmp", durable: bool = False
) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends without error, rename it onto ``path``.

    Use it for writers that take a path (``torch.save``, ``fig.savefig``, ``PIL.Image.save``, an ONNX
    exporter). ``suffix`` keeps a file extension some writers infer the format from (e.g. ``".tmp.png"``).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            with tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, durable: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def atomic_write_json(
    path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2, newline: bool = False
) -> Path:
    """Write ``obj`` as JSON (``indent`` as :func:`json.dumps`; a final newline with ``newline``)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent) + ("\n" if newline else ""))

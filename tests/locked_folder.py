"""A folder the test process cannot write into, for the "cannot write to ..." error paths."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def locked_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tempfile_call: str) -> Iterator[Path]:
    """``tmp_path/locked`` with mode 0o555 (0o755 again on exit). Root ignores permissions, so there the
    OS's refusal is made by ``tempfile.<tempfile_call>`` (what the code under test creates its temporary
    folder with) raising ``PermissionError(13)`` for the rest of the test."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):

            def refuse(*args: object, **kwargs: object) -> None:
                raise PermissionError(13, "Permission denied")

            monkeypatch.setattr(tempfile, tempfile_call, refuse)
        yield locked
    finally:
        locked.chmod(0o755)

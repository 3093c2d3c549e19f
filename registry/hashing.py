"""SHA-256 of files and byte strings, and verification that names what did not match."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20  # 1 MiB reads keep memory flat for multi-GB checkpoints


class HashMismatchError(ValueError):
    """A file's SHA-256 differs from the one recorded for it."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"sha256 mismatch for {path.name}: expected {expected}, got {actual} "
            "(the file was modified or corrupted after it was registered)"
        )


def sha256_bytes(data: bytes) -> str:
    """Lower-case hex SHA-256 (64 characters) of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Lower-case hex SHA-256 (64 characters) of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_sha256(value: str) -> bool:
    """True when ``value`` looks like a lower-case hex SHA-256 digest."""
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def verify_file(path: Path, expected: str) -> str:
    """Check that ``path`` hashes to ``expected``; return the digest or raise :class:`HashMismatchError`."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise HashMismatchError(Path(path), expected.lower(), actual)
    return actual

"""Helpers shared by CLI command modules: how library errors and results reach the user.

The registry comes from :mod:`vitbench.registry.env` (``MLFLOW_TRACKING_URI``, ``MLFLOW_REGISTRY_URI``,
``VITBENCH_HOME``, ``VITBENCH_REGISTRY_TIMEOUT``); :func:`open_registry` only turns its errors into exit
codes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from vitbench.registry.client import RegistryClient

__all__ = [
    "HOME_HELP",
    "fail",
    "open_registry",
    "print_json",
    "registry_errors",
    "user_errors",
]

HOME_HELP = (
    "Data folder of the embedded registry (SQLite + artifacts); env VITBENCH_HOME, default ./.vitbench."
)


def open_registry(home: Path | None = None) -> RegistryClient:
    """The registry the environment names (see :mod:`vitbench.registry.env`); errors exit 2."""
    from vitbench.registry.client import RegistryError
    from vitbench.registry.env import registry_location

    try:
        return registry_location(home).open()
    except RegistryError as exc:
        fail(str(exc))


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` in red to stderr and exit with ``code`` (no traceback)."""
    from rich.console import Console

    Console(stderr=True, highlight=False).print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def registry_errors() -> Iterator[None]:
    """Turn registry errors into a one-line message and exit code 2 (3 when the registry is unreachable)."""
    from vitbench.registry.client import RegistryError, RegistryUnavailableError

    try:
        yield
    except RegistryUnavailableError as exc:
        fail(str(exc), code=3)
    except RegistryError as exc:
        fail(str(exc))


@contextmanager
def user_errors(code: int = 2) -> Iterator[None]:
    """Turn the library's user-facing errors (:data:`vitbench.trainer.runs.USER_ERRORS`, registry errors)
    into ``error: message`` and exit ``code`` (3 when the registry is unreachable)."""
    try:
        yield
    except Exception as exc:
        from vitbench.registry.client import RegistryError, RegistryUnavailableError
        from vitbench.trainer.runs import USER_ERRORS

        if isinstance(exc, RegistryUnavailableError):
            fail(str(exc), code=3)
        if isinstance(exc, (*USER_ERRORS, RegistryError)):
            fail(str(exc), code=code)
        raise


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON to stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")

"""Helpers shared by CLI command modules: how library errors and results reach the user.

The registry comes from :mod:`vitbench.registry.env` (``MLFLOW_TRACKING_URI``, ``MLFLOW_REGISTRY_URI``,
``VITBENCH_HOME``, ``VITBENCH_REGISTRY_TIMEOUT``); :func:`open_registry` only turns its errors into exit
codes.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from vitbench.registry.client import RegistryClient

__all__ = [
    "DEVICE_HELP",
    "HOME_HELP",
    "check_device_option",
    "check_folder_option",
    "fail",
    "open_registry",
    "print_json",
    "registry_errors",
    "user_errors",
]

HOME_HELP = (
    "Data folder of the embedded registry (SQLite + artifacts); env VITBENCH_HOME, default ./.vitbench."
)


#: The embedded registry's SQLite file inside its home (see ``RegistryClient.embedded``).
EMBEDDED_DB = "mlflow.db"


def home_source(home: Path | None) -> str:
    """Where the embedded registry's home comes from: ``--home``, ``VITBENCH_HOME`` or the default."""
    if home is not None:
        return "--home"
    return "VITBENCH_HOME" if os.environ.get("VITBENCH_HOME") else "the default ./.vitbench"


def open_registry(home: Path | None = None, create: bool = True) -> RegistryClient:
    """The registry the environment names (see :mod:`vitbench.registry.env`); errors exit 2.

    Commands that only read pass ``create=False``: an embedded registry that does not exist yet is then
    reported (with the folder looked in and why) instead of being created as a side effect.
    """
    from vitbench.registry.client import RegistryError
    from vitbench.registry.env import registry_location

    try:
        location = registry_location(home)
        folder = location.home.expanduser().resolve()
        if not create and location.tracking_uri is None and not (folder / EMBEDDED_DB).is_file():
            fail(
                f"no registry at {folder} (from {home_source(home)}); pass --home, set VITBENCH_HOME or "
                "MLFLOW_TRACKING_URI, or register a model first (`vitbench train ... --register`)"
            )
        return location.open()
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


DEVICE_HELP = "auto, cpu, cuda or cuda:N (auto: the GPU when one is present, else the CPU)."


def check_device_option(value: str) -> str:
    """typer callback for ``--device``: refuse a malformed value or a GPU this machine lacks, at start-up."""
    if value.strip().lower() in ("auto", "cpu"):
        return value.strip().lower()
    from vitbench.trainer.distributed import DeviceError, check_device

    try:
        return check_device(value)
    except DeviceError as exc:
        raise typer.BadParameter(str(exc)) from None


def check_folder_option(value: Path | None) -> Path | None:
    """typer callback for an output folder option: refuse a path that names an existing file."""
    if value is not None and value.exists() and not value.is_dir():
        raise typer.BadParameter(f"{value} is a file; expected a folder (a new or an existing one)")
    return value

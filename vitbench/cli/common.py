"""Helpers shared by CLI command modules: where the registry is, and how its errors reach the user.

This is the only place that reads the registry environment: ``MLFLOW_TRACKING_URI`` (remote
``mlflow server`` or SQL store), ``MLFLOW_REGISTRY_URI``, ``VITBENCH_HOME`` (embedded default's
folder) and ``VITBENCH_REGISTRY_TIMEOUT`` (seconds per HTTP request, default 10).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from vitbench.registry.client import RegistryClient

DEFAULT_HOME = Path(".vitbench")
EMBEDDED_DB = "mlflow.db"  # the embedded registry's SQLite file inside the home (RegistryClient.embedded)

HOME_HELP = (
    "Data folder of the embedded registry (SQLite + artifacts); env VITBENCH_HOME, default ./.vitbench."
)


def resolve_home(home: Path | None) -> Path:
    """``--home``, else ``VITBENCH_HOME``, else ``./.vitbench``."""
    if home is not None:
        return home
    env = os.environ.get("VITBENCH_HOME")
    return Path(env) if env else DEFAULT_HOME


def home_source(home: Path | None) -> str:
    """Where the home of :func:`resolve_home` comes from: ``--home``, ``VITBENCH_HOME`` or the default."""
    if home is not None:
        return "--home"
    return "VITBENCH_HOME" if os.environ.get("VITBENCH_HOME") else "the default ./.vitbench"


def open_registry(home: Path | None = None, create: bool = True) -> RegistryClient:
    """The registry the CLI talks to: ``MLFLOW_TRACKING_URI`` if set, else the embedded one under the home.

    Commands that only read pass ``create=False``: an embedded registry that does not exist yet is then
    reported (with the folder looked in and why) instead of being created as a side effect.
    """
    from vitbench.registry.client import RegistryClient, RegistryError

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    raw_timeout = os.environ.get("VITBENCH_REGISTRY_TIMEOUT", "10")
    try:
        timeout = float(raw_timeout)
    except ValueError:
        raise typer.BadParameter(
            f"VITBENCH_REGISTRY_TIMEOUT={raw_timeout!r} is not a number of seconds"
        ) from None
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    try:
        if uri:
            return RegistryClient(uri, os.environ.get("MLFLOW_REGISTRY_URI") or None, timeout_s=timeout)
        folder = resolve_home(home).expanduser().resolve()
        if not create and not (folder / EMBEDDED_DB).is_file():
            fail(
                f"no registry at {folder} (from {home_source(home)}); pass --home, set VITBENCH_HOME or "
                "MLFLOW_TRACKING_URI, or register a model first (`vitbench train ... --register`)"
            )
        return RegistryClient.embedded(folder)
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


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON to stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


DEVICE_HELP = "auto, cpu, cuda or cuda:N (auto: the GPU when one is present, else the CPU)."


def check_device_option(value: str) -> str:
    """typer callback for ``--device``: refuse a malformed value or a GPU this machine lacks, at start-up."""
    if value.strip().lower() in ("auto", "cpu"):
        return value.strip().lower()
    from vitbench.trainer.engine.distributed import DeviceError, check_device

    try:
        return check_device(value)
    except DeviceError as exc:
        raise typer.BadParameter(str(exc)) from None


def check_folder_option(value: Path | None) -> Path | None:
    """typer callback for an output folder option: refuse a path that names an existing file."""
    if value is not None and value.exists() and not value.is_dir():
        raise typer.BadParameter(f"{value} is a file; expected a folder (a new or an existing one)")
    return value

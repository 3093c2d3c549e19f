"""Options that several commands declare alike: typer ``Annotated`` aliases, each declared once.

A command takes one as ``device: DeviceOpt = "auto"``; the default stays in the signature. Options whose
help differs by command (``--set``'s example, what ``--register`` registers) are declared in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vitbench.cli.common import DEVICE_HELP, HOME_HELP, check_device_option

__all__ = ["DeviceOpt", "GracePeriodOpt", "HomeOpt", "ProgressOpt"]

DeviceOpt = Annotated[str, typer.Option("--device", help=DEVICE_HELP, callback=check_device_option)]
HomeOpt = Annotated[Path | None, typer.Option("--home", help=HOME_HELP)]
GracePeriodOpt = Annotated[
    float,
    typer.Option("--grace-period", help="Seconds allowed to save a checkpoint after SIGTERM before exiting."),
]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")]

"""Root of the ``vitbench`` command line.

Every command group lives in its own module under ``vitbench.cli`` and exposes ``register(app)``.
Modules import heavy libraries (torch, mlflow, kubernetes) inside their commands, so ``--help``
stays fast and works without the optional extras installed.
"""

from __future__ import annotations

import sys

import typer

from vitbench.cli import (
    bench_cmd,
    data_cmd,
    demo_cmd,
    export_cmd,
    inits_cmd,
    model_cmd,
    pretrain_cmd,
    registry_cmd,
    serve_cmd,
    train_cmd,
)
from vitbench.cli.help_format import fold_long_words

fold_long_words()

app = typer.Typer(
    name="vitbench",
    help=(
        "Train, compare, register, export and serve Mask R-CNN detectors with plain "
        "Vision Transformer backbones. Every command runs locally on embedded defaults; "
        "`bench submit` runs the study as Kubernetes Jobs."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for _module in (
    model_cmd,
    inits_cmd,
    data_cmd,
    train_cmd,
    pretrain_cmd,
    bench_cmd,
    registry_cmd,
    export_cmd,
    serve_cmd,
    demo_cmd,
):
    _module.register(app)


REPORT_HINT = (
    "This is a bug in vitbench, not a mistake in your command: please report it with the command line "
    "and the traceback above."
)


def main() -> None:
    """Console-script entry point. User mistakes exit with one ``error:`` line; an unexpected error
    prints its traceback and a hint to report it (exit 1)."""
    try:
        app()
    except Exception:
        import traceback

        traceback.print_exc()
        sys.stderr.write(f"\n{REPORT_HINT}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()

"""``vitbench bench``: the study. Local runs and reports (bench_local), cluster Jobs (bench_k8s)."""

from __future__ import annotations

import typer

from vitbench.cli import bench_k8s, bench_local


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command group to the root app."""
    bench = typer.Typer(
        help=(
            "Run the study: one training run per initialization, then the table. "
            "`run`/`report` work locally; `submit`/`status`/`logs`/`cancel`/`render` drive "
            "Kubernetes Jobs."
        ),
        no_args_is_help=True,
    )
    bench_local.register(bench)
    bench_k8s.register(bench)
    app.add_typer(bench, name="bench")

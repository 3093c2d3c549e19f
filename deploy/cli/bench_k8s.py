"""CLI commands: bench_k8s (being written)."""

from __future__ import annotations

import typer


def register(bench: typer.Typer) -> None:
    """Add this module's commands to the bench group."""

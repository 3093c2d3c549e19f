"""Fixtures of the ``vitbench bench`` Kubernetes tests: the command group and a fake cluster behind it."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from fake_k8s import NS, FakeBatchApi, FakeCluster, FakeCoreApi

from vitbench.cli import bench_k8s


@pytest.fixture
def app() -> typer.Typer:
    """A root app with only the ``bench`` group registered, as ``vitbench`` registers it."""
    root = typer.Typer()
    bench = typer.Typer()
    bench_k8s.register(bench)
    root.add_typer(bench, name="bench")
    return root


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    """The fake cluster that ``bench`` commands reach (``--namespace`` or :data:`fake_k8s.NS`)."""
    fake = FakeCluster()

    def connect(context: str | None, namespace: str | None) -> tuple[Any, Any, str]:
        return FakeBatchApi(fake), FakeCoreApi(fake), namespace or NS

    monkeypatch.setattr(bench_k8s, "connect", connect)
    return fake

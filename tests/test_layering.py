"""The package layering of docs/architecture.md, checked on the source: who may import what."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {name: ROOT / name for name in ("trainer", "registry", "service", "deploy")}
FLOWS = ROOT / "vitbench" / "flows"
OURS = ("trainer", "registry", "service", "deploy", "cli", "flows")


def _imports(path: Path) -> set[str]:
    """Every module a file imports (top level or inside functions; relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _library_files() -> list[Path]:
    files = [p for d in (*PACKAGES.values(), FLOWS) for p in d.rglob("*.py")]
    files += [p for p in (ROOT / "vitbench").glob("*.py")]
    return sorted(files)


@pytest.mark.parametrize("path", _library_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_does_not_import_the_cli_or_typer(path: Path) -> None:
    bad = {m for m in _imports(path) if m == "typer" or m.startswith(("typer.", "vitbench.cli"))}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}; only vitbench/cli may"


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        ("registry", {"registry"}),
        ("service", {"service", "registry"}),
        ("deploy", {"deploy", "registry", "trainer"}),
        ("trainer", {"trainer", "registry"}),
    ],
)
def test_packages_import_only_what_the_layering_allows(package: str, allowed: set[str]) -> None:
    found: dict[str, set[str]] = {}
    for path in PACKAGES[package].rglob("*.py"):
        for mod in _imports(path):
            parts = mod.split(".")
            if parts[0] == "vitbench" and len(parts) > 1 and parts[1] in OURS and parts[1] not in allowed:
                found.setdefault(str(path.relative_to(ROOT)), set()).add(mod)
    assert not found, f"{package} imports outside its layer: {found}"


def test_the_cli_starts_without_the_trainer_and_torch() -> None:
    """The service image has no trainer/ and no torch: `vitbench --help` and `serve --help` must work."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name in ('torch', 'torchvision') or name.startswith(('vitbench.trainer', 'torch.')):\n"
        "            raise ImportError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from typer.testing import CliRunner\n"
        "from vitbench.cli.main import app\n"
        "for args in (['--help'], ['serve', '--help'], ['registry', '--help'],\n"
        "             ['bench', 'submit', '--help'], ['demo', '--help']):\n"
        "    res = CliRunner().invoke(app, args)\n"
        "    assert res.exit_code == 0, (args, res.output, res.exception)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]

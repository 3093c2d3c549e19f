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


def _node(module: str) -> str | None:
    """``vitbench.trainer.engine.loop`` -> ``trainer.engine``; ``vitbench.flows.demo`` -> ``flows``."""
    parts = module.split(".")
    if parts[0] != "vitbench" or len(parts) < 2:
        return None
    if parts[1] in ("trainer", "registry", "service", "deploy") and len(parts) > 2:
        return f"{parts[1]}.{parts[2]}"
    return parts[1]


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts = parts[1:] if parts[0] == "vitbench" else parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["vitbench", *parts])


def _cycles(edges: dict[str, set[str]]) -> str | None:
    """A cycle in the graph as text, or None (stdlib graphlib)."""
    import graphlib

    try:
        graphlib.TopologicalSorter(edges).prepare()
    except graphlib.CycleError as exc:
        return " -> ".join(exc.args[1])
    return None


def test_no_import_cycles() -> None:
    """Between subpackages (e.g. trainer.engine <-> trainer.evaluation) and between modules (e.g.
    inits.converters <-> inits.d2_heads), lazy imports included."""
    files = {_module_of(p): p for p in _library_files()}
    modules: dict[str, set[str]] = {m: set() for m in files}
    packages: dict[str, set[str]] = {}
    for mod, path in files.items():
        src_pkg = _node(mod)
        for imported in _imports(path):
            target = imported if imported in files else imported.rpartition(".")[0]
            if target in files and target != mod and not mod.startswith(target + "."):
                modules[mod].add(target)  # a package's __init__ importing its own modules is not a cycle
            dst_pkg = _node(imported)
            if src_pkg and dst_pkg and dst_pkg != src_pkg:
                packages.setdefault(src_pkg, set()).add(dst_pkg)
    assert _cycles(packages) is None, f"import cycle between packages: {_cycles(packages)}"
    assert _cycles(modules) is None, f"import cycle between modules: {_cycles(modules)}"


def test_the_architecture_module_map_names_existing_modules() -> None:
    """Every path in docs/architecture.md's module map exists, and every library module is mentioned."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("## Module map", 1)[1].split("```", 2)[1]
    paths = [line.split()[0] for line in block.splitlines() if line and not line.startswith(" ")]
    missing = [p for p in paths if not (ROOT / p.rstrip("/")).exists()]
    assert not missing, f"the module map names {missing}, which do not exist"
    for path in _library_files():
        rel = path.relative_to(ROOT)
        if path.name == "__init__.py" or rel.parts[0] in ("service", "registry"):
            continue  # packages and the torch-free ones are listed as a group
        listed = str(rel) in paths or f"{rel.parent}/" in paths or path.stem in block
        assert listed, f"{rel} is missing from the module map in docs/architecture.md"

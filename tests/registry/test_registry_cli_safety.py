"""``vitbench registry ...`` never overwrites another version's file, never creates a registry on a read,
and says where it looked (typer's runner on the real app: exit code, message, no traceback)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from locked_folder import locked_folder
from typer.testing import CliRunner

from vitbench.cli.main import app
from vitbench.registry.client import RegistryClient

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("VITBENCH_HOME", raising=False)


def _invoke(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    assert "Traceback" not in res.output, res.output
    return res.exit_code, " ".join(res.output.split())


def _two_versions(registry: RegistryClient, name: str, tmp_path: Path) -> tuple[bytes, bytes]:
    contents = []
    for k in (1, 2):
        ckpt = tmp_path / f"v{k}" / "model_final.pth"
        ckpt.parent.mkdir()
        ckpt.write_bytes(bytes([k]) * 4096)
        run_id = registry.start_run("cli-safety")
        registry.register_version(name, run_id, ckpt, {"init": "random", "recipe": "bench-tiny"})
        registry.end_run(run_id)
        contents.append(ckpt.read_bytes())
    return contents[0], contents[1]


def test_download_refuses_to_replace_another_version_without_force(
    registry: RegistryClient, registry_home: Path, model_name: str, tmp_path: Path
) -> None:
    v1, v2 = _two_versions(registry, model_name, tmp_path)
    out = tmp_path / "dl"
    home = ("--home", str(registry_home))
    assert _invoke("registry", "download", f"{model_name}/1", "-o", str(out), *home)[0] == 0
    target = out / "model_final.pth"
    assert target.read_bytes() == v1

    code, msg = _invoke("registry", "download", f"{model_name}/2", "-o", str(out), *home)
    assert code == 2
    assert f"{target} already exists and is not {model_name}/2 (its sha256 differs); pass --force" in msg
    assert target.read_bytes() == v1, "the other version's file is kept"

    assert _invoke("registry", "download", f"{model_name}/1", "-o", str(out), *home)[0] == 0  # same: fine
    code, msg = _invoke("registry", "download", f"{model_name}/2", "-o", str(out), "--force", *home)
    assert code == 0, msg
    assert target.read_bytes() == v2 and hashlib.sha256(v2).hexdigest() in msg
    assert sorted(p.name for p in out.iterdir()) == ["model_final.pth"], "no temporary files left"


def test_download_onto_a_file_or_into_an_unwritable_folder_says_so(
    registry: RegistryClient,
    registry_home: Path,
    model_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _two_versions(registry, model_name, tmp_path)
    home = ("--home", str(registry_home))
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    code, msg = _invoke("registry", "download", f"{model_name}/1", "-o", str(notes), *home)
    assert code == 2 and f"-o {notes} is a file; expected a folder to download {model_name}/1 into" in msg
    assert notes.read_text() == "hello"

    with locked_folder(tmp_path, monkeypatch, "TemporaryDirectory") as locked:
        code, msg = _invoke("registry", "download", f"{model_name}/1", "-o", str(locked), *home)
    assert code == 2 and f"cannot write to {locked}: Permission denied" in msg
    assert list(locked.iterdir()) == []


def test_reading_commands_do_not_create_a_registry_and_say_where_they_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (["registry", "list"], ["registry", "show", "m@champion"], ["registry", "download", "m/1"]):
        code, msg = _invoke(*args)
        assert code == 2
        assert f"no registry at {tmp_path / '.vitbench'} (from the default ./.vitbench)" in msg
    assert not (tmp_path / ".vitbench").exists()

    monkeypatch.setenv("VITBENCH_HOME", str(tmp_path / "elsewhere"))
    code, msg = _invoke("registry", "list")
    assert code == 2 and f"no registry at {tmp_path / 'elsewhere'} (from VITBENCH_HOME)" in msg
    assert not (tmp_path / "elsewhere").exists()


def test_list_names_the_registry_it_read(registry_home: Path, registry: RegistryClient) -> None:
    code, msg = _invoke("registry", "list", "--home", str(registry_home))
    assert code == 0 and str(registry_home.resolve() / "mlflow.db") in msg.replace(" ", "")

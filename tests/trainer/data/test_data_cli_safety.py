"""``vitbench data check`` catches what training would refuse; ``data synth`` never overwrites silently.

Driven through typer's runner on the real ``vitbench`` app: exit code, the one message, no traceback.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from locked_folder import locked_folder
from typer.testing import CliRunner

from vitbench.cli.main import app

runner = CliRunner()


def _invoke(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    assert "Traceback" not in res.output, res.output
    return res.exit_code, " ".join(res.output.split())  # rich wraps long lines in tables


def _check(root: Path) -> tuple[int, str]:
    """Exit code of ``data check --json`` and its problems' messages, one per line."""
    res = runner.invoke(app, ["data", "check", "--data", str(root), "--no-decode", "--json"])
    assert "Traceback" not in res.output, res.output
    return res.exit_code, "\n".join(p["message"] for p in json.loads(res.stdout)["problems"])


def _copy(small_dataset: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(small_dataset, root)
    return root


def _edit(root: Path, split: str, **changes: object) -> None:
    path = root / "annotations" / f"instances_{split}.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_check_flags_a_training_split_without_annotations(small_dataset: Path, tmp_path: Path) -> None:
    root = _copy(small_dataset, tmp_path)
    _edit(root, "train", annotations=[])
    code, out = _check(root)
    assert code == 1
    assert "the training split has no annotated object" in out
    # only crowd regions left: training drops them, so the split is just as empty
    data = json.loads((small_dataset / "annotations" / "instances_train.json").read_text())
    _edit(root, "train", annotations=[{**a, "iscrowd": 1} for a in data["annotations"]])
    code, out = _check(root)
    assert code == 1 and "no annotated object" in out
    assert _check(small_dataset)[0] == 0  # the original


def test_check_flags_train_and_val_with_different_categories(small_dataset: Path, tmp_path: Path) -> None:
    root = _copy(small_dataset, tmp_path)
    val = json.loads((root / "annotations" / "instances_val.json").read_text())
    cats = val["categories"]
    renamed = [*cats[:-1], {**cats[-1], "name": "blob"}]
    _edit(root, "val", categories=renamed)
    code, out = _check(root)
    assert code == 1
    last = cats[-1]
    assert f"categories differ from train's: only in train: ['{last['id']}:{last['name']}']" in out
    assert f"only in val: ['{last['id']}:blob']" in out
    # the same categories listed in another order are the same categories
    _edit(root, "val", categories=list(reversed(cats)))
    assert _check(root)[0] == 0


def test_check_says_a_file_is_not_a_dataset_folder(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    code, out = _check(notes)
    assert code == 1 and "is a file; expected a dataset folder" in out


def test_synth_refuses_an_existing_dataset_and_force_replaces_it_whole(tmp_path: Path) -> None:
    out_dir = tmp_path / "ds"
    args = ("data", "synth", "--out", str(out_dir), "--categories", "2")
    assert _invoke(*args, "--images", "6")[0] == 0
    first = sorted(p.name for p in (out_dir / "train").iterdir())
    before = (out_dir / "annotations" / "instances_train.json").read_bytes()

    code, out = _invoke(*args, "--images", "3")
    assert code == 2
    assert f"{out_dir} already holds a dataset (train/, val/, annotations/); pass --force" in out
    assert (out_dir / "annotations" / "instances_train.json").read_bytes() == before  # untouched

    (out_dir / "README.md").write_text("mine")  # not part of the dataset: kept
    code, out = _invoke(*args, "--images", "3", "--force")
    assert code == 0, out
    after = sorted(p.name for p in (out_dir / "train").iterdir())
    assert len(first) == 5 and len(after) == 2, "no stale images from the first dataset"
    ann = json.loads((out_dir / "annotations" / "instances_train.json").read_text())
    assert sorted(i["file_name"] for i in ann["images"]) == after
    assert (out_dir / "README.md").read_text() == "mine"
    assert sorted(p.name for p in out_dir.iterdir()) == ["README.md", "annotations", "train", "val"]


def test_synth_into_a_file_or_an_unwritable_folder_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    code, out = _invoke("data", "synth", "--out", str(notes), "--images", "2")
    assert code == 2 and f"--out {notes} is a file; expected a folder" in out
    code, out = _invoke("data", "synth", "--out", str(notes / "sub"), "--images", "2")
    assert code == 2 and f"cannot write to {notes / 'sub'}" in out

    with locked_folder(tmp_path, monkeypatch, "mkdtemp") as locked:
        code, out = _invoke("data", "synth", "--out", str(locked), "--images", "2")
    assert code == 2 and f"cannot write to {locked}: Permission denied" in out
    assert list(locked.iterdir()) == []

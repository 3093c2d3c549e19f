"""Pre-training → registry → fine-tuning by reference: the version is tagged (method, init, recipe,
dataset, sha256), ``--weights NAME/VERSION`` downloads and verifies it, and the detector version names
the pre-training version it came from (``registry show``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vitbench.cli.main import app
from vitbench.registry.client import RegistryClient
from vitbench.trainer.data.synth import SynthConfig, generate_dataset, generate_pretrain_images

runner = CliRunner()
DET = [
    "solver.batch_size=2",
    "solver.max_iters=2",
    "solver.warmup_iters=1",
    "solver.eval_period=0",
    "heads.detections_per_img=10",
]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory, registry_home: Path) -> tuple[Path, str, Path]:
    root = tmp_path_factory.mktemp("pretrain-registry")
    cfg = SynthConfig(
        num_categories=2, max_objects=2, min_image_size=64, max_image_size=64, max_object_size=40
    )
    generate_dataset(root, 6, 0, cfg, 0.34)
    generate_pretrain_images(root, 16, 0, cfg)
    out = root / "mae"
    res = runner.invoke(
        app,
        [
            *("pretrain", "--method", "mae", "--data", str(root / "unlabeled"), "--out", str(out)),
            *("--set", "solver.batch_size=8", "--set", "solver.max_iters=2", "--set", "data.num_workers=0"),
            *("--model-name", "mae-tiny-e2e", "--home", str(registry_home), "--no-progress", "--json"),
        ],
    )
    assert res.exit_code == 0, res.output
    outcome = json.loads(res.stdout)
    return root, outcome["registered"], Path(outcome["files"]["mae"])


def test_pretraining_registers_a_tagged_release_file(
    pretrained: tuple[Path, str, Path], registry: RegistryClient
) -> None:
    root, ref, file = pretrained
    info = registry.resolve(ref)
    assert info.name == "mae-tiny-e2e"
    assert info.tags["method"] == "mae" and info.tags["init"] == "mae" and info.tags["recipe"] == "mae-tiny"
    assert info.tags["dataset"] == str(root / "unlabeled")
    assert info.tags["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert info.tags["artifact"] == "mae_pretrain_vit_tiny.pth"
    arts = registry.show(ref).artifacts
    assert "releases/mae_pretrain_vit_tiny_full.pth" in arts and "pretrain_recipe.json" in arts


def test_finetuning_from_a_registry_reference_records_lineage(
    pretrained: tuple[Path, str, Path], registry_home: Path, tmp_path: Path
) -> None:
    root, ref, file = pretrained
    out = tmp_path / "det"
    res = runner.invoke(
        app,
        ["train", "--recipe", "bench-tiny", "--data", str(root), "--out", str(out), "--weights", ref]
        + [a for kv in DET for a in ("--set", kv)]
        + ["--model-name", "det-from-mae-e2e", "--home", str(registry_home), "--no-progress", "--json"],
    )
    assert res.exit_code == 0, res.output
    report = json.loads((out / "load_report.json").read_text())
    assert report["init"] == "mae" and report["ok"] and len(report["loaded"]) == 51  # init from the tag
    shown = runner.invoke(
        app, ["registry", "show", "det-from-mae-e2e/1", "--home", str(registry_home), "--json"]
    )
    assert shown.exit_code == 0, shown.output
    tags = json.loads(shown.output)["version"]["tags"]
    assert tags["pretrained_from"] == ref
    assert tags["pretrained_sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    text = runner.invoke(app, ["registry", "show", "det-from-mae-e2e/1", "--home", str(registry_home)])
    assert "pre-trained from" in text.output and ref in text.output


def test_a_wrong_sha256_or_init_for_a_reference_is_refused(
    pretrained: tuple[Path, str, Path], registry_home: Path, tmp_path: Path
) -> None:
    root, ref, _ = pretrained
    common = [
        "train",
        "--recipe",
        "bench-tiny",
        "--data",
        str(root),
        "--weights",
        ref,
        "--home",
        str(registry_home),
    ]
    bad = runner.invoke(app, [*common, "--out", str(tmp_path / "a"), "--weights-sha256", "0" * 64])
    assert bad.exit_code == 2 and "does not match" in bad.output
    wrong = runner.invoke(app, [*common, "--out", str(tmp_path / "b"), "--init", "supervised"])
    assert wrong.exit_code == 2 and "holds 'mae' weights" in wrong.output

"""Must-show path: train the tiny preset a few iterations with RegistryHook → tagged version →
``vitbench registry promote`` → ``vitbench registry download NAME@champion`` gives the same bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from tiny import TINY_SYNTH, tiny
from typer.testing import CliRunner

from vitbench.cli.main import app
from vitbench.registry.client import RegistryClient
from vitbench.trainer.data.synth import generate_dataset
from vitbench.trainer.engine.hooks import JsonlMetricsHook
from vitbench.trainer.engine.loop import TrainConfig, Trainer
from vitbench.trainer.engine.registry_hook import RegistryHook
from vitbench.trainer.recipes import apply_overrides, get_recipe

TINY = [*tiny(max_iters=4, checkpoint_period=4), "heads.detections_per_img=10"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, registry: RegistryClient) -> tuple[RegistryHook, Path]:
    root = tmp_path_factory.mktemp("train-to-registry")
    data = root / "data"
    synth = TINY_SYNTH
    generate_dataset(data, 8, seed=3, cfg=synth, val_fraction=0.25)
    recipe = apply_overrides(get_recipe("bench-tiny"), TINY)
    hook = RegistryHook(registry, "bench-tiny-e2e", "train-e2e")
    cfg = TrainConfig(
        recipe=recipe, init="random", data_root=data, out_dir=root / "run", device="cpu", log_period=1
    )
    Trainer(cfg, [JsonlMetricsHook(), hook]).run()
    return hook, root / "run"


def test_training_registers_a_tagged_version(
    trained: tuple[RegistryHook, Path], registry: RegistryClient
) -> None:
    hook, run_dir = trained
    assert hook.version is not None
    info = registry.resolve(f"bench-tiny-e2e/{hook.version.version}")
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert info.tags["init"] == "random" and info.tags["recipe"] == "bench-tiny"
    assert info.tags["dataset"] != "" and info.tags["code_version"]
    assert info.tags["sha256"] == hashlib.sha256((run_dir / "model_final.pth").read_bytes()).hexdigest()
    metrics = evaluation["metrics"]
    for tag, key in (("ap_box", "bbox/AP"), ("ap_mask", "segm/AP")):
        assert info.tags[tag] == (f"{metrics[key]:.4f}" if key in metrics else "n/a")
    lineage = registry.show(info.ref)
    assert lineage.params["input.image_size"] == "64" and lineage.params["solver.max_iters"] == "4"
    assert [step for step, _ in registry.metric_history(info.run_id or "", "lr")] == [1, 2, 3, 4]
    assert "plots/training_curves.png" in lineage.artifacts and lineage.run_status == "FINISHED"


def test_promote_and_download_same_bytes(
    trained: tuple[RegistryHook, Path], registry_home: Path, tmp_path: Path
) -> None:
    hook, run_dir = trained
    assert hook.version is not None
    runner = CliRunner()
    home = ["--home", str(registry_home)]
    res = runner.invoke(app, ["registry", "promote", hook.version.ref, *home])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app, ["registry", "download", "bench-tiny-e2e@champion", "-o", str(tmp_path), "--json", *home]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    got = Path(out["path"]).read_bytes()
    assert got == (run_dir / "model_final.pth").read_bytes()
    assert out["sha256"] == hashlib.sha256(got).hexdigest() == hook.version.tags["sha256"]

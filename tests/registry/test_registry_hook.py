"""RegistryHook driven by a minimal loop object: the run is logged and a tagged version registered."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from vitbench.registry.client import RegistryClient, RegistryError
from vitbench.trainer.engine.hooks import LoopState
from vitbench.trainer.engine.registry_hook import RegistryHook, code_version
from vitbench.trainer.recipes import Recipe, get_recipe


@dataclass
class FakeLoop:
    """The LoopState surface a hook reads."""

    out_dir: Path
    recipe: Recipe = field(default_factory=lambda: get_recipe("bench-tiny"))
    iteration: int = 0
    max_iters: int = 4
    is_main: bool = True
    epoch: float = 0.0
    meta: dict[str, Any] = field(
        default_factory=lambda: {
            "init": "mae",
            "dataset": "synth-8",
            "num_classes": 4,
            "class_names": list("abcd"),
        }
    )


def _train(hook: RegistryHook, loop: FakeLoop, final: bool = True) -> None:
    assert isinstance(loop, LoopState)
    hook.before_train(loop)
    for it in range(1, loop.max_iters + 1):
        loop.iteration = it
        hook.after_step(loop, {"loss": 4.0 / it, "loss_mask": 1.0 / it, "lr": 1e-4 * it})
    hook.after_eval(loop, {"bbox/AP": 0.125, "segm/AP": 0.0625, "bbox/AP50": float("nan")})
    (loop.out_dir / "metrics.jsonl").write_text('{"iteration": 4}\n')
    (loop.out_dir / "recipe.json").write_text(json.dumps(loop.recipe.model_dump(mode="json")))
    if final:
        (loop.out_dir / "model_final.pth").write_bytes(b"final weights")
    hook.after_train(loop)


def test_hook_registers_tagged_version(registry: RegistryClient, model_name: str, tmp_path: Path) -> None:
    hook = RegistryHook(registry, model_name, "hook-tests", tags={"owner": "ci"})
    loop = FakeLoop(out_dir=tmp_path)
    _train(hook, loop)
    assert hook.version is not None
    info = registry.resolve(f"{model_name}/{hook.version.version}")
    tags = info.tags
    assert tags["init"] == "mae" and tags["recipe"] == "bench-tiny" and tags["dataset"] == "synth-8"
    assert (tags["ap_box"], tags["ap_mask"]) == ("0.1250", "0.0625")
    assert tags["sha256"] == hashlib.sha256(b"final weights").hexdigest()
    assert tags["code_version"] == code_version() and tags["owner"] == "ci" and tags["iteration"] == "4"
    lineage = registry.show(info.ref)
    assert lineage.run_status == "FINISHED"
    assert lineage.params["input.image_size"] == "128"
    assert lineage.params["backbone.embed_dim"] == str(loop.recipe.backbone.embed_dim)
    assert lineage.params["init"] == "mae"
    assert lineage.metrics["segm/AP"] == 0.0625 and "bbox/AP50" not in lineage.metrics
    assert registry.metric_history(info.run_id or "", "loss") == [(1, 4.0), (2, 2.0), (3, 4.0 / 3), (4, 1.0)]
    assert {
        "checkpoint/model_final.pth",
        "metrics/metrics.jsonl",
        "plots/training_curves.png",
        "recipe.json",
    } <= set(lineage.artifacts)
    assert (tmp_path / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert registry.download(f"{model_name}/1", tmp_path / "dl").path.read_bytes() == b"final weights"


def test_hook_without_final_checkpoint_fails_clearly(
    registry: RegistryClient, model_name: str, tmp_path: Path
) -> None:
    hook = RegistryHook(registry, model_name, "hook-tests")
    with pytest.raises(RegistryError, match=r"final checkpoint .*model_final\.pth does not exist"):
        _train(hook, FakeLoop(out_dir=tmp_path), final=False)


def test_non_main_rank_does_not_log(registry: RegistryClient, model_name: str, tmp_path: Path) -> None:
    hook = RegistryHook(registry, model_name, "hook-tests")
    _train(hook, FakeLoop(out_dir=tmp_path, is_main=False))
    assert hook.run_id is None and hook.version is None
    assert model_name not in [m.name for m in registry.list_models()]


def test_code_version_names_the_commit() -> None:
    assert code_version().startswith(("git:", "vitbench "))

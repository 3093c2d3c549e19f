"""Must-show: each method's tiny pre-training output is a release-format file that the existing inits
load with an exact LoadReport, and the detector's backbone then holds the pre-trained encoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from vitbench.cli.main import app
from vitbench.trainer.data.synth import SynthConfig, generate_pretrain_images
from vitbench.trainer.inits import load_initialization
from vitbench.trainer.models.detector import build_detector
from vitbench.trainer.pretrain import formats
from vitbench.trainer.recipes import get_recipe

RELPOS = [
    "backbone.net.rel_pos_window.relative_position_bias_table",
    "backbone.net.rel_pos_global.relative_position_bias_table",
]
runner = CliRunner()


SMOKE = ["solver.batch_size=8", "solver.max_iters=3", "data.num_workers=0"]


def _pretrain(method: str, data: Path, out: Path) -> dict[str, Path]:
    """``vitbench pretrain`` for 3 steps; returns {init: release file}."""
    res = runner.invoke(
        app,
        ["pretrain", "--method", method, "--recipe", "tiny", "--data", str(data), "--out", str(out)]
        + [a for kv in SMOKE for a in ("--set", kv)]
        + ["--no-register", "--no-progress", "--device", "cpu", "--json"],
    )
    assert res.exit_code == 0, res.output
    return {k: Path(v) for k, v in json.loads(res.stdout)["files"].items()}


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, torch.Tensor]]]:
    """{init: (release file, the trained encoder's tensors by release name)} after 3 engine steps of each
    method on synthetic images; the encoder comes from the run's own ``model_final.pth``."""
    root = tmp_path_factory.mktemp("pretrain")
    generate_pretrain_images(root, 24, 0, SynthConfig(num_categories=3, max_objects=3))
    files: dict[str, tuple[Path, dict[str, torch.Tensor]]] = {}
    for method, data, prefix in (
        ("mae", root / "unlabeled", ""),
        ("supervised", root / "crops", ""),
        ("mocov3", root / "unlabeled", "base_encoder."),
    ):
        out = root / method
        written = _pretrain(method, data, out)
        final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]
        encoder = {k.removeprefix(prefix): v for k, v in final.items() if k.startswith(prefix)}
        for init, path in written.items():
            files[init] = (path, encoder)
    return files


def test_files_have_the_releases_top_level_layout(released: dict[str, tuple[Path, Any]]) -> None:
    mae = formats.load_release(released["mae"][0])
    assert list(mae) == ["model"]
    assert {k.split(".")[0] for k in mae["model"]} == {
        "patch_embed",
        "cls_token",
        "pos_embed",
        "blocks",
        "norm",
    }
    full = formats.load_release(released["mae_full"][0])["model"]
    assert {"mask_token", "decoder_pos_embed", "decoder_pred.weight", "decoder_blocks.1.mlp.fc2.bias"} <= set(
        full
    )
    deit = formats.load_release(released["supervised"][0])
    assert list(deit) == ["model"] and deit["model"]["head.weight"].shape == (3, 96)
    moco = formats.load_release(released["mocov3"][0])
    assert set(moco) == {"epoch", "arch", "state_dict", "optimizer", "scaler"}
    prefixes = {".".join(k.split(".")[:2]) for k in moco["state_dict"]}
    assert prefixes == {"module.base_encoder", "module.momentum_encoder", "module.predictor"}


EXPECTED_UNEXPECTED = {
    "mae": {"norm.weight", "norm.bias"},
    "mae_full": None,  # norm.* and every decoder_{embed,blocks,norm}.* tensor (checked below)
    "supervised": set(),
    "mocov3": set(),
}


@pytest.mark.parametrize("init", ["mae", "mae_full", "supervised", "mocov3"])
def test_inits_check_gives_an_exact_report(init: str, released: dict[str, tuple[Path, Any]]) -> None:
    path = released[init][0]
    res = runner.invoke(
        app, ["inits", "check", "--init", init, "--path", str(path), "--recipe", "bench-tiny", "--json"]
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["ok"] and not report["mismatched"]
    assert report["unexpected_missing"] == [] and report["unexpected_extra"] == []
    assert len(report["loaded"]) == 51  # patch embed (2) + pos_embed + 4 blocks x 12
    assert sorted(report["missing"]) == sorted(RELPOS)  # the study's rel-pos tables start at zero
    unexpected = set(report["unexpected"])
    if init == "mae_full":
        assert {"norm.weight", "norm.bias"} <= unexpected
        assert all(
            k.startswith(("norm.", "decoder_embed.", "decoder_blocks.", "decoder_norm.")) for k in unexpected
        )
    else:
        assert unexpected == EXPECTED_UNEXPECTED[init]


@pytest.mark.parametrize("init", ["mae", "mae_full", "supervised", "mocov3"])
def test_detector_backbone_holds_the_pretrained_encoder(
    init: str, released: dict[str, tuple[Path, Any]]
) -> None:
    path, encoder = released[init]
    recipe = get_recipe("bench-tiny")
    torch.manual_seed(1)
    det = build_detector(recipe, 3)
    load_initialization(det, recipe, init, str(path))
    state = det.state_dict()
    compared = 0
    for key, value in encoder.items():
        if key.startswith(("patch_embed.", "pos_embed", "blocks.")):
            torch.testing.assert_close(state[f"backbone.net.{key}"], value, rtol=0, atol=0)
            compared += 1
    assert compared == 51

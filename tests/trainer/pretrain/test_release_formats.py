"""Must-show: each method's tiny pre-training output is a release-format file that the existing inits
load with an exact LoadReport, and the detector's backbone then holds the pre-trained encoder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from vitbench.cli.main import app
from vitbench.trainer.data.synth import SynthConfig, generate_pretrain_images
from vitbench.trainer.inits import load_initialization
from vitbench.trainer.models.detector import build_detector
from vitbench.trainer.pretrain import formats
from vitbench.trainer.pretrain.data import (
    UnlabeledImages,
    find_images,
    image_folder,
    mae_transform,
    mocov3_transform,
    supervised_transform,
)
from vitbench.trainer.pretrain.mae import MaskedAutoencoder
from vitbench.trainer.pretrain.mocov3 import MoCoV3
from vitbench.trainer.pretrain.supervised import ViTClassifier
from vitbench.trainer.recipes import get_recipe

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
TINY = dict(img_size=64, patch_size=16, embed_dim=96, depth=4, num_heads=3)
RELPOS = [
    "backbone.net.rel_pos_window.relative_position_bias_table",
    "backbone.net.rel_pos_global.relative_position_bias_table",
]
runner = CliRunner()


def _steps(model: torch.nn.Module, batches: Iterator[Any], loss_fn: Any, n: int = 3) -> None:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for _ in range(n):
        opt.zero_grad()
        loss_fn(next(batches)).backward()
        opt.step()


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, torch.Tensor]]]:
    """{init: (file, encoder tensors by release name)} after 3 steps of each method on synthetic images."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("pretrain")
    generate_pretrain_images(root, 24, 0, SynthConfig(num_categories=3, max_objects=3))
    out = root / "out"
    files: dict[str, tuple[Path, dict[str, torch.Tensor]]] = {}

    mae = MaskedAutoencoder(**TINY, decoder_dim=96, decoder_depth=2, decoder_heads=3)
    imgs = DataLoader(UnlabeledImages(find_images(root / "unlabeled"), mae_transform(64, MEAN, STD)), 8)
    _steps(mae, iter(imgs), mae)
    for f in formats.mae_files(mae.state_dict(), out, "tiny"):
        files[f.init] = (f.path, mae.encoder_state_dict())

    sup = ViTClassifier(**TINY, num_classes=3)
    crops = DataLoader(image_folder(root / "crops", supervised_transform(64, MEAN, STD)), 8, shuffle=True)
    _steps(sup, iter(crops), lambda b: sup.loss(*b)[0])
    (f,) = formats.deit_file(sup.state_dict(), out, "tiny")
    files[f.init] = (f.path, sup.state_dict())

    moco = MoCoV3(**TINY, dim=32, mlp_dim=64)
    views = DataLoader(UnlabeledImages(find_images(root / "unlabeled"), mocov3_transform(64, MEAN, STD)), 8)
    _steps(moco, iter(views), lambda b: moco(*b))
    moco.update_momentum_encoder(0.99)
    (f,) = formats.mocov3_file(moco.state_dict(), out, "tiny", epoch=1, arch="vit_tiny")
    base = {
        k.removeprefix("base_encoder."): v
        for k, v in moco.state_dict().items()
        if k.startswith("base_encoder.")
    }
    files[f.init] = (f.path, base)
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

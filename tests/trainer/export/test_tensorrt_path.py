"""TensorRT path: clear error without a GPU, cache keys, and (GPU tier) parity through the TRT EP."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vitbench.trainer.export.tensorrt import (
    TensorRTUnavailableError,
    cache_key,
    require_tensorrt,
    trt_provider_options,
)


def test_require_tensorrt_without_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("GPU present")
    with pytest.raises(TensorRTUnavailableError, match="needs an NVIDIA GPU"):
        require_tensorrt()


def test_cache_key_changes_with_model_gpu_and_trt() -> None:
    base = cache_key("a" * 64, "NVIDIA H100", "10.9.0")
    assert len(base) == 16
    assert base == cache_key("a" * 64, "NVIDIA H100", "10.9.0")
    assert (
        len(
            {
                base,
                cache_key("b" * 64, "NVIDIA H100", "10.9.0"),
                cache_key("a" * 64, "NVIDIA A100", "10.9.0"),
                cache_key("a" * 64, "NVIDIA H100", "10.10.0"),
            }
        )
        == 4
    )


def test_provider_options(tmp_path: Path) -> None:
    opts = trt_provider_options(tmp_path / "cache", 1024)
    assert opts["trt_fp16_enable"] and opts["trt_engine_cache_enable"] and opts["trt_timing_cache_enable"]
    assert opts["trt_engine_cache_path"] == str(tmp_path / "cache") and (tmp_path / "cache").is_dir()
    assert opts["trt_profile_opt_shapes"] == "images:1x3x1024x1024"


@pytest.mark.gpu
def test_tensorrt_export_parity(tmp_path: Path) -> None:
    from vitbench.trainer.engine.checkpoint import atomic_save
    from vitbench.trainer.export.pipeline import export_checkpoint
    from vitbench.trainer.models.detector import build_detector
    from vitbench.trainer.recipes import get_recipe

    recipe = get_recipe("vitdet-tiny")
    model = build_detector(recipe, 3)
    meta = {
        "init": "random",
        "num_classes": 3,
        "class_names": ["a", "b", "c"],
        "dataset": "synth",
        "iteration": 0,
    }
    ckpt = atomic_save(
        {"model": model.state_dict(), "recipe": recipe.model_dump(mode="json"), "meta": meta},
        tmp_path / "m.pth",
    )
    outcome = export_checkpoint(ckpt, tmp_path / "out", "tensorrt", parity_count=2)
    assert outcome.manifest.tensorrt is not None
    assert {"model.onnx", "backbone.onnx", "tail.onnx"} == set(outcome.manifest.files)
    assert outcome.parity.passed, outcome.parity

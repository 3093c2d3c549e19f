"""Hostile and wrong files are refused with a clear message and leave the model untouched."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from inits_formats import mae_file, mocov3_file

from vitbench.trainer.inits import InitError, load_initialization
from vitbench.trainer.inits.loading import read_checkpoint
from vitbench.trainer.models.detector import build_detector
from vitbench.trainer.recipes import Recipe


class _Touch:
    """Pickles as a call that creates ``marker`` when unpickled (what a hostile file would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def _refused(
    model: torch.nn.Module, recipe: Recipe, init: str, path: Path, match: str, sha256: str | None = None
) -> str:
    """Load ``path`` as ``init``, expecting an InitError that matches ``match`` and leaves every tensor of
    ``model`` as it was; returns the message."""
    before = _snapshot(model)
    with pytest.raises(InitError, match=match) as info:
        load_initialization(model, recipe, init, str(path), sha256=sha256)
    _assert_unchanged(model, before)
    return str(info.value)


@pytest.fixture
def model(bench_tiny: Recipe) -> torch.nn.Module:
    return build_detector(bench_tiny, num_classes=2)


def test_code_executing_pth_is_refused(tmp_path: Path, model: torch.nn.Module, bench_tiny: Recipe) -> None:
    marker = tmp_path / "pwned"
    evil = mae_file(96, 4)
    evil["payload"] = _Touch(marker)
    torch.save(evil, tmp_path / "evil.pth")
    match = r"refused to load .*evil\.pth: .*Unsupported global: GLOBAL getattr.*weights-only"
    _refused(model, bench_tiny, "mae", tmp_path / "evil.pth", match)
    assert not marker.exists()


def test_code_executing_pkl_is_refused(tmp_path: Path, model: torch.nn.Module, bench_tiny: Recipe) -> None:
    marker = tmp_path / "pwned"
    payload = {"model": {"backbone.net.pos_embed": np.zeros((1, 17, 96), np.float32), "x": _Touch(marker)}}
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(payload, protocol=2))
    match = r"refused to load .*evil\.pkl: refused global \S+: a detectron2 checkpoint holds only numpy"
    _refused(model, bench_tiny, "detectron2", tmp_path / "evil.pkl", match)
    assert not marker.exists()


def test_numpy_pickle_is_admitted(tmp_path: Path) -> None:
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    for proto in (2, 4):
        path = tmp_path / f"ok{proto}.pkl"
        path.write_bytes(
            pickle.dumps({"model": {"a": arr, "s": np.float32(2)}, "__author__": "d2"}, protocol=proto)
        )
        loaded = read_checkpoint(str(path))
        np.testing.assert_array_equal(loaded["model"]["a"], arr)


def test_sha256_mismatch_is_refused(tmp_path: Path, model: torch.nn.Module, bench_tiny: Recipe) -> None:
    path = tmp_path / "mae.pth"
    torch.save(mae_file(96, 4), path)
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    wrong = "0" * 64
    _refused(model, bench_tiny, "mae", path, f"sha256 mismatch .*expected {wrong}, file has {good}", wrong)
    assert load_initialization(model, bench_tiny, "mae", str(path), sha256=good.upper()).ok


def test_published_name_digest_prefix_is_checked(
    tmp_path: Path, model: torch.nn.Module, bench_tiny: Recipe
) -> None:
    """DeiT's file name carries its sha256 prefix (torch.hub); a file so named must match it."""
    from inits_formats import deit_file

    named = tmp_path / "deit_base_patch16_224-b5f2ef4d.pth"
    torch.save(deit_file(96, 4), named)
    _refused(model, bench_tiny, "supervised", named, r"promises a digest starting with b5f2ef4d")
    renamed = named.rename(tmp_path / "my_deit.pth")  # not claiming to be the published file
    assert load_initialization(model, bench_tiny, "supervised", str(renamed)).ok


def test_truncated_file_is_refused(tmp_path: Path, model: torch.nn.Module, bench_tiny: Recipe) -> None:
    path = tmp_path / "mae.pth"
    torch.save(mae_file(96, 4), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _refused(model, bench_tiny, "mae", path, "truncated or not a PyTorch checkpoint")
    pkl = tmp_path / "model.pkl"
    pkl.write_bytes(pickle.dumps({"model": {"a": np.ones(100, np.float32)}}, protocol=2)[:-40])
    with pytest.raises(InitError, match="truncated or not a pickle"):
        read_checkpoint(str(pkl))


def test_larger_vit_into_smaller_recipe_names_first_mismatch(
    tmp_path: Path, model: torch.nn.Module, bench_tiny: Recipe
) -> None:
    """A "ViT-L" file (wider, deeper) offered to a "ViT-B" recipe, at narrow widths (192/8 vs 96/4)."""
    path = tmp_path / "vit-l.pth"
    torch.save(mae_file(192, 8), path)
    msg = _refused(model, bench_tiny, "mae", path, r"shape mismatch for backbone\.net\.pos_embed")
    assert "shape mismatch for backbone.net.pos_embed: checkpoint has [1, 17, 192]" in msg
    assert "model 'bench-tiny' expects [1, 17, 96]" in msg
    assert "checkpoint tensors have no place in the model" in msg  # blocks 4..7


def test_unknown_init_and_wrong_nesting(tmp_path: Path, model: torch.nn.Module, bench_tiny: Recipe) -> None:
    with pytest.raises(InitError, match=r"unknown init 'maee'; expected one of random, .*Did you mean 'mae'"):
        load_initialization(model, bench_tiny, "maee", None)
    path = tmp_path / "moco.pth.tar"
    torch.save(mocov3_file(96, 4), path)
    with pytest.raises(
        InitError, match=r"not a mae checkpoint: expected the weights under top-level key 'model'"
    ):
        load_initialization(model, bench_tiny, "mae", str(path))
    with pytest.raises(InitError, match=r"init 'moby' does not apply to recipe 'bench-tiny'"):
        load_initialization(model, bench_tiny, "moby", str(path))
    with pytest.raises(InitError, match="weights file not found"):
        load_initialization(model, bench_tiny, "mae", str(tmp_path / "nope.pth"))
    with pytest.raises(InitError, match="needs a weights file"):
        load_initialization(model, bench_tiny, "mae", None)


def test_random_needs_no_weights(model: torch.nn.Module, bench_tiny: Recipe) -> None:
    before = _snapshot(model)
    report = load_initialization(model, bench_tiny, "random", None)
    assert report.ok and report.loaded == () and report.missing == ()
    _assert_unchanged(model, before)
    with pytest.raises(InitError, match="takes no weights"):
        load_initialization(model, bench_tiny, "random", "x.pth")


def test_loads_over_http_with_sha256(
    http_dir: tuple[Path, str], model: torch.nn.Module, bench_tiny: Recipe
) -> None:
    root, url = http_dir
    torch.save(mae_file(96, 4, seed=4), root / "mae.pth")
    digest = hashlib.sha256((root / "mae.pth").read_bytes()).hexdigest()
    report = load_initialization(model, bench_tiny, "mae", f"{url}/mae.pth", sha256=digest)
    assert report.ok and len(report.loaded) > 0
    with pytest.raises(InitError, match="cannot read http"):
        load_initialization(model, bench_tiny, "mae", f"{url}/missing.pth")

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vitbench.trainer.engine import checkpoint as ck


def test_atomic_save_never_leaves_a_half_written_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt_dir = tmp_path / "checkpoints"
    good = ck.atomic_save(
        {"model": {"w": torch.ones(3)}, "optimizer": {}, "iteration": 2}, ckpt_dir / ck.checkpoint_name(2)
    )
    real_save = torch.save

    def dying_save(obj: Any, f: Any, *a: Any, **kw: Any) -> None:
        f.write(b"PK\x03\x04 partial bytes")  # the process "dies" half-way through writing
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        ck.atomic_save(
            {"model": {"w": torch.zeros(3)}, "optimizer": {}, "iteration": 4},
            ckpt_dir / ck.checkpoint_name(4),
        )
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(p.name for p in ckpt_dir.iterdir()) == [good.name]  # no final name, no temp file
    path, state = ck.latest_checkpoint(ckpt_dir) or (None, None)
    assert path == good and state is not None and state["iteration"] == 2


def test_latest_skips_unreadable_and_prune_keeps_newest(tmp_path: Path) -> None:
    for it in (1, 2, 3):
        ck.atomic_save({"model": {}, "optimizer": {}, "iteration": it}, tmp_path / ck.checkpoint_name(it))
    (tmp_path / ck.checkpoint_name(4)).write_bytes(b"garbage")  # damaged after the fact
    (tmp_path / ".model_0000005.pth.abc.tmp").write_bytes(b"temp")  # leftover temp of a killed writer
    found = ck.latest_checkpoint(tmp_path)
    assert found is not None and found[1]["iteration"] == 3
    ck.prune_checkpoints(tmp_path, keep=2)
    assert [it for it, _ in ck.list_checkpoints(tmp_path)] == [4, 3]


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    ck.atomic_save({"model": {}, "rng": ck.rng_state()}, tmp_path / "s.pth")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    ck.set_rng_state(ck.load_checkpoint(tmp_path / "s.pth")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_load_checkpoint_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ck.CheckpointError, match="does not exist"):
        ck.load_checkpoint(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ck.CheckpointError, match=r"bad\.pth"):
        ck.load_checkpoint(bad)

"""Run ``vitbench train`` (arguments as given) under torchrun and save THIS rank's final weights.

Only rank 0 writes checkpoints, so to compare the ranks this launcher remembers the detector that each
rank runs (a global forward pre-hook sees every module call; the outermost one is the torchvision
detector) and, when the command has returned, writes its parameters to ``<--out>/rank<RANK>_weights.pt``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

from vitbench.cli.main import app

seen: list[nn.Module] = []


def _remember(module: nn.Module, args: Any) -> None:
    if isinstance(module, GeneralizedRCNN) and not seen:
        seen.append(module)


def main(argv: list[str]) -> None:
    handle = nn.modules.module.register_module_forward_pre_hook(_remember)
    try:
        app(argv, standalone_mode=False)
    finally:
        handle.remove()
    out = Path(argv[argv.index("--out") + 1])
    assert seen, "no detector ran"
    params = {n: p.detach().clone() for n, p in seen[0].named_parameters()}
    torch.save(params, out / f"rank{os.environ.get('RANK', '0')}_weights.pt")


if __name__ == "__main__":
    main(sys.argv[1:])

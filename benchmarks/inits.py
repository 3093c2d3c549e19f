"""Initialization benchmarks: loading published-size checkpoints, and MIMDet's token sampling.

``load``: for each init, a checkpoint with the exact keys and ViT-B shapes of the published file
(random values, written once to a temporary folder; nothing is downloaded) is loaded into the
``bench-b`` detector (``moby``: ``swin-t``; ``mae_full``: ``mimdet-b``). Reported per init: file size,
sha256 time, safe deserialization time (``read_checkpoint``), and the full ``load_initialization`` time
(read + convert + compare + copy).

``mimdet``: one training step (forward + backward, batch 1) of the MIMDet-B backbone (conv stem +
ViT-B encoder + 4 decoder blocks + FPN) at each sample ratio, plus the eval forward (all tokens).
The ratio of step times is what MIMDet's "sample 25-50 % of the tokens" buys.

Usage::

    python benchmarks/inits.py load                       # CPU, all inits
    python benchmarks/inits.py mimdet --size 384          # CPU, 3 ratios
    python benchmarks/inits.py mimdet --device cuda --size 1024 --repeats 10
    python benchmarks/inits.py load --json load.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "trainer" / "inits"))  # the published-format writers

LOAD_INITS = ("supervised", "mocov3", "beit", "mae", "mae_full", "moby")


def _published_file(init: str) -> Any:
    """A checkpoint dict with the published ViT-B / Swin-T keys and shapes."""
    import inits_formats as f

    if init == "supervised":
        return f.deit_file(768, 12)
    if init == "mocov3":
        return f.mocov3_file(768, 12)
    if init == "beit":
        return f.beit_file(768, 12, 12)
    if init == "mae":
        return f.mae_file(768, 12)
    if init == "mae_full":
        return f.mae_full_file(768, 12)
    if init == "moby":
        return f.moby_file(96, (2, 2, 6, 2), (3, 6, 12, 24))
    raise ValueError(init)


def bench_load(inits: list[str]) -> list[dict[str, Any]]:
    import inits_formats as f
    import torch

    from vitbench.trainer.inits import apply_init_overrides, load_initialization
    from vitbench.trainer.inits.loading import read_checkpoint, sha256_of
    from vitbench.trainer.models.detector import build_detector
    from vitbench.trainer.recipes import get_recipe

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for init in inits:
            path = Path(tmp) / f"{init}.pth"
            if init == "moby":
                f.save_with_fake_yacs(_published_file(init), path)
            else:
                torch.save(_published_file(init), path)
            recipe_name = {"moby": "swin-t", "mae_full": "mimdet-b"}.get(init, "bench-b")
            recipe = apply_init_overrides(get_recipe(recipe_name), init)
            model = build_detector(recipe, num_classes=80)
            t0 = time.perf_counter()
            digest = sha256_of(path)
            t1 = time.perf_counter()
            read_checkpoint(str(path))
            t2 = time.perf_counter()
            report = load_initialization(model, recipe, init, str(path), sha256=digest)
            t3 = time.perf_counter()
            rows.append(
                {
                    "init": init,
                    "recipe": recipe_name,
                    "file_mb": round(path.stat().st_size / 2**20, 1),
                    "sha256_s": round(t1 - t0, 3),
                    "read_s": round(t2 - t1, 3),
                    "load_s": round(t3 - t2, 3),
                    "loaded": len(report.loaded),
                    "missing": len(report.missing),
                    "ok": report.ok,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            path.unlink()
            del model
    return rows


def bench_mimdet(ratios: list[float], size: int, device: str, repeats: int) -> list[dict[str, Any]]:
    import torch

    from vitbench.trainer.models.mimdet import build_mimdet_backbone
    from vitbench.trainer.recipes import apply_overrides, get_recipe

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    rows = []
    x = torch.randn(1, 3, size, size, device=device)
    for ratio in [*ratios, None]:  # None: eval forward, all tokens
        r = ratio if ratio is not None else 0.5
        recipe = apply_overrides(
            get_recipe("mimdet-b"),
            [f"backbone.sample_ratio={r}", "backbone.act_checkpoint=false", "neck.norm=gn"],
        )
        bb = build_mimdet_backbone(recipe).to(device)
        bb.train(ratio is not None)
        times = []
        for i in range(repeats + 1):
            sync()
            t = time.perf_counter()
            if ratio is None:
                with torch.no_grad():
                    bb(x)
            else:
                out = bb(x)
                sum(o.float().mean() for o in out.values()).backward()
                bb.zero_grad(set_to_none=True)
            sync()
            if i:  # first run is warm-up
                times.append(time.perf_counter() - t)
        row = {
            "mode": "eval forward (all tokens)" if ratio is None else f"train step, ratio {ratio}",
            "tokens_in_encoder": bb.num_kept((size // 16) ** 2),
            "size": size,
            "median_s": round(sorted(times)[len(times) // 2], 4),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=("load", "mimdet"))
    parser.add_argument("--inits", default=",".join(LOAD_INITS), help="comma list for `load`")
    parser.add_argument("--ratios", default="0.25,0.5,1.0", help="comma list of train sample ratios")
    parser.add_argument("--size", type=int, default=384, help="square input side in px for `mimdet`")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.what == "load":
        rows = bench_load(args.inits.split(","))
    else:
        rows = bench_mimdet([float(r) for r in args.ratios.split(",")], args.size, args.device, args.repeats)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

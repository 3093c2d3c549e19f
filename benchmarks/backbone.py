"""Peak memory and time of the ViT backbone at 1024x1024: window vs global attention, ours vs timm.

Each configuration runs in its own subprocess (batch 1; ``--mode infer``: no-grad forward,
``--mode train``: forward + backward) so peak memory is not polluted by the others:

- CPU: peak resident memory of the forward = ``ru_maxrss`` after it minus the resident size just
  before it (model and input already allocated); time = wall clock of each forward.
- CUDA: ``torch.cuda.max_memory_allocated`` during the forward minus the memory allocated before it;
  time = CUDA-synchronized wall clock after warm-up.

Configurations (ViT-B/16 by default, ``--arch vit-l`` for ViT-L/16; 64x64 tokens at 1024 px; no rel-pos
unless named):

- ``ours-window``: window 14 (64 -> 70 padded) + 4 global blocks (ViT-B 2, 5, 8, 11; ViT-L 5, 11, 17, 23)
- ``ours-global``: global attention in every block
- ``ours-window-relpos``: ``ours-window`` with ViTDet's decomposed rel-pos (the vitdet-b backbone)
- ``timm-global``: timm's ``VisionTransformer`` (no class token) at 1024 px, equal settings to ``ours-global``
- ``*-math`` variants force PyTorch's math SDPA backend, which materializes the attention matrix as the
  study's 2021 implementation did; the default backend uses fused (flash / memory-efficient) kernels.

Usage::

    python benchmarks/backbone.py                      # CPU, all configs, 1 timed forward each
    python benchmarks/backbone.py --device cuda --dtype bf16 --repeats 20
    python benchmarks/backbone.py --mode train --image-size 512   # activation memory, forward + backward
    python benchmarks/backbone.py --configs ours-window,ours-global --json out.json
    python benchmarks/backbone.py --interleave --configs ours-global,timm-global --repeats 3
    python benchmarks/backbone.py --device cuda --mode train --arch vit-l    # ViT-L training memory
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import sdpa_backend

CONFIGS = (
    "ours-window",
    "ours-global",
    "timm-global",
    "ours-window-math",
    "ours-global-math",
    "ours-window-relpos",
)
ROOT = Path(__file__).resolve().parents[1]


def _rss_bytes() -> int:
    """Current resident set size of this process (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


ARCHS = {  # embed_dim, depth, num_heads, global blocks of the windowed layout
    "vit-b": (768, 12, 12, (2, 5, 8, 11)),
    "vit-l": (1024, 24, 16, (5, 11, 17, 23)),
}


def _build(config: str, image_size: int, arch: str = "vit-b") -> Any:
    """(callable run on the input, module holding the parameters) for ``config``."""
    dim, depth, heads, globals_ = ARCHS[arch]
    if config.startswith("timm"):
        from timm.models.vision_transformer import VisionTransformer

        model = VisionTransformer(
            img_size=image_size,
            patch_size=16,
            embed_dim=dim,
            depth=depth,
            num_heads=heads,
            class_token=False,
            global_pool="",
            num_classes=0,
            qkv_bias=True,
        )
        return model.forward_features, model
    from vitbench.trainer.models.vit import ViT

    windowed = config.startswith("ours-window")
    vit = ViT(
        img_size=image_size,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        window_size=14 if windowed else 0,
        global_blocks=globals_ if windowed else tuple(range(depth)),
        rel_pos="decomposed" if config.endswith("relpos") else "none",
        out_indices=(depth - 1,),
    )
    return vit, vit


def _sdpa_backend(config: str) -> contextlib.AbstractContextManager[None]:
    """The math SDPA backend for ``*-math`` configs, the default (fused) choice otherwise."""
    return sdpa_backend(config.endswith("-math"))


def worker(
    config: str,
    device: str,
    dtype: str,
    image_size: int,
    repeats: int,
    warmup: int,
    mode: str = "infer",
    arch: str = "vit-b",
) -> dict[str, Any]:
    """Run one configuration in this process and return its measurements.

    ``mode="infer"``: forward under ``inference_mode``. ``mode="train"``: forward with autograd and
    backward of the output mean (the activations kept for backward are what the study's memory
    comparison is about); parameters' gradients are freed after every step.
    """
    import torch

    torch.manual_seed(0)
    fn, module = _build(config, image_size, arch)
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    module.to(device=device, dtype=torch_dtype)
    module.train(mode == "train")
    x = torch.randn(1, 3, image_size, image_size, device=device, dtype=torch_dtype)
    params = sum(p.numel() for p in module.parameters())

    def step() -> None:
        if mode == "train":
            out = fn(x)
            out = out[-1] if isinstance(out, list) else out
            out.float().mean().backward()
            module.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode():
                fn(x)

    times: list[float] = []
    with _sdpa_backend(config):
        if device == "cuda":
            for _ in range(warmup):
                step()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            for _ in range(repeats):
                t0 = time.perf_counter()
                step()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            peak = torch.cuda.max_memory_allocated() - before
        else:
            before = _rss_bytes()
            for _ in range(warmup + repeats):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
            times = times[warmup:]
    return {
        "config": config,
        "arch": arch,
        "mode": mode,
        "device": device,
        "dtype": dtype,
        "image_size": image_size,
        "params": params,
        "threads": torch.get_num_threads(),
        "peak_mem_mib": peak / 2**20,
        "time_s_min": min(times),
        "time_s_median": sorted(times)[len(times) // 2],
        "repeats": len(times),
    }


def interleaved_times(
    configs: list[str],
    device: str,
    dtype: str,
    image_size: int,
    rounds: int,
    warmup: int,
    arch: str = "vit-b",
) -> dict[str, list[float]]:
    """Time several configs in one process, alternating them round by round.

    On a shared or throttled machine the load drifts over minutes; alternating A, B, A, B exposes
    every config to the same conditions, so their ratio is fair even when absolute times are noisy.
    """
    import torch

    torch.manual_seed(0)
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    runners = {}
    for config in configs:
        fn, module = _build(config, image_size, arch)
        module.to(device=device, dtype=torch_dtype).eval()
        runners[config] = fn
    x = torch.randn(1, 3, image_size, image_size, device=device, dtype=torch_dtype)
    times: dict[str, list[float]] = {c: [] for c in configs}
    with torch.inference_mode():
        for round_ in range(warmup + rounds):
            for config, fn in runners.items():
                with _sdpa_backend(config):
                    if device == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    fn(x)
                    if device == "cuda":
                        torch.cuda.synchronize()
                    if round_ >= warmup:
                        times[config].append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ", ".join(CONFIGS)
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument(
        "--arch", default="vit-b", choices=sorted(ARCHS), help="backbone size (default vit-b)"
    )
    parser.add_argument(
        "--mode",
        default="infer",
        choices=["infer", "train"],
        help="infer: no-grad forward; train: forward + backward (activation memory, the study's comparison)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed forwards per config (min is reported)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed forwards first (default: 0 CPU, 3 CUDA)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="only time the configs, alternating them in one process (fair ratios on a loaded machine)",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else (3 if args.device == "cuda" else 0)

    if args.worker:
        result = worker(
            args.worker, args.device, args.dtype, args.image_size, args.repeats, warmup, args.mode, args.arch
        )
        print(json.dumps(result))
        return 0

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown config(s) {unknown}; expected some of {', '.join(CONFIGS)}")
    if args.interleave:
        timed = interleaved_times(
            configs, args.device, args.dtype, args.image_size, args.repeats, warmup, args.arch
        )
        first = configs[0]
        print(f"| config | min time (s) | median (s) | vs {first} |")
        print("|---|---:|---:|---:|")
        for config, ts in timed.items():
            ratio = min(ts) / min(timed[first])
            median = sorted(ts)[len(ts) // 2]
            print(f"| {config} | {min(ts):.2f} | {median:.2f} | {ratio:.3f}x |")
        if args.json:
            args.json.write_text(json.dumps(timed, indent=2) + "\n")
        return 0
    results = []
    for config in configs:
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            config,
            "--device",
            args.device,
            "--dtype",
            args.dtype,
            "--image-size",
            str(args.image_size),
            "--repeats",
            str(args.repeats),
            "--warmup",
            str(warmup),
            "--mode",
            args.mode,
            "--arch",
            args.arch,
        ]
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            print(f"{config}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"{config:20s} peak {r['peak_mem_mib']:9.1f} MiB   time {r['time_s_min']:8.3f} s", flush=True)

    by_name = {r["config"]: r for r in results}
    print()
    print(
        f"| config | peak {args.mode} memory (MiB) | time (s) | vs ours-window memory | vs ours-window time |"
    )
    print("|---|---:|---:|---:|---:|")
    base = by_name.get("ours-window")
    for r in results:
        ref = by_name.get("ours-window-math") if r["config"].endswith("-math") else base
        mem_ratio = f"{r['peak_mem_mib'] / ref['peak_mem_mib']:.2f}x" if ref else "-"
        time_ratio = f"{r['time_s_min'] / ref['time_s_min']:.2f}x" if ref else "-"
        mem, secs = f"{r['peak_mem_mib']:.0f}", f"{r['time_s_min']:.2f}"
        print(f"| {r['config']} | {mem} | {secs} | {mem_ratio} | {time_ratio} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

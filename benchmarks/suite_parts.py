"""The measurements of ``gpu_suite.py``: one function per part, each run in its own process.

A part records rows through its :class:`PartContext` (written to disk after every row, so a part
killed by the watchdog keeps what it measured), raises :class:`PartSkippedError` when a dependency is
missing, and checks ``ctx.left()`` before each sub-measurement.

Reference figures: ViTDet (Li et al. 2022, arXiv:2203.16527; detectron2 ``projects/ViTDet`` model
zoo, Mask R-CNN ViT-B, 1024 px, A100): 0.314 s/img training, 0.079 s/img inference, 10.9 GB training
memory; all-global ViT-L needs ≈3.34× the memory of window + 4 global blocks and is 2.2× slower
(ViTDet §4.1).
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

VITDET_TRAIN_S_PER_IMG = 0.314
VITDET_INFER_S_PER_IMG = 0.079
VITDET_TRAIN_MEM_GB = 10.9
VITDET_L_GLOBAL_MEM_RATIO = 3.34
VITDET_L_GLOBAL_TIME_RATIO = 2.2
#: MAE (He et al. 2021, arXiv 2111.06377, abstract): encoding the visible 25% only "accelerate[s] training
#: (by 3x or more)" against an encoder that sees every patch.
MAE_SPEEDUP = 3.0
REF_A100 = "ViTDet ViT-B Mask R-CNN, A100 (detectron2 model zoo)"


class PartSkippedError(Exception):
    """The part (or the rest of it) cannot run here; the message says why."""


@dataclass(frozen=True)
class Mode:
    """Sizes and devices of one suite mode (``gpu`` or ``cpu-smoke``)."""

    name: str
    device: str
    amp: str
    recipes: dict[str, str]  # role -> recipe name (vitdet-b, bench-b, vitdet-l)
    train_warmup: int
    train_iters: int
    max_batch: int
    infer_warmup: int
    infer_iters: int
    gemm_n: int
    compile_backend: str
    ddp_iters: int
    train_images: int = 8

    @property
    def memory_recipes(self) -> tuple[str, ...]:
        """Recipes of the window-vs-global comparison, the one with a published reference first."""
        return tuple(dict.fromkeys((self.recipes["vitdet-l"], self.recipes["vitdet-b"])))


GPU = Mode(
    name="gpu",
    device="cuda",
    amp="bf16",
    recipes={"vitdet-b": "vitdet-b", "bench-b": "bench-b", "vitdet-l": "vitdet-l", "tiny": "bench-tiny"},
    train_warmup=5,
    train_iters=15,
    max_batch=64,
    infer_warmup=5,
    infer_iters=25,
    gemm_n=8192,
    compile_backend="inductor",
    ddp_iters=20,
)

CPU_SMOKE = Mode(
    name="cpu-smoke",
    device="cpu",
    amp="none",  # bf16 autocast on a CPU without bf16 units is ~30x slower; the autocast path still runs
    recipes={
        "vitdet-b": "vitdet-tiny",
        "bench-b": "bench-tiny",
        "vitdet-l": "vitdet-tiny",
        "tiny": "bench-tiny",
    },
    train_warmup=1,
    train_iters=2,
    max_batch=2,
    infer_warmup=1,
    infer_iters=2,
    gemm_n=256,
    compile_backend="eager",
    ddp_iters=2,
    train_images=2,
)


@dataclass
class PartContext:
    """What a part needs: the mode, its deadline (``time.time()``), and the file its result goes to."""

    part: str
    mode: Mode
    deadline: float
    out_file: Path
    result: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.result = {"part": self.part, "status": "running", "rows": [], "notes": []}

    def left(self) -> float:
        """Seconds left before the part's deadline."""
        return self.deadline - time.time()

    def log(self, message: str) -> None:
        """One progress line (the suite prefixes the part's name)."""
        print(message, flush=True)

    def row(self, measurement: str, value: float | None, unit: str, **extra: Any) -> None:
        """Record one figure (``reference`` and ``reference_source`` in ``extra`` where one exists)."""
        row = {"measurement": measurement, "value": value, "unit": unit, **extra}
        self.result["rows"].append(row)
        shown = "n/a" if value is None else f"{value:.4g}"
        ref = extra.get("reference")
        self.log(f"  {measurement}: {shown} {unit}" + (f" (reference {ref:g})" if ref is not None else ""))
        self.save()

    def note(self, text: str) -> None:
        """A remark that goes under the part in the report (e.g. a sub-measurement skipped, and why)."""
        self.result["notes"].append(text)
        self.log(f"  note: {text}")
        self.save()

    def save(self) -> None:
        """Write the result so far (atomically)."""
        tmp = self.out_file.with_name(f".{self.out_file.name}.tmp")
        tmp.write_text(json.dumps(self.result, indent=2, default=str))
        os.replace(tmp, self.out_file)


# ---------------------------------------------------------------------------------------------------
# helpers


def _torch() -> Any:
    import torch

    return torch


def _need_device(ctx: PartContext) -> Any:
    torch = _torch()
    if ctx.mode.device == "cuda" and not torch.cuda.is_available():
        raise PartSkippedError(
            f"no CUDA device visible to torch {torch.__version__} (torch.cuda.is_available() is False)"
        )
    return torch.device(ctx.mode.device)


def _recipe(name: str, overrides: list[str] | None = None) -> Any:
    from vitbench.trainer.recipes import apply_overrides, get_recipe

    return apply_overrides(get_recipe(name), overrides or [])


def _free(device: Any) -> None:
    gc.collect()
    if device.type == "cuda":
        _torch().cuda.empty_cache()


def _is_oom(exc: BaseException) -> bool:
    torch = _torch()
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or "out of memory" in str(exc).lower()


def _peak_gib(device: Any) -> float | None:
    torch = _torch()
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset_peak(device: Any) -> None:
    if device.type == "cuda":
        _torch().cuda.reset_peak_memory_stats(device)


def _precision(ctx: PartContext) -> str:
    return "fp32" if ctx.mode.amp == "none" else ctx.mode.amp


def _dtype(ctx: PartContext) -> Any:
    from benchlib import AMP_DTYPES

    return AMP_DTYPES[ctx.mode.amp]


# ---------------------------------------------------------------------------------------------------
# environment


def part_env(ctx: PartContext) -> None:
    """Versions, GPUs and ONNX Runtime providers: what the rest of the suite depends on."""
    torch = _torch()
    import torchvision

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_runtime": torch.version.cuda,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if env["gpu_count"]:
        props = torch.cuda.get_device_properties(0)
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(env["gpu_count"])]
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["gpu_capability"] = f"{props.major}.{props.minor}"
        env["gpu_multiprocessors"] = props.multi_processor_count
        env["nccl_available"] = bool(
            torch.distributed.is_available() and torch.distributed.is_nccl_available()
        )
    for name in ("numpy", "pydantic", "timm", "pycocotools", "PIL", "typer", "rich", "yaml", "onnx"):
        try:
            mod = __import__(name)
            env[name] = str(getattr(mod, "__version__", "present"))
        except Exception as exc:  # ImportError, or a broken install that fails on import
            env[name] = f"missing ({type(exc).__name__}: {exc})"
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["onnxruntime_providers"] = list(ort.get_available_providers())
    except Exception as exc:
        env["onnxruntime"] = f"missing ({type(exc).__name__}: {exc})"
        env["onnxruntime_providers"] = []
    try:
        env["git_commit"] = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    env["pretrain_module"] = importlib.util.find_spec("vitbench.trainer.pretrain") is not None
    ctx.result["env"] = env
    for key, value in env.items():
        ctx.log(f"  {key}: {value}")
    ctx.save()


# ---------------------------------------------------------------------------------------------------
# 1. training step


def _train_part(ctx: PartContext, role: str) -> None:
    """Train step of the ``role`` recipe: batch 1, then the largest batch that fits (doubling, OOM caught)."""
    from benchlib import build_model, build_optimizer, median, synth_data, time_calls, train_batch, train_step

    device = _need_device(ctx)
    mode = ctx.mode
    recipe = _recipe(mode.recipes[role])
    amp = _dtype(ctx)
    ctx.log(f"  {recipe.name} at {recipe.input.image_size} px, {_precision(ctx)}, {mode.device}")
    t0 = time.time()
    data = synth_data(recipe, mode.train_images, 1)
    ctx.log(f"  {len(data.train)} LSJ samples ready in {time.time() - t0:.1f} s")
    model = build_model(recipe, len(data.class_names), device).train()
    opt = build_optimizer(model, recipe)
    params = sum(p.numel() for p in model.parameters())
    ctx.result["recipe"] = recipe.name
    ctx.result["params"] = params

    def measure(batch: int, warmup: int, iters: int) -> tuple[float, float | None]:
        images, targets = train_batch(data, batch, device)
        _reset_peak(device)
        times = time_calls(lambda: train_step(model, opt, images, targets, amp), warmup, iters, device)
        return median(times), _peak_gib(device)

    ref = VITDET_TRAIN_S_PER_IMG if mode.name == "gpu" else None
    step, peak = measure(1, mode.train_warmup, mode.train_iters)
    ctx.row(
        f"{recipe.name} train step, batch 1",
        step,
        "s/img",
        reference=ref,
        reference_source=REF_A100 + " (fp16, 1 img/GPU on 64 GPUs)",
        batch=1,
        peak_mem_gib=peak,
        iters=mode.train_iters,
    )
    if peak is not None:
        ctx.row(
            f"{recipe.name} train peak memory, batch 1",
            peak,
            "GiB",
            reference=VITDET_TRAIN_MEM_GB if mode.name == "gpu" else None,
            reference_source="ViTDet ViT-B train memory, GB (detectron2 model zoo)",
        )
    best: tuple[int, float, float | None] = (1, step, peak)
    batch, stop = 2, ""
    while batch <= mode.max_batch:
        predicted = step * batch * 5  # 2 warm-up + 3 timed steps
        if ctx.left() < predicted + 10:
            stop = f"stopped before batch {batch}: {ctx.left():.0f} s left, about {predicted:.0f} s needed"
            break
        ctx.log(f"  trying batch {batch}")
        try:
            t, p = measure(batch, 2, 3)
        except Exception as exc:
            if not _is_oom(exc):
                raise
            stop = f"batch {batch} ran out of GPU memory"
            opt.zero_grad(set_to_none=True)
            _free(device)
            break
        best = (batch, t, p)
        batch *= 2
    else:
        stop = f"search capped at batch {mode.max_batch} (--max-batch)"
    b, t, p = best
    ctx.row(
        f"{recipe.name} train step, largest batch ({b})",
        t / b,
        "s/img",
        reference=ref,
        reference_source=REF_A100 + " (1 img/GPU)",
        batch=b,
        step_s=t,
        images_per_s=b / t,
        peak_mem_gib=p,
        search=stop,
    )
    ctx.note(f"batch search: largest batch that ran was {b}; {stop}")


def part_train_vitdet(ctx: PartContext) -> None:
    """1a. ``vitdet-b`` training step."""
    _train_part(ctx, "vitdet-b")


def part_train_bench(ctx: PartContext) -> None:
    """1b. ``bench-b`` (the study's architecture) training step."""
    _train_part(ctx, "bench-b")


PRETRAIN_MODULE = "vitbench.trainer.pretrain"


#: Entry points tried, in order: ``builder(recipe) -> nn.Module`` whose ``forward(images)`` returns the
#: loss (a tensor, or a dict / tuple whose first entry is the loss). Wire a new name in here.
def part_train_mae(ctx: PartContext) -> None:
    """1c. MAE pre-training step (He et al. 2021, arXiv 2111.06377): ViT-B/16 at 224 px with 75% of the
    patches masked (the ``mae-b`` recipe; ``mae-tiny`` in the CPU smoke), images/s."""
    if importlib.util.find_spec(PRETRAIN_MODULE) is None:
        raise PartSkippedError(f"no pre-training module in this checkout ({PRETRAIN_MODULE} does not exist)")
    from benchlib import median, time_calls

    from vitbench.trainer.pretrain.recipes import get_pretrain_recipe
    from vitbench.trainer.pretrain.task import build_pretrain_model

    torch = _torch()
    device = _need_device(ctx)
    recipe = get_pretrain_recipe("mae", "b" if ctx.mode.name == "gpu" else "tiny")
    torch.manual_seed(0)
    model = build_pretrain_model(recipe).to(device).train()
    s = recipe.solver
    opt = torch.optim.AdamW(model.parameters(), lr=1.5e-4, betas=(0.9, 0.95), weight_decay=s.weight_decay)
    size = recipe.encoder.img_size
    amp = _dtype(ctx)
    batch = 64 if ctx.mode.name == "gpu" else 2
    x = torch.randn(batch, 3, size, size, device=device)  # normalized images

    def step() -> None:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = model(x)  # scalar: normalized-pixel MSE on the masked patches
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = median(time_calls(step, ctx.mode.train_warmup, ctx.mode.train_iters, device))
    ctx.row(
        f"MAE pre-training step ({recipe.name}, {size} px, batch {batch}, mask {recipe.mae.mask_ratio:g})",
        batch / t,
        "img/s",
        step_s=t,
    )
    # The same step with the encoder on (almost) every patch: 1% masked keeps the loss defined and costs
    # what the paper's "encoder w/ mask tokens" baseline costs; the decoder's work is unchanged.
    model.mask_ratio = 0.01
    t_full = median(time_calls(step, ctx.mode.train_warmup, ctx.mode.train_iters, device))
    ctx.row(
        f"MAE step time, encoder on 99% ÷ on {1 - recipe.mae.mask_ratio:.0%} of the patches",
        t_full / t,
        "×",
        reference=MAE_SPEEDUP if ctx.mode.name == "gpu" else None,
        reference_source="MAE abstract: training accelerated by 3x or more",
        step_s_full=t_full,
    )


# ---------------------------------------------------------------------------------------------------
# 2. inference (eager; torch.compile in its own part, last)


def _infer_setup(ctx: PartContext) -> tuple[Any, Any, Any, Any]:
    from benchlib import build_model, synth_data

    device = _need_device(ctx)
    recipe = _recipe(ctx.mode.recipes["vitdet-b"])
    data = synth_data(recipe, 1, 4)
    model = build_model(recipe, len(data.class_names), device).eval()
    return device, recipe, data, model


def _infer_time(ctx: PartContext, model: Any, data: Any, device: Any, warmup: int) -> float:
    from benchlib import infer_seconds, val_image

    images = [val_image(data, i, device) for i in range(len(data.val))]
    return infer_seconds(model, images, _dtype(ctx), device, warmup, ctx.mode.infer_iters)


def part_infer(ctx: PartContext) -> None:
    """2. ``vitdet-b`` inference at 1024 px, bf16, eager, batch 1 (the detector resizes and pads)."""
    device, recipe, data, model = _infer_setup(ctx)
    t = _infer_time(ctx, model, data, device, ctx.mode.infer_warmup)
    ctx.row(
        f"{recipe.name} inference, eager {_precision(ctx)}, batch 1",
        t,
        "s/img",
        reference=VITDET_INFER_S_PER_IMG if ctx.mode.name == "gpu" else None,
        reference_source=REF_A100 + " inference",
        iters=ctx.mode.infer_iters,
    )


def part_compile(ctx: PartContext) -> None:
    """2b. The same inference with the backbone (ViT + neck) under ``torch.compile``; eager re-measured
    in the same process for the ratio."""
    torch = _torch()
    if not hasattr(torch, "compile"):
        raise PartSkippedError(f"torch {torch.__version__} has no torch.compile")
    device, recipe, data, model = _infer_setup(ctx)
    eager = _infer_time(ctx, model, data, device, ctx.mode.infer_warmup)
    backend = ctx.mode.compile_backend
    model.backbone = torch.compile(model.backbone, backend=backend, dynamic=False)
    t0 = time.time()
    try:
        compiled = _infer_time(ctx, model, data, device, 1)  # the first call compiles
    except Exception as exc:
        ctx.result["error"] = traceback.format_exc()[-3000:]
        raise PartSkippedError(
            f"torch.compile (backend {backend}) failed on torch {torch.__version__}: "
            f"{type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    ctx.note(f"backend {backend}; compile + {ctx.mode.infer_iters + 1} runs took {time.time() - t0:.1f} s")
    ctx.row(
        f"{recipe.name} inference, torch.compile({backend}) backbone, {_precision(ctx)}, batch 1",
        compiled,
        "s/img",
        reference=VITDET_INFER_S_PER_IMG if ctx.mode.name == "gpu" else None,
        reference_source=REF_A100 + " inference",
        eager_s_per_img=eager,
        speedup_vs_eager=eager / compiled,
    )


# ---------------------------------------------------------------------------------------------------
# 3. memory and time, window vs global


def part_memory(ctx: PartContext) -> None:
    """3. Training step at 1024 px, batch 1: the study's layout (window 14 + 4 global blocks) vs global
    attention in every block, with fused SDPA kernels and with the math backend (materialized attention,
    as in 2021-22). Peak ``torch.cuda.max_memory_allocated`` of the step (model, gradients and AdamW
    state included, as detectron2 reports it) and the bytes autograd saves for backward."""
    from benchlib import (
        build_model,
        build_optimizer,
        count_saved_activations,
        median,
        sdpa_backend,
        synth_data,
        time_calls,
        train_batch,
        train_step,
    )

    torch = _torch()
    device = _need_device(ctx)
    amp = _dtype(ctx)
    data = None
    measured: dict[tuple[str, str, bool], dict[str, Any]] = {}
    for name in ctx.mode.memory_recipes:
        base = _recipe(name)
        depth = base.backbone.depth
        layouts = {
            "study": [],
            "global": [
                "backbone.window_size=0",
                "backbone.global_blocks=" + ",".join(map(str, range(depth))),
            ],
        }
        if data is None:
            data = synth_data(base, 2, 1)
        images, targets = train_batch(data, 1, device)
        for math in (False, True):
            for layout, overrides in layouts.items():
                label = f"{name} {layout}{' math-SDPA' if math else ''}"
                need = 40 if "l" in name.split("-")[-1] else 20
                if ctx.mode.name == "gpu" and ctx.left() < need:
                    ctx.note(f"{label}: skipped, {ctx.left():.0f} s left of the part's budget")
                    continue
                recipe = _recipe(name, overrides)
                _free(device)
                try:
                    model = build_model(recipe, len(data.class_names), device).train()
                    opt = build_optimizer(model, recipe)
                    with sdpa_backend(math):
                        train_step(model, opt, images, targets, amp)  # allocates AdamW state
                        _reset_peak(device)
                        times = time_calls(
                            lambda m=model, o=opt, i=images, t=targets: train_step(m, o, i, t, amp),
                            0,
                            max(2, ctx.mode.train_iters // 5),
                            device,
                        )
                        peak = _peak_gib(device)
                        autocast = torch.autocast(
                            device.type, dtype=amp or torch.float32, enabled=amp is not None
                        )
                        with count_saved_activations() as saved, autocast:
                            loss = sum(model(images, targets).values())
                        loss.backward()
                        opt.zero_grad(set_to_none=True)
                except Exception as exc:
                    if not _is_oom(exc):
                        raise
                    ctx.note(f"{label}: out of GPU memory")
                    model = opt = None
                    _free(device)
                    continue
                rec = {"step_s": median(times), "peak_gib": peak, "saved_gib": saved["bytes"] / 2**30}
                measured[(name, layout, math)] = rec
                ctx.row(
                    f"{label} train step",
                    rec["step_s"],
                    "s",
                    peak_mem_gib=peak,
                    saved_act_gib=rec["saved_gib"],
                )
                del model, opt
                _free(device)
            study, glob = measured.get((name, "study", math)), measured.get((name, "global", math))
            if study and glob:
                attn = "math SDPA (materialized)" if math else "fused SDPA"
                is_l = name == ctx.mode.recipes["vitdet-l"] and ctx.mode.name == "gpu"
                src = "ViTDet §4.1, ViT-L all-global vs 4 global (materialized attention)"
                if study["peak_gib"] is not None:
                    ctx.row(
                        f"{name} global ÷ study peak memory, {attn}",
                        glob["peak_gib"] / study["peak_gib"],
                        "×",
                        reference=VITDET_L_GLOBAL_MEM_RATIO if is_l else None,
                        reference_source=src,
                    )
                ctx.row(
                    f"{name} global ÷ study saved activations, {attn}",
                    glob["saved_gib"] / study["saved_gib"],
                    "×",
                )
                ctx.row(
                    f"{name} global ÷ study step time, {attn}",
                    glob["step_s"] / study["step_s"],
                    "×",
                    reference=VITDET_L_GLOBAL_TIME_RATIO if is_l else None,
                    reference_source=src,
                )


# ---------------------------------------------------------------------------------------------------
# 4. utilization


def part_util(ctx: PartContext) -> None:
    """4. Measured GEMM rate, FLOPs per step (torch's FlopCounterMode, math SDPA so attention products
    are counted; cross-checked analytically), achieved TFLOP/s and its fraction of the GEMM rate."""
    from benchlib import (
        build_model,
        build_optimizer,
        median,
        sdpa_backend,
        synth_data,
        time_calls,
        train_batch,
        train_step,
        vit_flops,
    )
    from torch.utils.flop_counter import FlopCounterMode

    torch = _torch()
    device = _need_device(ctx)
    amp = _dtype(ctx)
    dtype = amp or torch.float32
    n = ctx.mode.gemm_n
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    t_gemm = median(time_calls(lambda a=a, b=b: torch.matmul(a, b), 3, 20, device))
    gemm = 2 * n**3 / t_gemm / 1e12
    ctx.row(
        f"{str(dtype).removeprefix('torch.')} GEMM {n}×{n}×{n} (torch.matmul, random data)", gemm, "TFLOP/s"
    )
    del a, b

    recipe = _recipe(ctx.mode.recipes["vitdet-b"])
    data = synth_data(recipe, 2, 1)
    model = build_model(recipe, len(data.class_names), device).train()
    opt = build_optimizer(model, recipe)
    size = recipe.input.image_size
    x = torch.randn(1, 3, size, size, device=device)

    def backbone_step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=amp is not None):
            feats = model.backbone(x)
        sum(f.float().mean() for f in feats.values()).backward()

    with sdpa_backend(True), FlopCounterMode(display=False) as counter:
        backbone_step()
    bb_flops = counter.get_total_flops()
    autocast = torch.autocast(device.type, dtype=dtype, enabled=amp is not None)
    with sdpa_backend(True), FlopCounterMode(display=False) as counter, autocast:
        model.backbone.net(x)
    vit_fwd = counter.get_total_flops()
    analytic = vit_flops(recipe.backbone, size)
    ctx.row(
        f"{recipe.name} ViT forward FLOPs, counted ÷ analytic",
        vit_fwd / analytic,
        "×",
        counted_gflop=vit_fwd / 1e9,
        analytic_gflop=analytic / 1e9,
    )
    model.zero_grad(set_to_none=True)
    t_bb = median(time_calls(backbone_step, 3, max(3, ctx.mode.train_iters), device))
    model.zero_grad(set_to_none=True)
    achieved = bb_flops / t_bb / 1e12
    ctx.row(
        f"{recipe.name} backbone (ViT + pyramid) fwd+bwd, batch 1: achieved",
        achieved,
        "TFLOP/s",
        reference=gemm,
        reference_source="GEMM rate measured above",
        fraction_of_gemm=achieved / gemm,
        gflop_per_step=bb_flops / 1e9,
        step_s=t_bb,
    )
    images, targets = train_batch(data, 1, device)
    with sdpa_backend(True), FlopCounterMode(display=False) as counter:
        train_step(model, opt, images, targets, amp)
    det_flops = counter.get_total_flops()
    t_det = median(
        time_calls(
            lambda: train_step(model, opt, images, targets, amp), 3, max(3, ctx.mode.train_iters), device
        )
    )
    achieved = det_flops / t_det / 1e12
    ctx.row(
        f"{recipe.name} whole train step, batch 1: achieved",
        achieved,
        "TFLOP/s",
        reference=gemm,
        reference_source="GEMM rate measured above",
        fraction_of_gemm=achieved / gemm,
        gflop_per_step=det_flops / 1e9,
        step_s=t_det,
        note="FLOPs of matmul/conv/attention ops only (RoIAlign, NMS, norms not counted)",
    )


# ---------------------------------------------------------------------------------------------------
# 5. ONNX Runtime CUDA / TensorRT


def part_onnx(ctx: PartContext) -> None:
    """5. Export ``vitdet-b`` (trainer.export), parity against eager and latency on each runtime present."""
    _need_device(ctx)
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise PartSkippedError(f"onnxruntime is not importable ({exc})") from None
    available = ort.get_available_providers()
    if ctx.mode.name == "gpu":
        runtimes = [
            r
            for r, p in (("ort-cuda", "CUDAExecutionProvider"), ("trt", "TensorrtExecutionProvider"))
            if p in available
        ]
        if not runtimes:
            raise PartSkippedError(
                f"onnxruntime {ort.__version__} has neither CUDAExecutionProvider nor "
                f"TensorrtExecutionProvider (available: {', '.join(available)}); onnxruntime-gpu with "
                "TensorRT is too large to carry as wheels"
            )
        if "trt" not in runtimes:
            ctx.note(f"TensorRT skipped: onnxruntime {ort.__version__} lacks TensorrtExecutionProvider")
    else:
        runtimes = ["ort-cpu"]
    from export_latency import run_benchmark

    recipe = ctx.mode.recipes["vitdet-b"]
    result = run_benchmark(
        recipe,
        device=ctx.mode.device,
        runtimes=runtimes,
        warmup=2,
        repeats=20 if ctx.mode.name == "gpu" else 3,
        parity_count=2 if ctx.mode.name == "gpu" else 1,
        log=ctx.log,
    )
    ctx.result["export"] = result
    eager = result["latency_ms"].get(f"pytorch_eager_{ctx.mode.device}")
    for key, ms in result["latency_ms"].items():
        ctx.row(f"{recipe} {key} latency, batch 1", ms, "ms", ratio_to_eager=(ms / eager) if eager else None)
    for runtime, report in result.get("parity", {}).items():
        ctx.row(
            f"{recipe} parity {runtime}: images passed",
            report["passed_images"],
            f"of {report['images']}",
            passed=report["passed"],
            min_box_iou=report["min_box_iou"],
            max_score_diff=report["max_score_diff"],
        )


# ---------------------------------------------------------------------------------------------------
# 7. the service's batching gain

#: what ``vitbench serve`` imports beyond the suite's own needs (module names)
SERVICE_MODULES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic_settings",
    "multipart",
    "simplejpeg",
    "prometheus_client",
    "httpx",
    "matplotlib",  # the photograph (its sample image)
)


def part_serve(ctx: PartContext) -> None:
    """7. ``vitbench serve`` with dynamic batching (max batch 8) and without (max batch 1), the same
    exported model and providers, C clients posting a 1920×1080 photograph (no masks) for D seconds
    each; and the bare session at batch 1 and batch 8: the batching gain the model offers and the
    share of it the service delivers. GPU: vitdet-b (1024 px) on the CUDA provider, 8 clients."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise PartSkippedError(f"onnxruntime is not importable ({exc})") from None
    missing = [m for m in SERVICE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise PartSkippedError(
            f"the service's dependencies are missing: {', '.join(missing)} (carry them as wheels)"
        )
    available = ort.get_available_providers()
    gpu = ctx.mode.name == "gpu"
    if gpu and "CUDAExecutionProvider" not in available:
        raise PartSkippedError(
            f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (available: {', '.join(available)})"
        )
    providers = "CUDAExecutionProvider" if gpu else "CPUExecutionProvider"
    clients, seconds, big_batch = (8, 15.0, 8) if gpu else (2, 2.0, 2)
    recipe = ctx.mode.recipes["vitdet-b"]
    if gpu:
        ctx.note(
            "TensorRT not run here: its engine build for a dynamic-batch vitdet-b can outlast the part; "
            "run benchmarks/service_throughput.py --providers TensorrtExecutionProvider,CUDAExecutionProvider"
        )
    import asyncio

    import numpy as np
    from load_test import export_seeded, free_port, percentile, start_server, stop_servers
    from service_throughput import Bare, batch_stats, drive, photograph

    from vitbench.service.masks import NATIVE_RLE
    from vitbench.service.preprocess import NATIVE_PREPROCESS
    from vitbench.service.settings import ServiceSettings

    ctx.result["native"] = {"rle": NATIVE_RLE, "preprocess": NATIVE_PREPROCESS}
    if not (NATIVE_RLE and NATIVE_PREPROCESS):
        ctx.note("the service's C extensions are not built here: its numpy fallbacks ran")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        classes = [f"class{i}" for i in range(1, 81)]
        model_dir = export_seeded(Path(tmp), recipe, classes, f"{recipe}-seed0")
        ctx.log(f"  exported {recipe} (seeded random weights, 80 classes) in {time.time() - t0:.1f} s")
        image = photograph(1920, 1080)
        defaults = ServiceSettings()
        bare = Bare(model_dir, [providers], 0, defaults.jpeg_draft_factor, False)
        if bare.backend.active_providers[0] != providers:
            raise RuntimeError(f"the bare session runs on {bare.backend.active_providers}, not {providers}")
        single = bare.prepare(image)  # [1, 3, S, S]
        stacked = [single] * big_batch

        def rate(backend: Any, batch: list[np.ndarray], span: float) -> float:
            """Images/s of ``batch`` run back to back for ``span`` seconds on ``backend``."""
            backend.run_batch(batch)  # warm
            runs, started = 0, time.perf_counter()
            while time.perf_counter() - started < span or runs < 3:
                backend.run_batch(batch)
                runs += 1
            return runs * len(batch) / (time.perf_counter() - started)

        bare_one = rate(bare.backend, [single], seconds / 3)
        bare_big = rate(bare.backend, stacked, seconds / 3)
        del bare  # the server loads its own copy
        ctx.row(f"{recipe} bare session, batch 1, {providers}", bare_one, "img/s")
        ctx.row(
            f"{recipe} bare session, batch {big_batch}",
            bare_big,
            "img/s",
            batch=big_batch,
            speedup_vs_batch1=bare_big / bare_one,
        )
        served: dict[int, float] = {}
        for max_batch in (1, big_batch):
            if ctx.left() < seconds + 60:
                ctx.note(f"service with max batch {max_batch} not run: {ctx.left():.0f} s left")
                break
            env = {
                "VITBENCH_PROVIDERS": providers,
                "VITBENCH_MAX_BATCH_SIZE": str(max_batch),
                "VITBENCH_QUEUE_SIZE": "64",
                "VITBENCH_REQUEST_TIMEOUT_S": "120",
            }
            port = free_port()
            proc = start_server(model_dir, port, env)
            base = f"http://127.0.0.1:{port}"
            try:
                asyncio.run(drive(base, image, clients, min(3.0, seconds / 2), "none"))  # warm the path
                before = batch_stats(base)
                latencies, statuses, timings, wall = asyncio.run(drive(base, image, clients, seconds, "none"))
                after = batch_stats(base)
            finally:
                stop_servers(proc)
            errors = sum(n for status, n in statuses.items() if status != "200")
            served[max_batch] = len(latencies) / wall
            batches = after[0] - before[0]
            ctx.row(
                f"{recipe} service, {clients} clients, 1920×1080, max batch {max_batch}",
                served[max_batch],
                "img/s",
                batch=max_batch,
                mean_batch=round((after[1] - before[1]) / batches, 2) if batches else None,
                p50_ms=percentile(latencies, 50),
                p99_ms=percentile(latencies, 99),
                inference_p50_ms=percentile([t.get("inference", 0.0) for t in timings], 50),
                queue_p50_ms=percentile([t.get("queue", 0.0) for t in timings], 50),
                errors=errors,
                service_to_bare_batch=served[max_batch] / (bare_big if max_batch > 1 else bare_one),
            )
            if errors:
                raise RuntimeError(f"the service answered {errors} errors: {dict(statuses)}")
        if len(served) == 2:
            ctx.row(
                f"{recipe} service batching gain, {clients} clients (max batch {big_batch} ÷ 1)",
                served[big_batch] / served[1],
                "×",
                bare_gain=bare_big / bare_one,
            )


# ---------------------------------------------------------------------------------------------------
# 6. DDP smoke through the real entry point


def part_ddp(ctx: PartContext) -> None:
    """6. ``torchrun --standalone --nproc-per-node N -m vitbench.cli.main train`` on ``vitbench data synth``
    data, a few steps of the tiny preset (NCCL on GPUs, gloo in the CPU smoke)."""
    torch = _torch()
    if ctx.mode.name == "gpu":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count < 2:
            raise PartSkippedError(f"DDP needs at least 2 GPUs; {count} visible")
        nproc, device = count, "cuda"
    else:
        nproc, device = 2, "cpu"
    recipe = ctx.mode.recipes["tiny"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    env.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "data", Path(tmp) / "run"
        cli = [sys.executable, "-m", "vitbench.cli.main"]
        synth = [*cli, "data", "synth", "--out", str(data), "--images", str(max(8, 4 * nproc)), "--seed", "0"]
        subprocess.run(synth, check=True, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "-m", "vitbench.cli.main", "train", "--recipe", recipe, "--init", "random",
            "--data", str(data), "--out", str(out), "--device", device, "--no-register", "--no-progress",
            "--set", f"solver.max_iters={ctx.mode.ddp_iters}", "--set", "solver.eval_period=0",
            "--set", f"solver.checkpoint_period={ctx.mode.ddp_iters}", "--set", "solver.warmup_iters=1",
            "--set", "solver.batch_size=" + str(2 * nproc), "--set", "data.num_workers=0",
        ]  # fmt: skip
        ctx.result["command"] = " ".join(cmd)
        ctx.log(f"  {' '.join(cmd[2:])}")
        t0 = time.time()
        timeout = max(10.0, ctx.left() - 5)
        try:
            proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            ctx.result["error"] = (
                str(exc.stdout or "")[-2000:] + "\n" + str(exc.stderr or "")[-4000:]
            ).strip()
            raise RuntimeError(f"torchrun did not finish within the part's {timeout:.0f} s") from None
        wall = time.time() - t0
        if proc.returncode != 0:
            ctx.result["error"] = (proc.stdout[-2000:] + "\n" + proc.stderr[-4000:]).strip()
            raise RuntimeError(f"torchrun exited {proc.returncode}; the tail of its output is in 'error'")
        final = out / "model_final.pth"
        speed = [
            r["images_per_s"]
            for r in map(json.loads, _lines(out / "metrics.jsonl"))
            if isinstance(r, dict) and "images_per_s" in r
        ]
        ctx.row(
            f"DDP smoke: {recipe}, {nproc} ranks ({'NCCL' if device == 'cuda' else 'gloo'}), "
            f"{ctx.mode.ddp_iters} steps + final eval",
            wall,
            "s wall",
            ranks=nproc,
            exit_code=proc.returncode,
            final_checkpoint=final.exists(),
            images_per_s=speed[-1] if speed else None,
        )
        if not final.exists():
            raise RuntimeError(f"torchrun exited 0 but {final.name} is missing in the run folder")


def _lines(path: Path) -> list[str]:
    """Non-empty lines of a text file, none when it does not exist."""
    return [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


PARTS: dict[str, Callable[[PartContext], None]] = {
    "env": part_env,
    "train-vitdet-b": part_train_vitdet,
    "train-bench-b": part_train_bench,
    "train-mae": part_train_mae,
    "infer": part_infer,
    "memory": part_memory,
    "util": part_util,
    "onnx": part_onnx,
    "serve": part_serve,
    "ddp": part_ddp,
    "compile": part_compile,
}


def run_part(name: str, mode: Mode, deadline: float, out_file: Path) -> int:
    """Run one part in this process; the result (rows, status, reason or error) lands in ``out_file``."""
    if mode.device == "cpu":
        _torch().set_num_threads(1)  # tiny models: one thread is faster than two on a shared 2-core box
    ctx = PartContext(name, mode, deadline, out_file)
    ctx.result["mode"] = asdict(mode)["name"]
    t0 = time.time()
    try:
        PARTS[name](ctx)
        ctx.result["status"] = "measured"
    except PartSkippedError as exc:
        ctx.result["status"] = "skipped"
        ctx.result["reason"] = str(exc)
        ctx.log(f"  skipped: {exc}")
    except Exception as exc:
        ctx.result["status"] = "failed"
        ctx.result["reason"] = f"{type(exc).__name__}: {str(exc)[:500]}"
        ctx.result.setdefault("error", traceback.format_exc()[-4000:])
        ctx.log(f"  FAILED: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    ctx.result["wall_s"] = round(time.time() - t0, 2)
    ctx.save()
    return 0

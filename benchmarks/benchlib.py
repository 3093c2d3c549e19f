"""Helpers shared by the benchmark scripts: timing, synthetic batches through the real data path, one
training step of a recipe's detector, SDPA backend selection, activation and FLOP accounting.

The scripts import this module by name (``import benchlib``): running ``python benchmarks/X.py`` puts
``benchmarks/`` first on ``sys.path``. Only the library's stable entry points are used
(:func:`vitbench.trainer.recipes.get_recipe` / ``apply_overrides``, ``build_detector``,
``build_optimizer``, the data modules), never the training engine's internals.
"""

from __future__ import annotations

import contextlib
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from vitbench.trainer.recipes import BackboneConfig

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync(device: torch.device | str) -> None:
    """Wait for queued CUDA work (no-op on CPU), so that a host clock read after it is meaningful."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    fn: Callable[[], Any], warmup: int, repeats: int, device: torch.device | str = "cpu"
) -> list[float]:
    """Wall seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones (CUDA-synced)."""
    for _ in range(warmup):
        fn()
    sync(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        samples.append(time.perf_counter() - start)
    return samples


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return float(statistics.median(values))


@contextlib.contextmanager
def sdpa_backend(math: bool) -> Iterator[None]:
    """Force PyTorch's math SDPA backend (materializes every attention matrix, as 2021-era code did) when
    ``math``; otherwise leave the default choice (fused flash / memory-efficient kernels)."""
    if not math:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


@dataclass
class SynthData:
    """Pre-processed samples of a synthetic COCO-format dataset, ready to be batched.

    ``train``: LSJ-augmented ``(uint8 (3, S, S) image, target)`` pairs (the recipe's training transform);
    ``val``: raw uint8 ``(3, H, W)`` images (the detector resizes them itself at inference).
    """

    train: list[tuple[torch.Tensor, dict[str, Any]]]
    val: list[torch.Tensor]
    class_names: list[str]


def synth_data(recipe: Any, n_train: int, n_val: int, seed: int = 0) -> SynthData:
    """Generate ``n_train + n_val`` synthetic images sized for ``recipe`` and run them through the real
    data path (``generate_dataset`` → ``CocoDetection`` → LSJ); ``n_train`` LSJ samples are drawn with the
    training sampler's per-sample seeds."""
    from vitbench.trainer.data import split_paths
    from vitbench.trainer.data.coco import CocoDetection, TrainingSampler
    from vitbench.trainer.data.synth import SynthConfig, generate_dataset
    from vitbench.trainer.data.transforms import build_train_transform

    size = recipe.input.image_size
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = SynthConfig(
            min_image_size=size * 3 // 4,
            max_image_size=size,
            min_object_size=size // 8,
            max_object_size=size // 3,
        )
        n_images = n_train + n_val
        generate_dataset(root, n_images, seed=seed, cfg=cfg, val_fraction=n_val / n_images)
        train_ds = CocoDetection(
            *split_paths(root, "train"),
            transforms=build_train_transform(size, recipe.data.train_scale_range, recipe.input.pixel_mean),
            train=True,
        )
        val_ds = CocoDetection(*split_paths(root, "val"), transforms=None, train=False)
        sampler = iter(TrainingSampler(len(train_ds), seed=seed))
        train = [train_ds[next(sampler)] for _ in range(n_train)]
        val = [val_ds[i][0] for i in range(len(val_ds))]
        return SynthData(train=train, val=val, class_names=list(train_ds.class_names))


def train_batch(
    data: SynthData, batch_size: int, device: torch.device | str, offset: int = 0
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """``batch_size`` training samples (cycling through ``data.train`` from ``offset``) as model inputs."""
    from vitbench.trainer.data.coco import collate, to_model_inputs

    n = len(data.train)
    images, targets = to_model_inputs(
        *collate([data.train[(offset + i) % n] for i in range(batch_size)]), torch.device(device)
    )
    assert targets is not None
    return images, targets


def val_image(data: SynthData, index: int, device: torch.device | str) -> torch.Tensor:
    """One validation image as a float ``(3, H, W)`` tensor in [0, 1] on ``device``."""
    from vitbench.trainer.data.coco import to_model_inputs

    return to_model_inputs([data.val[index % len(data.val)]], None, torch.device(device))[0][0]


def build_model(recipe: Any, num_classes: int, device: torch.device | str) -> nn.Module:
    """The recipe's Mask R-CNN with seeded random weights, built directly on ``device`` (fast on a GPU)."""
    from vitbench.trainer.models.detector import build_detector

    torch.manual_seed(recipe.seed)
    with torch.device(device):
        model = build_detector(recipe, num_classes)
    return model.to(device)


def build_optimizer(model: nn.Module, recipe: Any) -> torch.optim.Optimizer:
    """The recipe's AdamW (weight-decay rules, layer decay) through the library's builder."""
    from vitbench.trainer.engine.optim import build_optimizer as _build

    s = recipe.solver
    return _build(model, s.lr, s.weight_decay, layer_decay=s.layer_decay, depth=recipe.backbone.depth)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: list[torch.Tensor],
    targets: list[dict[str, torch.Tensor]],
    amp: torch.dtype | None,
    scaler: torch.amp.GradScaler | None = None,
) -> float:
    """One training step (forward of the summed losses under autocast, backward, optimizer step); returns
    the loss. ``scaler`` is needed for fp16 only."""
    device_type = images[0].device.type
    with torch.autocast(device_type, dtype=amp or torch.float32, enabled=amp is not None):
        loss = sum(model(images, targets).values())
    optimizer.zero_grad(set_to_none=True)
    assert isinstance(loss, torch.Tensor)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def infer_seconds(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    amp: torch.dtype | None,
    device: torch.device,
    warmup: int,
    repeats: int,
) -> float:
    """Median wall seconds of one eager inference of the detector (eval mode, no grad, autocast to ``amp``)
    on a single image, cycling through ``images``."""
    counter = itertools.count()

    def run() -> None:
        with (
            torch.no_grad(),
            torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None),
        ):
            model([images[next(counter) % len(images)]])

    return median(time_calls(run, warmup, repeats, device))


@contextlib.contextmanager
def count_saved_activations() -> Iterator[dict[str, int]]:
    """Count the bytes autograd saves for backward inside the block (each storage once).

    This is the activation memory of a training step, independent of the device and the allocator;
    yields a dict whose ``bytes`` entry is filled in as tensors are saved.
    """
    seen: set[tuple[str, int]] = set()
    tally = {"bytes": 0}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = (str(t.device), storage.data_ptr())
        if key not in seen and storage.data_ptr() != 0:
            seen.add(key)
            tally["bytes"] += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield tally


def vit_flops(backbone: BackboneConfig, image_size: int) -> int:
    """Analytic forward FLOPs (2 per multiply-add) of a recipe's plain ViT (``backbone``: ``patch_size``,
    ``embed_dim``, ``depth``, ``mlp_ratio``, ``window_size``, ``global_blocks``) at ``image_size`` px,
    batch 1.

    ``N`` tokens of width ``C``; per block: the MLP (``4·mlp_ratio·N·C²``), the qkv + proj linears
    (``8·n·C²``) and the two attention products (``4·n·g·C``, ``g`` tokens per attention group), where
    a global block has ``n = g = N`` and a windowed block runs its attention (qkv and proj included) on
    the grid zero-padded to a multiple of ``w`` (``n`` padded tokens, ``g = w²``), as ViTDet does.
    Plus the patch embedding. Norms, softmax, GELU and relative-position terms are not counted (well
    under 1% at 1024 px).
    """
    patch_size, window_size = backbone.patch_size, backbone.window_size
    grid = image_size // patch_size
    N = grid * grid
    C = backbone.embed_dim
    flops = 2 * N * (3 * patch_size * patch_size) * C
    for i in range(backbone.depth):
        flops += int(4 * backbone.mlp_ratio * N * C * C)
        if window_size > 0 and i not in backbone.global_blocks:
            padded = -(-grid // window_size) * window_size
            n, g = padded * padded, window_size * window_size  # (nW * w², w²)
        else:
            n, g = N, N
        flops += 8 * n * C * C + 4 * n * g * C
    return flops

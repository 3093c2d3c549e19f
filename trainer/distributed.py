"""Process-group helpers for single-process and torchrun (DDP) training on CPU (gloo) or GPU (nccl).

The CLI reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and passes a
:class:`DistInfo`; nothing here reads configuration. With one process every helper is a cheap no-op.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: global ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DistInfo:
        """Parse torchrun's variables from ``env`` (a mapping such as ``os.environ``)."""
        try:
            return cls(
                rank=int(env.get("RANK", "0")),
                world_size=int(env.get("WORLD_SIZE", "1")),
                local_rank=int(env.get("LOCAL_RANK", "0")),
            )
        except ValueError as exc:
            raise ValueError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers: {exc}") from None


DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")


class DeviceError(ValueError):
    """A ``--device`` value that is malformed or names a GPU this machine does not have."""


def check_device(requested: str) -> str:
    """Validate a device request (``auto``, ``cpu``, ``cuda``, ``cuda:N``) against this machine; return it.

    Raises :class:`DeviceError` naming the value and what is accepted, or saying that no GPU is present.
    """
    value = requested.strip().lower()
    if not _DEVICE_RE.fullmatch(value):
        raise DeviceError(f"device {requested!r} is not one of {DEVICE_CHOICES}")
    if value.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {requested!r} needs a CUDA GPU, but none is present on this machine; "
                "use --device cpu (or auto)"
            )
        index = int(value.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {requested!r}: this machine has {torch.cuda.device_count()} GPU(s) (cuda:0.."
                f"cuda:{torch.cuda.device_count() - 1})"
            )
    return value


def select_device(info: DistInfo, requested: str = "auto") -> torch.device:
    """The device of this process: CPU for ``cpu`` (or ``auto`` without CUDA), else a GPU.

    ``auto``/``cuda`` take ``cuda:<local_rank>`` (one GPU per torchrun process); ``cuda:N`` takes GPU N.
    Raises :class:`DeviceError` for a malformed request or a GPU that is not there.
    """
    value = check_device(requested)
    if value == "cpu" or (value == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    index = int(value.partition(":")[2]) if ":" in value else info.local_rank
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def init_process_group(info: DistInfo, device: torch.device, timeout_s: float = 1800.0) -> None:
    """Join the job's process group (``env://`` rendezvous set up by torchrun); no-op for one process."""
    if not info.distributed or (dist.is_available() and dist.is_initialized()):
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=info.rank,
        world_size=info.world_size,
        timeout=timedelta(seconds=timeout_s),
    )


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def destroy_process_group() -> None:
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order (``[obj]`` with one process)."""
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_initialized():
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def any_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank (used to stop all ranks on SIGTERM)."""
    if not is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_dict(values: Mapping[str, float], device: torch.device) -> dict[str, float]:
    """Average a dict of scalars across ranks (same keys on every rank)."""
    if not is_initialized() or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], device=device, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}

"""What a converter returns; shared by :mod:`.converters` and :mod:`.d2_heads` (neither imports the other)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor

Shapes = Mapping[str, tuple[int, ...]]


@dataclass
class Converted:
    """Result of a conversion: tensors by destination key plus what was resized and why."""

    tensors: dict[str, Tensor] = field(default_factory=dict)
    resized: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

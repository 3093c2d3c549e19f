"""LoadReport: what a checkpoint load did to the model, and whether that is acceptable."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ShapeMismatch:
    """A checkpoint tensor whose shape differs from the model parameter it maps onto."""

    key: str
    checkpoint_shape: tuple[int, ...]
    model_shape: tuple[int, ...]


@dataclass(frozen=True)
class LoadReport:
    """Outcome of loading one initialization into a detector.

    Keys are full ``model.state_dict()`` names (e.g. ``backbone.net.blocks.0.attn.qkv.weight``).
    ``missing``/``unexpected`` list every key, and ``unexpected_missing``/``unexpected_extra`` the
    subset that the init's catalog record does not expect for this recipe; ``ok`` is true only when
    both subsets are empty and no shape mismatched.
    """

    init: str
    recipe: str
    source: str | None
    loaded: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    resized: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    mismatched: tuple[ShapeMismatch, ...] = ()
    unexpected_missing: tuple[str, ...] = ()
    unexpected_extra: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    hint: str = ""
    sha256: str | None = None  # of the weights file read (None: nothing was read)

    @property
    def ok(self) -> bool:
        """True when every missing/unexpected key is expected and no shape mismatched."""
        return not (self.mismatched or self.unexpected_missing or self.unexpected_extra)

    def failure_message(self) -> str:
        """A one-paragraph explanation of why the load is not ok ('' when ok)."""
        if self.ok:
            return ""
        parts: list[str] = []
        if self.mismatched:
            first = self.mismatched[0]
            parts.append(
                f"shape mismatch for {first.key}: checkpoint has {list(first.checkpoint_shape)}, "
                f"model {self.recipe!r} expects {list(first.model_shape)}"
                + (f" ({len(self.mismatched) - 1} more tensors mismatch)" if len(self.mismatched) > 1 else "")
                + " — is the checkpoint for a different model size than the recipe?"
            )
        if self.unexpected_missing:
            parts.append(
                f"{len(self.unexpected_missing)} model tensors were not in the checkpoint, "
                f"e.g. {', '.join(self.unexpected_missing[:3])}"
            )
        if self.unexpected_extra:
            parts.append(
                f"{len(self.unexpected_extra)} checkpoint tensors have no place in the model, "
                f"e.g. {', '.join(self.unexpected_extra[:3])}"
            )
        src = f" from {self.source}" if self.source else ""
        hint = f" Hint: {self.hint}" if self.hint else ""
        return (
            f"init {self.init!r}{src} does not fit recipe {self.recipe!r}: " + "; ".join(parts) + "." + hint
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with ``ok`` included and shapes as lists."""
        d = asdict(self)
        d["mismatched"] = [
            {"key": m.key, "checkpoint_shape": list(m.checkpoint_shape), "model_shape": list(m.model_shape)}
            for m in self.mismatched
        ]
        for k in (
            "loaded",
            "missing",
            "unexpected",
            "resized",
            "dropped",
            "unexpected_missing",
            "unexpected_extra",
            "notes",
        ):
            d[k] = list(d[k])
        d["ok"] = self.ok
        d["message"] = self.failure_message()
        return d

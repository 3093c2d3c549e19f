"""Attention for the plain ViT: window partition, relative position in both forms, SDPA.

Tokens are NHWC (``B, H, W, C``) as in detectron2's ViT. Relative position enters
``F.scaled_dot_product_attention`` as an additive float mask:

- ``shared_bias`` (the study, BEiT-style): a scalar bias per head and relative offset, read from a
  ``((2S-1)^2, nH)`` table owned by :class:`RelativePositionBias`; one table is shared by all
  windowed blocks (S = window size) and another by all global blocks (S = token-grid side).
- ``decomposed`` (ViTDet, MViTv2-style): per-block ``rel_pos_h``/``rel_pos_w`` of shape
  ``(2S-1, head_dim)``; the bias is ``q·R_h + q·R_w`` (query-dependent), computed from the unscaled q.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

RelPosKind = Literal["none", "shared_bias", "decomposed"]


def static_hw(x: Tensor) -> tuple[int, int]:
    """Height and width of an NHWC map ``x`` as Python ints.

    In eager mode they are ints already. Under ONNX tracing this makes them constants of the graph
    (whose input is S×S by contract; only the batch is dynamic), so ONNX Runtime folds the shape
    arithmetic and the position-embedding resizes once at load time instead of running them on every
    call.
    """
    return int(x.shape[1]), int(x.shape[2])


def window_partition(x: Tensor, window_size: int) -> tuple[Tensor, tuple[int, int]]:
    """Split ``x`` (B, H, W, C) into non-overlapping windows, zero-padding H and W up to multiples.

    Returns ``(windows, (Hp, Wp))`` with windows of shape (B * Hp/w * Wp/w, w, w, C).
    """
    B, C = x.shape[0], x.shape[3]
    H, W = static_hw(x)
    pad_h = (window_size - H % window_size) % window_size
    pad_w = (window_size - W % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # pads W then H (C untouched)
    Hp, Wp = H + pad_h, W + pad_w
    # (B, Hp/w, w, Wp/w, w, C) -> (B, Hp/w, Wp/w, w, w, C) -> (B*nW, w, w, C)
    x = x.view(B, Hp // window_size, window_size, Wp // window_size, window_size, C)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, C)
    return windows, (Hp, Wp)


def window_unpartition(
    windows: Tensor, window_size: int, pad_hw: tuple[int, int], hw: tuple[int, int]
) -> Tensor:
    """Inverse of :func:`window_partition`: (B*nW, w, w, C) -> (B, H, W, C), padding cropped away."""
    Hp, Wp = pad_hw
    H, W = hw
    B = windows.shape[0] // (Hp * Wp // window_size // window_size)
    # (B*nW, w, w, C) -> (B, Hp/w, Wp/w, w, w, C) -> (B, Hp, Wp, C)
    x = windows.view(B, Hp // window_size, Wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)
    if Hp > H or Wp > W:
        x = x[:, :H, :W, :].contiguous()
    return x


def get_rel_pos(q_size: int, k_size: int, rel_pos: Tensor) -> Tensor:
    """Relative embeddings for every (query, key) offset along one axis (detectron2 ``get_rel_pos``).

    ``rel_pos`` is (L, C); it is linearly resized to ``2*max(q_size, k_size)-1`` rows when L differs.
    Returns (q_size, k_size, C).
    """
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        # (L, C) -> (1, C, L) -> resize along L -> (max_rel_dist, C)
        resized = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_rel_dist, mode="linear"
        )
        rel_pos = resized.reshape(-1, max_rel_dist).permute(1, 0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative_coords = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative_coords.long()]


def decomposed_rel_pos_bias(
    q: Tensor, rel_pos_h: Tensor, rel_pos_w: Tensor, q_size: tuple[int, int], k_size: tuple[int, int]
) -> Tensor:
    """MViTv2 decomposed relative-position term for attention logits.

    ``q``: (B, nH, q_h*q_w, hd), unscaled. Returns the additive bias (B, nH, q_h*q_w, k_h*k_w).
    """
    q_h, q_w = q_size
    k_h, k_w = k_size
    Rh = get_rel_pos(q_h, k_h, rel_pos_h)  # (q_h, k_h, hd)
    Rw = get_rel_pos(q_w, k_w, rel_pos_w)  # (q_w, k_w, hd)
    B, nH, _, dim = q.shape
    r_q = q.reshape(B, nH, q_h, q_w, dim)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, Rh)  # (B, nH, q_h, q_w, k_h)
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, Rw)  # (B, nH, q_h, q_w, k_w)
    # (B, nH, q_h, q_w, k_h, 1) + (B, nH, q_h, q_w, 1, k_w) -> (B, nH, q_h*q_w, k_h*k_w)
    bias = rel_h[..., :, None] + rel_w[..., None, :]
    return bias.reshape(B, nH, q_h * q_w, k_h * k_w)


class RelativePositionBias(nn.Module):
    """BEiT-style scalar relative-position bias over an ``S x S`` token square, shared by a set of blocks.

    ``relative_position_bias_table``: ((2S-1)^2, nH), zero-initialised (the study: zero-init unless
    transferred from BEiT). ``forward()`` returns the additive bias (1, nH, S*S, S*S).
    """

    def __init__(self, size: int, num_heads: int) -> None:
        super().__init__()
        self.size = size
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * size - 1) ** 2, num_heads))

    def forward(self, hw: tuple[int, int] | None = None) -> Tensor:
        """Bias for an (H, W) token window or grid (default S x S): (1, nH, H*W, H*W).

        When (H, W) differs from S the (2S-1)^2 table is resized bicubically to (2H-1) x (2W-1).
        """
        S = self.size
        H, W = hw if hw is not None else (S, S)
        # ((2S-1)^2, nH) -> (2S-1, 2S-1, nH)
        table = self.relative_position_bias_table.view(2 * S - 1, 2 * S - 1, self.num_heads)
        if (H, W) != (S, S):
            # (2S-1, 2S-1, nH) -> (1, nH, 2S-1, 2S-1) -> (1, nH, 2H-1, 2W-1) -> (2H-1, 2W-1, nH)
            grid = table.permute(2, 0, 1).unsqueeze(0)
            grid = F.interpolate(grid, size=(2 * H - 1, 2 * W - 1), mode="bicubic", align_corners=False)
            table = grid[0].permute(1, 2, 0)
        device = table.device
        ry = (
            torch.arange(H, device=device)[:, None] - torch.arange(H, device=device)[None, :] + H - 1
        )  # (H, H)
        rx = (
            torch.arange(W, device=device)[:, None] - torch.arange(W, device=device)[None, :] + W - 1
        )  # (W, W)
        # bias[qy, qx, ky, kx] = table[qy - ky, qx - kx] -> (H, W, H, W, nH)
        bias = table[ry[:, None, :, None], rx[None, :, None, :]]
        # (H, W, H, W, nH) -> (HW, HW, nH) -> (nH, HW, HW) -> (1, nH, HW, HW)
        return bias.reshape(H * W, H * W, self.num_heads).permute(2, 0, 1).unsqueeze(0)

    def extra_repr(self) -> str:
        return f"size={self.size}, num_heads={self.num_heads}"


class Attention(nn.Module):
    """Multi-head self-attention on NHWC token maps with optional relative position.

    Parameters follow the upstream checkpoints: ``qkv`` (fused Linear), ``proj``; with ``qv_bias``
    (BEiT) ``qkv`` has no bias and ``q_bias``/``v_bias`` are separate (k bias is zero); with
    ``rel_pos="decomposed"`` the block owns ``rel_pos_h``/``rel_pos_w`` of shape (2S-1, head_dim)
    where S = ``input_size``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        qv_bias: bool = False,
        rel_pos: RelPosKind = "none",
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias and not qv_bias)
        self.q_bias: nn.Parameter | None = None
        self.v_bias: nn.Parameter | None = None
        if qv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)
        self.decomposed = rel_pos == "decomposed"
        if self.decomposed:
            if input_size is None:
                raise ValueError("decomposed relative position needs input_size (window or grid side)")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size - 1, self.head_dim))

    def _qkv(self, x: Tensor) -> Tensor:
        if self.q_bias is not None and self.v_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
            return F.linear(x, self.qkv.weight, bias)
        return self.qkv(x)

    def forward(self, x: Tensor, attn_bias: Tensor | None = None) -> Tensor:
        """``x``: (B, H, W, C); ``attn_bias``: shared additive bias broadcastable to (B, nH, HW, HW)."""
        B, C = x.shape[0], x.shape[3]
        H, W = static_hw(x)
        # (B, H, W, 3C) -> (B, HW, 3, nH, hd) -> (3, B, nH, HW, hd)
        qkv = self._qkv(x).reshape(B, H * W, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        mask = attn_bias
        if self.decomposed:
            rel = decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (H, W), (H, W))
            mask = rel if mask is None else mask + rel
        if mask is not None:
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nH, HW, hd)
        # (B, nH, HW, hd) -> (B, HW, nH, hd) -> (B, H, W, C)
        out = out.transpose(1, 2).reshape(B, H, W, C)
        return self.proj(out)

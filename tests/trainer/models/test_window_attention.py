"""Window partition, relative position (both forms) and attention against reference formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vitbench.trainer.models.attention import (
    Attention,
    RelativePositionBias,
    decomposed_rel_pos_bias,
    window_partition,
    window_unpartition,
)
from vitbench.trainer.models.vit import ViT


@pytest.mark.parametrize(("h", "w", "win"), [(10, 7, 4), (8, 8, 4), (5, 9, 3), (64, 64, 14)])
def test_window_partition_round_trip_with_padding(h: int, w: int, win: int) -> None:
    x = torch.randn(2, h, w, 5)
    windows, (hp, wp) = window_partition(x, win)
    assert hp % win == 0 and wp % win == 0 and hp - h < win and wp - w < win
    assert windows.shape == (2 * (hp // win) * (wp // win), win, win, 5)
    # The padded border is zeros and every original token appears exactly once.
    assert torch.count_nonzero(windows) == torch.count_nonzero(x)
    torch.testing.assert_close(windows.sum(), x.sum())
    back = window_unpartition(windows, win, (hp, wp), (h, w))
    assert torch.equal(back, x)


def test_window_partition_groups_spatial_neighbours() -> None:
    # Token values encode (y, x); window 0 must hold exactly the top-left win x win square.
    h, w, win = 6, 6, 3
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    x = torch.stack([ys, xs], dim=-1).float()[None]  # (1, H, W, 2)
    windows, _ = window_partition(x, win)
    assert torch.equal(windows[0], x[0, :win, :win])
    assert torch.equal(windows[1], x[0, :win, win : 2 * win])


def _d2_attention(x: torch.Tensor, attn: Attention) -> torch.Tensor:
    """detectron2's explicit-softmax attention with ``add_decomposed_rel_pos`` (reference)."""
    B, H, W, _ = x.shape
    nH = attn.num_heads
    qkv = attn.qkv(x).reshape(B, H * W, 3, nH, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, B * nH, H * W, -1).unbind(0)
    logits = (q * attn.scale) @ k.transpose(-2, -1)
    if attn.decomposed:
        Rh = attn.rel_pos_h[(torch.arange(H)[:, None] - torch.arange(H)[None, :] + H - 1)]
        Rw = attn.rel_pos_w[(torch.arange(W)[:, None] - torch.arange(W)[None, :] + W - 1)]
        r_q = q.reshape(B * nH, H, W, -1)
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, Rh)
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, Rw)
        logits = (logits.view(B * nH, H, W, H, W) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).view(
            B * nH, H * W, H * W
        )
    out = (logits.softmax(dim=-1) @ v).view(B, nH, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
    return attn.proj(out)


def test_decomposed_rel_pos_attention_matches_detectron2_formula() -> None:
    torch.manual_seed(0)
    attn = Attention(32, 4, rel_pos="decomposed", input_size=5)
    with torch.no_grad():
        attn.rel_pos_h.normal_(std=0.5)
        attn.rel_pos_w.normal_(std=0.5)
    x = torch.randn(2, 5, 5, 32)
    torch.testing.assert_close(attn(x), _d2_attention(x, attn), atol=1e-5, rtol=1e-5)


def test_decomposed_bias_is_linear_in_the_query_and_shaped() -> None:
    """Values against detectron2 are in test_resize_by_value.py; here: shape and q-linearity."""
    q, other = torch.randn(2, 3, 4 * 6, 8), torch.randn(2, 3, 4 * 6, 8)
    rel_h, rel_w = torch.randn(7, 8), torch.randn(11, 8)
    bias = decomposed_rel_pos_bias(q, rel_h, rel_w, (4, 6), (4, 6))
    assert bias.shape == (2, 3, 24, 24)
    torch.testing.assert_close(
        decomposed_rel_pos_bias(2 * q + other, rel_h, rel_w, (4, 6), (4, 6)),
        2 * bias + decomposed_rel_pos_bias(other, rel_h, rel_w, (4, 6), (4, 6)),
    )
    assert not torch.allclose(bias, decomposed_rel_pos_bias(other, rel_h, rel_w, (4, 6), (4, 6)))


def _beit_relative_position_index(size: int) -> torch.Tensor:
    """BEiT's ``relative_position_index`` (without the 3 cls entries) for a size x size window."""
    coords = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij"))
    flat = torch.flatten(coords, 1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += size - 1
    rel[:, :, 1] += size - 1
    rel[:, :, 0] *= 2 * size - 1
    return rel.sum(-1)


@pytest.mark.parametrize("size", [3, 4, 7])
def test_shared_bias_matches_beit_index(size: int) -> None:
    rpb = RelativePositionBias(size, num_heads=2)
    with torch.no_grad():
        rpb.relative_position_bias_table.normal_()
    index = _beit_relative_position_index(size)
    expected = rpb.relative_position_bias_table[index.view(-1)].view(size * size, size * size, 2)
    torch.testing.assert_close(rpb(), expected.permute(2, 0, 1)[None])


def test_qv_bias_equals_fused_bias_with_zero_k() -> None:
    torch.manual_seed(0)
    beit = Attention(16, 2, qv_bias=True)
    fused = Attention(16, 2)
    assert beit.qkv.bias is None and beit.q_bias is not None and beit.v_bias is not None
    with torch.no_grad():
        beit.q_bias.normal_()
        beit.v_bias.normal_()
        fused.qkv.weight.copy_(beit.qkv.weight)
        fused.qkv.bias.copy_(torch.cat([beit.q_bias, torch.zeros(16), beit.v_bias]))
        fused.proj.load_state_dict(beit.proj.state_dict())
    x = torch.randn(1, 3, 3, 16)
    torch.testing.assert_close(beit(x), fused(x))


def test_sdpa_attention_matches_explicit_softmax_with_additive_bias() -> None:
    torch.manual_seed(0)
    attn = Attention(24, 3)
    x = torch.randn(2, 4, 4, 24)
    bias = torch.randn(1, 3, 16, 16)
    B, H, W, C = x.shape
    q, k, v = attn.qkv(x).reshape(B, H * W, 3, 3, 8).permute(2, 0, 3, 1, 4).unbind(0)
    ref = F.softmax(q @ k.transpose(-2, -1) * attn.scale + bias, dim=-1) @ v
    ref = attn.proj(ref.transpose(1, 2).reshape(B, H, W, C))
    torch.testing.assert_close(attn(x, bias), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rel_pos", ["none", "shared_bias", "decomposed"])
def test_windowed_equals_global_when_one_window_covers_the_map(rel_pos: str) -> None:
    torch.manual_seed(0)
    kw = dict(img_size=128, patch_size=16, embed_dim=48, depth=2, num_heads=3, rel_pos=rel_pos)
    kw |= dict(pretrain_img_size=64, out_indices=(1,), global_blocks=())
    windowed = ViT(window_size=8, **kw)  # type: ignore[arg-type]
    global_ = ViT(window_size=0, **kw)  # type: ignore[arg-type]
    state = windowed.state_dict()
    # Non-zero relative positions so the test sees them; the shared table changes its owner name.
    for key in state:
        if "rel_pos" in key:
            state[key] = torch.randn_like(state[key]) * 0.3
    if rel_pos == "shared_bias":
        assert windowed.rel_pos_global is None and global_.rel_pos_window is None
        state = {k.replace("rel_pos_window", "rel_pos_global"): v for k, v in state.items()}
    global_.load_state_dict(state, strict=True)
    windowed.load_state_dict(
        {k.replace("rel_pos_global", "rel_pos_window"): v for k, v in state.items()}, strict=True
    )
    x = torch.randn(2, 3, 128, 128)
    assert all(b.window_size == 8 for b in windowed.blocks)  # type: ignore[union-attr]
    torch.testing.assert_close(windowed.eval()(x)[0], global_.eval()(x)[0], atol=1e-5, rtol=1e-5)


def test_windowed_differs_from_global_when_windows_split_the_map() -> None:
    torch.manual_seed(0)
    kw = dict(img_size=128, embed_dim=48, depth=1, num_heads=3, pretrain_img_size=64, out_indices=(0,))
    windowed = ViT(window_size=4, global_blocks=(), **kw)  # type: ignore[arg-type]
    global_ = ViT(window_size=0, global_blocks=(), **kw)  # type: ignore[arg-type]
    global_.load_state_dict(windowed.state_dict())
    x = torch.randn(1, 3, 128, 128)
    assert not torch.allclose(windowed(x)[0], global_(x)[0], atol=1e-4)

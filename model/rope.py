"""Rotary position embedding over adjacent pairs (dims 2i, 2i+1), as the paper's code applies it."""
from __future__ import annotations

import torch


def apply_rope(x: torch.Tensor, start: int, theta: float) -> torch.Tensor:
    """Rotate x [B, H, T, hd] for absolute positions start .. start+T-1, computed in fp32.

    Pair i of each head turns by pos * theta^(-2i/hd). The pairing is the reference's (complex
    numbers over adjacent dims), so its query/key weights load without permutation.
    """
    hd = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd)
    pos = torch.arange(start, start + x.shape[-2], device=x.device, dtype=torch.float32)
    angles = torch.outer(pos, inv_freq)
    cos, sin = angles.cos(), angles.sin()
    pairs = x.float().unflatten(-1, (hd // 2, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)
    return rotated.flatten(-2).to(x.dtype)


def rope_tokens(x: torch.Tensor, n_head: int, start: int, theta: float | None) -> torch.Tensor:
    """apply_rope on x [B, T, H·hd] laid out token-major, as the recurrent mixers hold r and k;
    theta None leaves x as it is (model.rk_rope_theta unset)."""
    if theta is None:
        return x
    b, t, width = x.shape
    heads = x.view(b, t, n_head, width // n_head).transpose(1, 2)
    return apply_rope(heads, start, theta).transpose(1, 2).reshape(b, t, width)

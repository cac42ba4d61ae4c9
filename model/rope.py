"""Rotary position embedding (rotate-half form), computed on the fly in fp32."""
from __future__ import annotations

import torch


def apply_rope(x: torch.Tensor, start: int, theta: float) -> torch.Tensor:
    """Rotate x [B, H, T, hd] for absolute positions start .. start+T-1."""
    hd = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd)
    pos = torch.arange(start, start + x.shape[-2], device=x.device, dtype=torch.float32)
    angles = torch.outer(pos, inv_freq)
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1).to(x.dtype)
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1).to(x.dtype)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin

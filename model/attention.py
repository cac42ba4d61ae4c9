"""Causal softmax attention for queries that may start part-way into the key sequence."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_start: int) -> torch.Tensor:
    """q [B, H, Tq, hd] at absolute positions q_start.., k/v [B, H, Tk, hd] at positions 0..Tk-1.

    A query attends to keys at its own position and before; pre-fill tails and cached
    generation both reduce to this one rule.
    """
    tq, tk = q.shape[-2], k.shape[-2]
    if q_start + tq > tk:
        raise ValueError(f"queries reach position {q_start + tq - 1} but only {tk} keys exist")
    if q_start == 0 and tq == tk:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    q_pos = torch.arange(q_start, q_start + tq, device=q.device)
    mask = torch.arange(tk, device=q.device)[None, :] <= q_pos[:, None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

"""The shared compressed key cache: made once after the last Finch-C2 block, read by every GOLD block."""
from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig


def rms_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x / (rms(x) + eps): the reference's form (eps outside the root), which GOLD's keys and
    value source use; it differs from torch's rms_norm for tiny vectors."""
    return x / (x.norm(2, dim=-1, keepdim=True) * x.shape[-1] ** -0.5 + eps)


class KeyCompression(nn.Module):
    """c = W_a x (n_embd/16 wide) is all that is stored per token, with the token id.

    Keys are re-expanded on demand: k_cache = rms_norm(W_b [LN0(emb(token)); c]).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.compress = nn.Linear(cfg.n_embd, cfg.compressed_width, bias=False)
        self.expand = nn.Linear(cfg.n_embd + cfg.compressed_width, cfg.att_width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.compress(x)

    def keys(self, emb0: torch.Tensor, compressed: torch.Tensor) -> torch.Tensor:
        return rms_norm(self.expand(torch.cat([emb0, compressed.to(emb0.dtype)], dim=-1)))

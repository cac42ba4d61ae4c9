"""RWKV channel mix, used by both Finch-C2 and GOLD blocks."""
from __future__ import annotations

import torch
from torch import nn

from .token_mixing import token_shift


class ChannelMix(nn.Module):
    """out = sigmoid(R x_r) * V(relu(K x_k)^2), with x_k and x_r token-shift lerps of x."""

    def __init__(self, n_embd: int, dim_ffn: int):
        super().__init__()
        self.mu_k = nn.Parameter(torch.empty(n_embd))
        self.mu_r = nn.Parameter(torch.empty(n_embd))
        self.key = nn.Linear(n_embd, dim_ffn, bias=False)
        self.receptance = nn.Linear(n_embd, n_embd, bias=False)
        self.value = nn.Linear(dim_ffn, n_embd, bias=False)

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        dx = token_shift(x, prev) - x
        k = torch.relu(self.key(x + dx * self.mu_k)) ** 2
        return torch.sigmoid(self.receptance(x + dx * self.mu_r)) * self.value(k)


class SwiGLU(nn.Module):
    """Llama's feed-forward: W2(silu(W1 x) * W3 x)."""

    def __init__(self, n_embd: int, dim_ffn: int):
        super().__init__()
        self.gate = nn.Linear(n_embd, dim_ffn, bias=False)
        self.up = nn.Linear(n_embd, dim_ffn, bias=False)
        self.down = nn.Linear(dim_ffn, n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.silu(self.gate(x)) * self.up(x))

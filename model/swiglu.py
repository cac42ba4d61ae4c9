"""Llama's feed-forward, the transformer-shaped channel mix."""
from __future__ import annotations

import torch
from torch import nn

from .init_schedules import orthogonal
from .part import ChannelMixer


class SwiGLU(ChannelMixer):
    """W2(silu(W1 x) * W3 x); no token shift."""

    ref_signature = "w1.weight"
    width_key = "w1.weight"

    uses_shift = False

    def __init__(self, n_embd: int, dim_ffn: int):
        super().__init__()
        self.gate = nn.Linear(n_embd, dim_ffn, bias=False)
        self.up = nn.Linear(n_embd, dim_ffn, bias=False)
        self.down = nn.Linear(dim_ffn, n_embd, bias=False)

    @staticmethod
    def default_width(n_embd: int) -> int:
        """The paper's SwiGLU width: 8/3 of n_embd, rounded down to a multiple of 32."""
        return n_embd * 4 * 2 // 3 // 32 * 32

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
        return self.down(torch.nn.functional.silu(self.gate(x)) * self.up(x))

    def reset_parameters(self, layer: int, n_layer: int) -> None:
        for lin in (self.gate, self.up, self.down):
            orthogonal(lin.weight)

    def ref_rules(self, b, ours: str, ref: str) -> None:
        for mine, theirs in (("gate", "w1"), ("down", "w2"), ("up", "w3")):
            b.same(f"{ours}.{mine}.weight", f"{ref}.{theirs}.weight")

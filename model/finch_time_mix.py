"""Finch time mix: RWKV-6 (the Finch baseline) and Finch-C2 (GoldFinch's lower blocks)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernels import wkv6

from .config import ModelConfig
from .token_mixing import DDLerp, TanhLoRA


class FinchTimeMix(nn.Module):
    """Data-dependent-decay linear attention.

    RWKV-6: y = GroupNorm(wkv6(r, k, v, w, u)) * silu(g).
    Finch-C2: keys scaled by (1 - decay), no bonus u, and a second value v2 added to the WKV
    output before a LayerNorm: y = LN(wkv6(r, k*(1-decay), v, w, 0) + v2).
    """

    def __init__(self, cfg: ModelConfig, c2: bool):
        super().__init__()
        self.c2 = c2
        d, a = cfg.n_embd, cfg.att_width
        self.n_head, self.head_size = cfg.n_head, cfg.head_size
        names = ("r", "k", "v", "w", "v2") if c2 else ("r", "k", "v", "w", "g")
        self.mix = DDLerp(d, names, cfg.mix_lora_rank)
        self.receptance = nn.Linear(d, a, bias=False)
        self.key = nn.Linear(d, a, bias=False)
        self.value = nn.Linear(d, a, bias=False)
        self.output = nn.Linear(a, d, bias=False)
        self.decay_base = nn.Parameter(torch.empty(a))
        self.decay_lora = TanhLoRA(d, cfg.decay_lora_rank, a)
        if c2:
            self.v2_lora = TanhLoRA(d, cfg.decay_lora_rank, a)
            self.ln_x = nn.LayerNorm(a)
        else:
            self.bonus = nn.Parameter(torch.empty(self.n_head, self.head_size))
            self.gate = nn.Linear(d, a, bias=False)
            self.ln_x = nn.GroupNorm(self.n_head, a, eps=64e-5)

    def forward(self, x: torch.Tensor, shift: torch.Tensor | None, wkv_state: torch.Tensor | None):
        """x [B, T, C] (already layer-normed) -> (out, new WKV state)."""
        b, t, _ = x.shape
        m = self.mix(x, shift)
        r, k, v = self.receptance(m["r"]), self.key(m["k"]), self.value(m["v"])
        w = self.decay_base + self.decay_lora(m["w"])
        if self.c2:
            k = k * -torch.expm1(-torch.exp(w))  # one minus the per-channel decay
        heads = (b, t, self.n_head, self.head_size)
        u = None if self.c2 else self.bonus
        y, wkv_state = wkv6(r.view(heads), k.view(heads), v.view(heads), w.view(heads), u,
                            state=wkv_state)
        y = y.reshape(b, t, -1)
        if self.c2:
            y = self.ln_x(y + self.value(m["v2"]) + self.v2_lora(m["v2"]))
        else:
            y = self.ln_x(y.reshape(b * t, -1)).view(b, t, -1) * F.silu(self.gate(m["g"]))
        return self.output(y), wkv_state

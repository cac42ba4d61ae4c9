"""RWKV-7 "Goose" time mix (x070), as RWKV-LM computes it (RWKV-v7 `RWKV_Tmix_x070`).

Static token-shift mixes; a decay exp(−e^{−0.5}·σ(w0 + tanh(x w1) w2)) that stays inside
(exp(−e^{−0.5}), 1); an in-context rate a = σ(a0 + x a1 a2); a removal key kk (k·k_k, L2-normed
per head); the generalized delta rule (kernels.wkv7 with a = −kk, b = kk·a); GroupNorm (eps
64e-5); the r_k bonus; a gate σ(x g1) g2; and a value residual toward the first RWKV-7 block's v
(`ctx.v_first`), whose own v0/v1/v2 exist but are never read, as in RWKV-LM. Parameter names
and shapes are RWKV-LM's, so its checkpoints map one to one.
"""
from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError

from kernels import wkv7

from .init_schedules import (channel_ramp, ln_x_scale, orthogonal, orthogonal_scaled, ratios,
                             zero_biases)
from .part import TimeMixer
from .rope import rope_tokens
from .token_mixing import token_shift

MIXES = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")
# RWKV-LM's suggested LoRA widths: max(32, round(c·sqrt(C)/32)·32)
LORA_FACTORS = {"w": 2.5, "a": 2.5, "v": 1.7, "g": 5.0}


def lora_width(kind: str, n_embd: int) -> int:
    return max(32, int(round(LORA_FACTORS[kind] * math.sqrt(n_embd) / 32) * 32))


class RWKV7TimeMix(TimeMixer):
    default_cmix = "x070"
    title, signature, ref_signature = "RWKV-7", ("att.k_a",), "k_a"

    def __init__(self, cfg, layer: int):
        super().__init__()
        c, self.layer = cfg.n_embd, layer
        self.n_head, self.head_size, self.rope_theta = cfg.n_head, cfg.head_size, cfg.rk_rope_theta
        if cfg.att_width != c:
            raise UserError(f"model.dim_att={cfg.dim_att}: RWKV-7 needs dim_att = n_embd")
        for name in MIXES:
            setattr(self, name, nn.Parameter(torch.empty(1, 1, c)))
        for kind in ("w", "a", "v", "g"):
            width = getattr(cfg, f"x070_lora_{kind}") or lora_width(kind, c)
            if kind != "g":
                setattr(self, f"{kind}0", nn.Parameter(torch.empty(1, 1, c)))
            setattr(self, f"{kind}1", nn.Parameter(torch.empty(c, width)))
            setattr(self, f"{kind}2", nn.Parameter(torch.empty(width, c)))
        self.k_k = nn.Parameter(torch.empty(1, 1, c))
        self.k_a = nn.Parameter(torch.empty(1, 1, c))
        self.r_k = nn.Parameter(torch.empty(self.n_head, self.head_size))
        self.receptance = nn.Linear(c, c, bias=cfg.att_bias)
        self.key = nn.Linear(c, c, bias=cfg.att_bias)
        self.value = nn.Linear(c, c, bias=cfg.att_bias)
        self.output = nn.Linear(c, c, bias=False)
        self.ln_x = nn.GroupNorm(self.n_head, c, eps=64e-5)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:2], self.n_head, self.head_size)

    def forward(self, x: torch.Tensor, st, ctx):
        b, t, c = x.shape
        xx = token_shift(x, st.att_shift) - x
        xr, xw, xk, xv, xa, xg = (x + xx * getattr(self, name) for name in MIXES)
        r, k = self.receptance_key(xr, xk, ctx.start)
        w = -F.softplus(-(self.w0 + torch.tanh(xw @ self.w1) @ self.w2)) - 0.5
        v = self.value(xv)
        if self.layer == 0:  # by layer, not by an empty ctx: recomputation must take this branch
            ctx.v_first = v
        else:
            v = v + (ctx.v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2
        kk = F.normalize(self._heads(k * self.k_k), dim=-1, p=2.0)
        k = k * (1 + (a - 1) * self.k_a)
        a_h = self._heads(a)
        y, wkv_state = wkv7(self._heads(r), self._heads(w), self._heads(k), self._heads(v),
                            -kk, kk * a_h, state=st.wkv)
        y = self.ln_x(y.reshape(b * t, c)).view(b, t, c)
        bonus = (self._heads(r) * self._heads(k) * self.r_k).sum(dim=-1, keepdim=True)
        y = y + (bonus * self._heads(v)).view(b, t, c)
        return self.output(y * g), {"att_shift": x[:, -1], "wkv": wkv_state}

    def receptance_key(self, xr: torch.Tensor, xk: torch.Tensor, start: int):
        """r and k, rotated for their absolute positions when model.rk_rope_theta is set (before
        kk and k's scaling read them, as RADLADS does)."""
        r, k = self.receptance(xr), self.key(xk)
        return (rope_tokens(r, self.n_head, start, self.rope_theta),
                rope_tokens(k, self.n_head, start, self.rope_theta))

    @classmethod
    def infer_fields(cls, sd: dict, att: str) -> dict:
        n_head, head_size = sd[att + "r_k"].shape
        widths = {f"x070_lora_{k}": sd[f"{att}{k}1"].shape[1] for k in ("w", "a", "v", "g")}
        return dict(head_size=head_size, dim_att=n_head * head_size, **widths)

    def reset_parameters(self, layer: int, n_layer: int) -> None:
        """RWKV-LM's `__init__` values, then `generate_init_weight` for the Linear weights."""
        r01, r10 = ratios(layer, n_layer)
        c, n = self.x_r.numel(), self.head_size
        ddd = channel_ramp(c, self.x_r.device)
        for name, power in zip(MIXES, (0.2, 0.9, 0.7, 0.7, 0.9, 0.2)):
            getattr(self, name).copy_((1.0 - ddd.pow(power * r10)).view(1, 1, c))
        idx = torch.arange(c, device=self.x_r.device, dtype=torch.float32)
        linear = idx / (c - 1) - 0.5
        zigzag = ((idx % n) - (n - 1) / 2) / ((n - 1) / 2)
        zigzag = zigzag * zigzag.abs()
        decay = -6 + 6 * (idx / (c - 1)).pow(1 + r01 ** 0.3)
        self.w0.copy_((decay + 0.5 + zigzag * 2.5).view(1, 1, c))
        self.a0.copy_((-0.19 + zigzag * 0.3 + linear * 0.4).view(1, 1, c))
        self.v0.copy_((0.73 - linear * 0.4).view(1, 1, c))
        for kind in ("w", "a", "v", "g"):
            nn.init.zeros_(getattr(self, f"{kind}1"))
            orthogonal_scaled(getattr(self, f"{kind}2"), 0.1)
        self.k_k.copy_((0.71 - linear * 0.1).view(1, 1, c))
        self.k_a.fill_(1.02)
        self.r_k.fill_(-0.04)
        orthogonal(self.receptance.weight)
        orthogonal(self.key.weight, 0.1)
        orthogonal(self.value.weight)
        zero_biases(self.receptance, self.key, self.value)
        nn.init.zeros_(self.output.weight)
        self.ln_x.weight.fill_(ln_x_scale(layer, n_layer))
        nn.init.zeros_(self.ln_x.bias)

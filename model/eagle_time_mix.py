"""Eagle (RWKV-5, x052) time mix, as RWKV-LM computes it (RWKV-v5 `RWKV_Tmix_x052`).

Static token-shift mixes (x·m + x_prev·(1−m)), a static per-channel decay and bonus, WKV5 (which
is WKV6 with a decay that does not change over time), GroupNorm of the output divided by
`model.head_size_divisor`, and a SiLU gate. Names and shapes are RWKV-LM's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernels import wkv6

from .finch_time_mix import bonus_schedule, decay_schedule
from .init_schedules import channel_ramp, ln_x_scale, orthogonal, ratios, zero_biases
from .part import TimeMixer
from .rope import rope_tokens
from .token_mixing import token_shift


class EagleTimeMix(TimeMixer):
    default_cmix = "x052"
    title, signature, ref_signature = "Eagle (RWKV-5)", ("att.time_mix_g",), "time_mix_g"

    def __init__(self, cfg, layer: int):
        super().__init__()
        d, a = cfg.n_embd, cfg.att_width
        self.n_head, self.head_size, self.divisor = cfg.n_head, cfg.head_size, cfg.head_size_divisor
        self.rope_theta = cfg.rk_rope_theta
        for name in ("time_mix_k", "time_mix_v", "time_mix_r", "time_mix_g"):
            setattr(self, name, nn.Parameter(torch.empty(1, 1, d)))
        self.time_decay = nn.Parameter(torch.empty(self.n_head, self.head_size))
        self.time_faaaa = nn.Parameter(torch.empty(self.n_head, self.head_size))
        self.receptance = nn.Linear(d, a, bias=cfg.att_bias)
        self.key = nn.Linear(d, a, bias=cfg.att_bias)
        self.value = nn.Linear(d, a, bias=cfg.att_bias)
        self.output = nn.Linear(a, d, bias=False)
        self.gate = nn.Linear(d, a, bias=False)
        self.ln_x = nn.GroupNorm(self.n_head, a)

    def _mix(self, x: torch.Tensor, xx: torch.Tensor, name: str) -> torch.Tensor:
        m = getattr(self, f"time_mix_{name}")
        return x * m + xx * (1 - m)

    def forward(self, x: torch.Tensor, st, ctx):
        b, t, _ = x.shape
        xx = token_shift(x, st.att_shift)
        r, k, v = (lin(self._mix(x, xx, n)) for lin, n in
                   ((self.receptance, "r"), (self.key, "k"), (self.value, "v")))
        r, k = (rope_tokens(t, self.n_head, ctx.start, self.rope_theta) for t in (r, k))
        g = F.silu(self.gate(self._mix(x, xx, "g")))
        heads = (b, t, self.n_head, self.head_size)
        w = self.time_decay.expand(heads)
        y, wkv_state = wkv6(r.view(heads), k.view(heads), v.view(heads), w, self.time_faaaa,
                            state=st.wkv)
        y = self.ln_x(y.reshape(b * t, -1) / self.divisor).view(b, t, -1)
        return self.output(y * g), {"att_shift": x[:, -1], "wkv": wkv_state}

    @classmethod
    def infer_fields(cls, sd: dict, att: str) -> dict:
        n_head, head_size = sd[att + "time_faaaa"].shape
        return dict(head_size=head_size, dim_att=n_head * head_size)

    def reset_parameters(self, layer: int, n_layer: int) -> None:
        r01, r10 = ratios(layer, n_layer)
        ddd = channel_ramp(self.time_mix_k.numel(), self.time_mix_k.device).view(1, 1, -1)
        self.time_mix_k.copy_(ddd.pow(r10))
        self.time_mix_v.copy_(ddd.pow(r10) + 0.3 * r01)
        self.time_mix_r.copy_(ddd.pow(0.5 * r10))
        self.time_mix_g.copy_(ddd.pow(0.5 * r10))
        decay = decay_schedule(self.time_decay.numel(), layer, n_layer, self.time_decay.device)
        self.time_decay.copy_(decay.view_as(self.time_decay))
        self.time_faaaa.copy_(bonus_schedule(self.n_head, self.head_size, layer, n_layer,
                                             self.time_faaaa.device))
        orthogonal(self.receptance.weight)
        orthogonal(self.key.weight, 0.1)
        orthogonal(self.value.weight)
        zero_biases(self.receptance, self.key, self.value)
        nn.init.zeros_(self.output.weight)
        orthogonal(self.gate.weight, 0.1)
        self.ln_x.weight.fill_(ln_x_scale(layer, n_layer))
        nn.init.zeros_(self.ln_x.bias)

"""Finch time mixes: RWKV-6 (the Finch baseline, `finch`) and Finch-C2 (GoldFinch's, `finch_c2`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernels import wkv6

from .config import ModelConfig
from .mixers import register_time_mixer
from .token_mixing import DDLerp, TanhLoRA


class _FinchFamily(nn.Module):
    """What both share: a five-way ddlerp, r/k/v maps, a data-dependent log-log decay, WKV6."""

    slots: tuple[str, ...] = ()

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, a = cfg.n_embd, cfg.att_width
        self.n_head, self.head_size = cfg.n_head, cfg.head_size
        self.mix = DDLerp(d, self.slots, cfg.mix_lora_rank)
        self.receptance = nn.Linear(d, a, bias=False)
        self.key = nn.Linear(d, a, bias=False)
        self.value = nn.Linear(d, a, bias=False)
        self.output = nn.Linear(a, d, bias=False)
        self.decay_base = nn.Parameter(torch.empty(a))
        self.decay_lora = TanhLoRA(d, cfg.decay_lora_rank, a)

    def _wkv(self, r, k, v, w, u, wkv_state):
        b, t, _ = r.shape
        heads = (b, t, self.n_head, self.head_size)
        y, wkv_state = wkv6(r.view(heads), k.view(heads), v.view(heads), w.view(heads), u,
                            state=wkv_state)
        return y.reshape(b, t, -1), wkv_state


@register_time_mixer("finch")
class FinchTimeMix(_FinchFamily):
    """RWKV-6: y = GroupNorm(wkv6(r, k, v, w, u)) * silu(g), with the bonus u."""

    slots = ("r", "k", "v", "w", "g")

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.bonus = nn.Parameter(torch.empty(self.n_head, self.head_size))
        self.gate = nn.Linear(cfg.n_embd, cfg.att_width, bias=False)
        self.ln_x = nn.GroupNorm(self.n_head, cfg.att_width, eps=64e-5)

    def forward(self, x: torch.Tensor, shift: torch.Tensor | None, wkv_state: torch.Tensor | None):
        """x [B, T, C] (already layer-normed) -> (out, new WKV state)."""
        m = self.mix(x, shift)
        w = self.decay_base + self.decay_lora(m["w"])
        y, wkv_state = self._wkv(self.receptance(m["r"]), self.key(m["k"]), self.value(m["v"]), w,
                                 self.bonus, wkv_state)
        b, t, a = y.shape
        y = self.ln_x(y.reshape(b * t, a)).view(b, t, a) * F.silu(self.gate(m["g"]))
        return self.output(y), wkv_state


@register_time_mixer("finch_c2")
class FinchC2TimeMix(_FinchFamily):
    """Finch-C2: keys scaled by (1 - decay), no bonus, and a second value v2 added to the WKV
    output before a LayerNorm: y = LN(wkv6(r, k*(1-decay), v, w, 0) + v2)."""

    slots = ("r", "k", "v", "w", "v2")

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.v2_lora = TanhLoRA(cfg.n_embd, cfg.decay_lora_rank, cfg.att_width)
        self.ln_x = nn.LayerNorm(cfg.att_width)
        # Never read: the reference keeps a bonus tensor in Finch-C2 too; holding it lets its
        # checkpoints convert in and back out unchanged.
        self.register_buffer("unused_bonus", torch.zeros(self.n_head, self.head_size))

    def forward(self, x: torch.Tensor, shift: torch.Tensor | None, wkv_state: torch.Tensor | None):
        m = self.mix(x, shift)
        w = self.decay_base + self.decay_lora(m["w"])
        k = self.key(m["k"]) * -torch.expm1(-torch.exp(w))  # one minus the per-channel decay
        y, wkv_state = self._wkv(self.receptance(m["r"]), k, self.value(m["v"]), w, None, wkv_state)
        y = self.ln_x(y + self.value(m["v2"]) + self.v2_lora(m["v2"]))
        return self.output(y), wkv_state
